package shardserver

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Spans quorumq starts itself (gRPC spans come from otelgrpc).
const (
	spanPropose  = "quorumq.propose"       // one command: encode, replicate, apply
	spanCommit   = "raft.commit"           // Propose until the round applying the entry began
	spanApply    = "raft.apply"            // that round's apply until the result was ready
	spanLongPoll = "quorumq.longpoll.wait" // a receive waiting, without proposing, for a message
)

// proposeSpan is the span of one propose call.
type proposeSpan struct {
	span  trace.Span
	times *raftnode.ProposeTimes // nil unless the span records
}

// startPropose starts the propose span; when it records, ctx asks the Raft
// host for the proposal's timestamps, drawn as commit and apply spans.
func (s *Server) startPropose(ctx context.Context, cmd *storepb.Command) (context.Context, proposeSpan) {
	ctx, span := s.tracer.Start(ctx, spanPropose, trace.WithSpanKind(trace.SpanKindInternal))
	p := proposeSpan{span: span}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("quorumq.command", commandName(cmd)),
			attribute.String("quorumq.queue", commandQueue(cmd)), attribute.Int64("quorumq.shard", int64(s.shard)))
		p.times = &raftnode.ProposeTimes{}
		ctx = raftnode.WithProposeTimes(ctx, p.times)
	}
	return ctx, p
}

// end ends the propose span (with the Raft spans inside it) and counts what
// the result says for metrics: dead-letter moves and quota rejections.
func (s *Server) endPropose(ctx context.Context, p proposeSpan, res *store.Result, err error) {
	if res != nil {
		s.metrics.observeResult(ctx, res)
	}
	if p.times != nil && !p.times.Queued.IsZero() {
		t := p.times
		commitEnd := t.Committed
		if commitEnd.IsZero() { // failed or abandoned before commit
			commitEnd = time.Now()
		}
		_, c := s.tracer.Start(ctx, spanCommit, trace.WithTimestamp(t.Queued))
		if t.Committed.IsZero() && err != nil {
			c.SetStatus(codes.Error, err.Error())
		}
		c.End(trace.WithTimestamp(commitEnd))
		if !t.Committed.IsZero() && !t.Applied.IsZero() {
			_, a := s.tracer.Start(ctx, spanApply, trace.WithTimestamp(t.Committed))
			a.End(trace.WithTimestamp(t.Applied))
		}
	}
	EndSpan(p.span, err)
}

// EndSpan ends span, marking it failed when err is not nil.
func EndSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// commandName is a command's op for span attributes ("Send", "Receive"...).
func commandName(cmd *storepb.Command) string {
	n := fmt.Sprintf("%T", cmd.GetOp()) // *storepb.Command_Send
	return strings.TrimPrefix(n[strings.LastIndex(n, ".")+1:], "Command_")
}

package shardserver

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// tracerName is the instrumentation scope of quorumq's own spans.
const tracerName = "github.com/quorumq/quorumq/server"

// Propagator is the trace context format between nodes and from clients:
// W3C traceparent/tracestate (and baggage) in gRPC metadata.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(
	propagation.TraceContext{}, propagation.Baggage{})

// Spans quorumq starts itself (gRPC spans come from otelgrpc).
const (
	SpanForward  = "quorumq.forward"       // a follower forwarding a call to the leader
	spanPropose  = "quorumq.propose"       // one command: encode, replicate, apply
	spanCommit   = "raft.commit"           // Propose until the round applying the entry began
	spanApply    = "raft.apply"            // that round's apply until the result was ready
	spanLongPoll = "quorumq.longpoll.wait" // a receive waiting, without proposing, for a message
)

func NewTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer(tracerName)
}

// raftStreamMethod is the Raft transport's message stream: it lives as long
// as the connection, so it gets neither a span nor call metrics.
const raftStreamMethod = "/transportpb.v1.RaftTransportService/Stream"

func instrumented(info *stats.RPCTagInfo) bool { return info.FullMethodName != raftStreamMethod }

// ServerStatsHandler instruments a gRPC server (API or peer listener) with
// OpenTelemetry: a server span per call, continuing the caller's trace
// from the W3C headers in its metadata, and rpc.server.* metrics. tp or mp
// nil: none of that kind.
func ServerStatsHandler(tp trace.TracerProvider, mp metric.MeterProvider) grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(otelOptions(tp, mp)...))
}

// ClientStatsHandler instruments a gRPC client (forwarding, the gateway's
// connection to its node, Raft snapshot streams): a client span per call
// whose context travels in the call's metadata.
func ClientStatsHandler(tp trace.TracerProvider, mp metric.MeterProvider) grpc.DialOption {
	return grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelOptions(tp, mp)...))
}

func otelOptions(tp trace.TracerProvider, mp metric.MeterProvider) []otelgrpc.Option {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	opts := []otelgrpc.Option{otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(Propagator),
		otelgrpc.WithFilter(instrumented)}
	if mp != nil {
		opts = append(opts, otelgrpc.WithMeterProvider(mp))
	} else {
		opts = append(opts, otelgrpc.WithMeterProvider(metricNoop()))
	}
	return opts
}

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

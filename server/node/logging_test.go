package node

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/quorumq/quorumq/internal/testports"
	"github.com/quorumq/quorumq/raftnode"
)

func TestTraceLogHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewTraceLogHandler(slog.NewJSONHandler(&buf, nil))).With("node", 1)
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))

	log.InfoContext(ctx, "with span")
	log.InfoContext(context.Background(), "without span")
	dec := json.NewDecoder(&buf)
	var with, without map[string]any
	if err := dec.Decode(&with); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&without); err != nil {
		t.Fatal(err)
	}
	if with["trace_id"] != tid.String() || with["span_id"] != sid.String() || with["node"] != 1.0 {
		t.Errorf("record with a span: %v", with)
	}
	if _, ok := without["trace_id"]; ok {
		t.Errorf("record without a span has a trace id: %v", without)
	}
	if h := NewTraceLogHandler(log.Handler()); h != log.Handler() {
		t.Error("wrapping twice nests handlers")
	}
}

// syncBuf collects log output from the node's goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// records returns the JSON log records with message msg.
func (s *syncBuf) records(msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(s.b.Bytes(), []byte("\n")) {
		var r map[string]any
		if json.Unmarshal(line, &r) == nil && r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// TestLeaderChangeLogged: a shard's leadership moving is logged at info
// level on the nodes, with the shard (group), old and new leader and term.
func TestLeaderChangeLogged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mem := raftnode.NewMemNetwork()
	peers := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		addr, err := testports.Reserve()
		if err != nil {
			t.Fatal(err)
		}
		peers[id] = addr
	}
	nodes := map[uint64]*Node{}
	logs := map[uint64]*syncBuf{}
	for id := uint64(1); id <= 3; id++ {
		logs[id] = &syncBuf{}
		n, err := Start(ctx, Config{NodeID: id, Peers: peers, RaftAddr: peers[id], DataDir: t.TempDir(),
			HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
			Logger:        slog.New(slog.NewJSONHandler(logs[id], &slog.HandlerOptions{Level: slog.LevelInfo})),
			RaftTransport: mem.Transport(id), AttachHost: func(h *raftnode.Host) { mem.Attach(id, h) }})
		if err != nil {
			t.Fatal(err)
		}
		nodes[id] = n
		t.Cleanup(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = n.Stop(sctx)
		})
	}
	for _, n := range nodes {
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st, err := nodes[1].Host().Status(0)
	if err != nil {
		t.Fatal(err)
	}
	from := st.LeaderID
	to := from%3 + 1
	if err := nodes[from].Host().TransferLeadership(ctx, 0, to); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		found := false
		for _, r := range logs[to].records("raft leader changed") {
			if r["group"] == 0.0 && r["from"] == float64(from) && r["to"] == float64(to) && r["term"].(float64) > 0 {
				found = true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d logged no leader change %d -> %d:\n%v", to, from, to, logs[to].records("raft leader changed"))
		}
		<-time.After(20 * time.Millisecond)
	}
}

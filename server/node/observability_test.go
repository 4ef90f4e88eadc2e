package node_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quorumq/quorumq/internal/testports"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/node"
	"github.com/quorumq/quorumq/server/shardserver"
)

// fakeClock is the leader's clock: the test moves time by hand, so ages
// and visibility are exact.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func startNode(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	ctx := testCtx(t)
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.HTTPAddr, cfg.GRPCAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start node %d: %v", cfg.NodeID, err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Stop(sctx)
		if k := n.PebbleAPIMisuse(); k != 0 {
			t.Errorf("node %d: Pebble reported %d possible API misuses (single deletes that broke the set-once rule)", cfg.NodeID, k)
		}
	})
	return n
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within 10s: %v", err)
		}
		<-time.After(10 * time.Millisecond)
	}
}

// scrape is one GET /metrics, parsed.
type scrape map[string]*mfamily

type mfamily struct {
	series []series
}

type series struct {
	labels map[string]string
	value  float64
}

func scrapeMetrics(t *testing.T, metricsAddr string) scrape {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := scrape{}
	for name, f := range fams {
		mf := &mfamily{}
		for _, m := range f.GetMetric() {
			s := series{labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.Counter != nil:
				s.value = m.GetCounter().GetValue()
			case m.Gauge != nil:
				s.value = m.GetGauge().GetValue()
			case m.Histogram != nil:
				s.value = float64(m.GetHistogram().GetSampleCount())
			}
			mf.series = append(mf.series, s)
		}
		out[name] = mf
	}
	return out
}

// value returns the value of the series of name whose labels include
// labels ("name" alone: the only series must match), or an error.
func (s scrape) value(name string, labels ...string) (float64, error) {
	f := s[name]
	if f == nil {
		return 0, fmt.Errorf("no metric %s", name)
	}
outer:
	for _, sr := range f.series {
		for i := 0; i+1 < len(labels); i += 2 {
			if sr.labels[labels[i]] != labels[i+1] {
				continue outer
			}
		}
		return sr.value, nil
	}
	return 0, fmt.Errorf("no series %s%v", name, labels)
}

// TestMetricsWorkload drives a known workload through a node and checks
// the scraped counters and gauges.
func TestMetricsWorkload(t *testing.T) {
	clock := &fakeClock{now: time.UnixMilli(1_800_000_000_000)}
	n := startNode(t, node.Config{Server: shardserver.Config{Now: clock.Now, HousekeepingInterval: 20 * time.Millisecond}})
	ctx := testCtx(t)
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, n.GRPCAddr())
	c := qv1.NewQueueServiceClient(conn)
	for _, q := range []*qv1.CreateQueueRequest{
		{Name: "dead"},
		{Name: "work", Attributes: &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(30 * time.Second)}},
		{Name: "later"},
		{Name: "poison", Attributes: &qv1.QueueAttributes{DeadLetter: &qv1.DeadLetterPolicy{Queue: "dead", MaxReceiveCount: 1}}},
	} {
		if _, err := c.CreateQueue(ctx, q); err != nil {
			t.Fatalf("create %s: %v", q.GetName(), err)
		}
	}
	// work: 10 sent (one batch of 5, five single), 4 received, 3 deleted.
	var batch []*qv1.SendMessageBatchEntry
	for i := range 5 {
		batch = append(batch, &qv1.SendMessageBatchEntry{Id: fmt.Sprint(i), Body: "b"})
	}
	if _, err := c.SendMessageBatch(ctx, &qv1.SendMessageBatchRequest{Queue: "work", Entries: batch}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "work", Body: "m"}); err != nil {
			t.Fatal(err)
		}
	}
	rr, err := c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "work", MaxMessages: 4, WaitTime: durationpb.New(0)})
	if err != nil || len(rr.GetMessages()) != 4 {
		t.Fatalf("receive: %d messages, %v", len(rr.GetMessages()), err)
	}
	for _, m := range rr.GetMessages()[:3] {
		if _, err := c.DeleteMessage(ctx, &qv1.DeleteMessageRequest{Queue: "work", ReceiptHandle: m.GetReceiptHandle()}); err != nil {
			t.Fatal(err)
		}
	}
	// later: 2 delayed.
	for range 2 {
		if _, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "later", Body: "d", Delay: durationpb.New(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	// poison: received once with a 1s lease; after it ends the next receive
	// moves it to "dead".
	if _, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "poison", Body: "p"}); err != nil {
		t.Fatal(err)
	}
	rr, err = c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "poison", VisibilityTimeout: durationpb.New(time.Second), WaitTime: durationpb.New(0)})
	if err != nil || len(rr.GetMessages()) != 1 {
		t.Fatalf("receive poison: %d messages, %v", len(rr.GetMessages()), err)
	}
	clock.Advance(5 * time.Second)
	rr, err = c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "poison", WaitTime: durationpb.New(0)})
	if err != nil || len(rr.GetMessages()) != 0 {
		t.Fatalf("receive poison again: %d messages, %v", len(rr.GetMessages()), err)
	}
	// A batch over the tenant's rate is admitted in part: a second's
	// worth (2) is sent, the other 3 entries are refused.
	admin := qv1.NewClusterServiceClient(conn)
	if _, err := admin.SetTenantQuota(ctx, &qv1.SetTenantQuotaRequest{Tenant: server.DevTenant, Quota: &qv1.TenantQuota{MaxSendRate: 2}}); err != nil {
		t.Fatal(err)
	}
	if br, err := c.SendMessageBatch(ctx, &qv1.SendMessageBatchRequest{Queue: "work", Entries: batch}); err != nil || len(br.GetSuccessful()) != 2 || len(br.GetFailed()) != 3 {
		t.Fatalf("batch of 5 over a send rate of 2/s: %v, %v", br, err)
	}

	type want struct {
		name   string
		labels []string
		value  float64
	}
	q := func(queue string) []string { return []string{"tenant", "default", "queue", queue} }
	wants := []want{
		{"quorumq_messages_sent_total", q("work"), 12},
		{"quorumq_messages_received_total", q("work"), 4},
		{"quorumq_messages_deleted_total", q("work"), 3},
		{"quorumq_queue_visible", q("work"), 8},
		{"quorumq_queue_in_flight", q("work"), 1},
		{"quorumq_queue_delayed", q("work"), 0},
		{"quorumq_queue_oldest_message_age_seconds", q("work"), 5},
		{"quorumq_messages_sent_total", q("later"), 2},
		{"quorumq_queue_delayed", q("later"), 2},
		{"quorumq_queue_visible", q("later"), 0},
		{"quorumq_messages_sent_total", q("poison"), 1},
		{"quorumq_messages_received_total", q("poison"), 1},
		{"quorumq_messages_dead_lettered_total", q("poison"), 1},
		{"quorumq_queue_visible", q("poison"), 0},
		{"quorumq_queue_oldest_message_age_seconds", q("poison"), 0},
		{"quorumq_queue_visible", q("dead"), 1},                                                    // once the outbox relay delivered it
		{"quorumq_quota_rejections_total", []string{"tenant", "default", "quota", "send_rate"}, 3}, // messages
		{"quorumq_raft_leader", []string{"group", "0"}, 1},
		{"quorumq_raft_has_leader", []string{"group", "0"}, 1},
		{"quorumq_raft_halted", []string{"group", "0"}, 0},
		{"quorumq_raft_snapshots_sent_total", nil, 0},
	}
	var last scrape
	waitFor(t, func() error {
		last = scrapeMetrics(t, n.MetricsAddr())
		for _, w := range wants {
			v, err := last.value(w.name, w.labels...)
			if err != nil {
				return err
			}
			if v != w.value {
				return fmt.Errorf("%s%v = %v, want %v", w.name, w.labels, v, w.value)
			}
		}
		return nil
	})
	// Counted but not exact: Raft and gRPC activity.
	for _, m := range []struct {
		name   string
		labels []string
	}{
		{"quorumq_raft_proposals_total", []string{"group", "0", "outcome", "ok"}},
		{"quorumq_raft_commit_duration_seconds", []string{"group", "0"}},
		{"quorumq_raft_apply_duration_seconds", []string{"group", "0"}},
		{"quorumq_raft_log_fsync_duration_seconds", nil},
		{"quorumq_raft_log_written_bytes_total", nil},
		{"quorumq_raft_term", []string{"group", "0"}},
		{"quorumq_raft_applied_index", []string{"group", "0"}},
		{"quorumq_raft_log_entries", []string{"group", "0"}},
		{"quorumq_pebble_wal_written_bytes_total", nil},
		{"quorumq_pebble_written_bytes_total", nil},
		{"quorumq_pebble_memtable_size_bytes", nil},
		{"quorumq_pebble_memtables", nil},
		{"quorumq_pebble_disk_usage_bytes", nil},
		{"quorumq_rpc_server_call_duration_seconds", []string{"rpc_method", "quorumq.v1.QueueService/SendMessage"}},
	} {
		v, err := last.value(m.name, m.labels...)
		if err != nil || v <= 0 {
			t.Errorf("%s%v = %v, %v; want > 0", m.name, m.labels, v, err)
		}
	}
	// Exported though they may still be zero (no flush yet this early).
	for _, name := range []string{"quorumq_pebble_flush_written_bytes_total", "quorumq_pebble_compaction_written_bytes_total",
		"quorumq_pebble_ingested_bytes_total", "quorumq_pebble_flushes_total", "quorumq_pebble_compactions_total",
		"quorumq_pebble_compaction_debt_bytes", "quorumq_pebble_l0_files", "quorumq_pebble_l0_sublevels", "quorumq_pebble_read_amp",
		"quorumq_pebble_write_stalls_total", "quorumq_pebble_write_stall_seconds_total",
		"quorumq_pebble_block_cache_hits_total", "quorumq_pebble_block_cache_misses_total"} {
		if _, err := last.value(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Exported per kind, and zero: no single delete broke its rule.
	for _, kind := range []string{"ineffectual_single_delete", "nondeterministic_single_delete", "missized_delete", "invalid_value"} {
		if v, err := last.value("quorumq_pebble_api_misuse_total", "kind", kind); err != nil || v != 0 {
			t.Errorf("quorumq_pebble_api_misuse_total{kind=%q} = %v, %v; want 0", kind, v, err)
		}
	}
	resp, err := http.Get("http://" + n.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/readyz = %s", resp.Status)
	}
}

// TestQueueLabelCap: past MaxQueueLabels queues, counters and gauges of the
// other queues are summed under tenant and queue "_other".
func TestQueueLabelCap(t *testing.T) {
	n := startNode(t, node.Config{Server: shardserver.Config{MaxQueueLabels: 2}})
	ctx := testCtx(t)
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	c := qv1.NewQueueServiceClient(dial(t, n.GRPCAddr()))
	for _, name := range []string{"a", "b", "c", "d"} {
		if _, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: name, Body: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	s := scrapeMetrics(t, n.MetricsAddr())
	for _, w := range []struct {
		name, queue string
		value       float64
	}{
		{"quorumq_messages_sent_total", "a", 1},
		{"quorumq_messages_sent_total", "b", 1},
		{"quorumq_messages_sent_total", shardserver.OtherLabel, 2},
		{"quorumq_queue_visible", "a", 1},
		{"quorumq_queue_visible", shardserver.OtherLabel, 2},
	} {
		if v, err := s.value(w.name, "queue", w.queue); err != nil || v != w.value {
			t.Errorf("%s{queue=%q} = %v, %v; want %v", w.name, w.queue, v, err, w.value)
		}
	}
	if _, err := s.value("quorumq_messages_sent_total", "queue", "c"); err == nil {
		t.Error("queue c has its own series past the cap")
	}
}

// freeAddr reserves a loopback address below the ephemeral range (see
// testports: a ":0" port can be taken by any outgoing connection before
// the node binds it).
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := testports.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestTraceAcrossNodes: a SendMessage sent to a follower is forwarded to the
// leader; the spans of both nodes belong to one trace, the leader's server
// span a child of the follower's forwarding client span.
func TestTraceAcrossNodes(t *testing.T) {
	mem := raftnode.NewMemNetwork()
	peers := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		peers[id] = freeAddr(t)
	}
	nodes := map[uint64]*node.Node{}
	spans := map[uint64]*tracetest.InMemoryExporter{}
	for id := uint64(1); id <= 3; id++ {
		exp := tracetest.NewInMemoryExporter()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		spans[id] = exp
		nodes[id] = startNode(t, node.Config{
			NodeID: id, Peers: peers, RaftAddr: peers[id], TracerProvider: tp,
			Server:        shardserver.Config{ProposeTimeout: 2 * time.Second},
			RaftTransport: mem.Transport(id),
			AttachHost:    func(h *raftnode.Host) { mem.Attach(id, h) },
		})
	}
	ctx := testCtx(t)
	var leader, follower uint64
	waitFor(t, func() error {
		leader, follower = 0, 0
		for id, n := range nodes {
			st, err := n.Host().Status(0)
			if err != nil {
				return err
			}
			if st.LeaderID == 0 || (leader != 0 && st.LeaderID != leader) {
				return fmt.Errorf("node %d sees leader %d", id, st.LeaderID)
			}
			leader = st.LeaderID
		}
		for id := range nodes {
			if id != leader {
				follower = id
			}
		}
		return nil
	})
	c := qv1.NewQueueServiceClient(dial(t, nodes[follower].GRPCAddr()))
	if _, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "traced"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "traced", Body: "hello"}); err != nil {
		t.Fatal(err)
	}
	const method = "quorumq.v1.QueueService/SendMessage"
	find := func(id uint64, name string, kind trace.SpanKind, tid trace.TraceID) *tracetest.SpanStub {
		for _, s := range spans[id].GetSpans() {
			if s.Name == name && s.SpanKind == kind && (!tid.IsValid() || s.SpanContext.TraceID() == tid) {
				return &s
			}
		}
		return nil
	}
	waitFor(t, func() error {
		entry := find(follower, method, trace.SpanKindServer, trace.TraceID{})
		if entry == nil {
			return fmt.Errorf("no server span on the entry node %d", follower)
		}
		tid := entry.SpanContext.TraceID()
		fwd := find(follower, "quorumq.forward", trace.SpanKindInternal, tid)
		client := find(follower, method, trace.SpanKindClient, tid)
		srv := find(leader, method, trace.SpanKindServer, tid)
		propose := find(leader, "quorumq.propose", trace.SpanKindInternal, tid)
		commit := find(leader, "raft.commit", trace.SpanKindInternal, tid)
		apply := find(leader, "raft.apply", trace.SpanKindInternal, tid)
		for name, s := range map[string]*tracetest.SpanStub{"forward": fwd, "forward client": client, "leader server": srv,
			"propose": propose, "raft.commit": commit, "raft.apply": apply} {
			if s == nil {
				return fmt.Errorf("trace %s lacks the %s span", tid, name)
			}
		}
		switch {
		case fwd.Parent.SpanID() != entry.SpanContext.SpanID():
			return fmt.Errorf("forward span's parent is not the entry server span")
		case client.Parent.SpanID() != fwd.SpanContext.SpanID():
			return fmt.Errorf("client span's parent is not the forward span")
		case srv.Parent.SpanID() != client.SpanContext.SpanID() || !srv.Parent.IsRemote():
			return fmt.Errorf("leader server span's parent %v is not the follower's client span", srv.Parent.SpanID())
		case propose.Parent.SpanID() != srv.SpanContext.SpanID():
			return fmt.Errorf("propose span's parent is not the leader's server span")
		case commit.Parent.SpanID() != propose.SpanContext.SpanID() || apply.Parent.SpanID() != propose.SpanContext.SpanID():
			return fmt.Errorf("raft spans are not children of the propose span")
		case commit.EndTime.After(apply.StartTime.Add(time.Microsecond)):
			return fmt.Errorf("commit ends %v after apply starts %v", commit.EndTime, apply.StartTime)
		}
		// The leader does not forward, nor does the entry node propose.
		if find(leader, "quorumq.forward", trace.SpanKindInternal, tid) != nil || find(follower, "quorumq.propose", trace.SpanKindInternal, tid) != nil {
			return fmt.Errorf("unexpected spans: %v", spanNames(spans, tid))
		}
		return nil
	})

	// Over REST: the gateway continues the HTTP caller's trace (traceparent
	// header) through the entry node to the leader.
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+nodes[follower].HTTPAddr()+"/v1/queues/traced/messages",
		strings.NewReader(`{"body":"over http"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("REST send: %s", resp.Status)
	}
	tid, _ := trace.TraceIDFromHex(traceID)
	waitFor(t, func() error {
		if find(follower, method, trace.SpanKindServer, tid) == nil || find(leader, "quorumq.propose", trace.SpanKindInternal, tid) == nil {
			return fmt.Errorf("trace %s has only %v", traceID, spanNames(spans, tid))
		}
		return nil
	})
}

func spanNames(spans map[uint64]*tracetest.InMemoryExporter, tid trace.TraceID) []string {
	var out []string
	for id, e := range spans {
		for _, s := range e.GetSpans() {
			if s.SpanContext.TraceID() == tid {
				out = append(out, fmt.Sprintf("%d:%s", id, s.Name))
			}
		}
	}
	return out
}

// TestReadyz: a node whose shard has no leader is alive (/healthz) but not
// ready (/readyz 503).
func TestReadyz(t *testing.T) {
	mem := raftnode.NewMemNetwork()
	peers := map[uint64]string{1: freeAddr(t), 2: freeAddr(t), 3: freeAddr(t)}
	n := startNode(t, node.Config{NodeID: 1, Peers: peers, RaftAddr: peers[1],
		RaftTransport: mem.Transport(1), AttachHost: func(h *raftnode.Host) { mem.Attach(1, h) }})
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503} {
		resp, err := http.Get("http://" + n.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s = %d %q, want %d", path, resp.StatusCode, body, want)
		}
	}
	if err := n.Ready(); err == nil || !strings.Contains(err.Error(), "no leader") {
		t.Errorf("Ready() = %v, want no leader", err)
	}
}

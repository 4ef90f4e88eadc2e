package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server/node"
	"github.com/quorumq/quorumq/server/router"
)

func TestBenchFlagValidation(t *testing.T) {
	if o := defaultBenchOptions(); o.validate() != nil {
		t.Fatalf("defaults invalid: %v", o.validate())
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--endpoint", "nohostport"}, "--endpoint"},
		{[]string{"--endpoint", "127.0.0.1:1,nohostport"}, "--endpoint"},
		{[]string{"--endpoints", "nohostport"}, "--endpoint"}, // the older spelling still works
		{[]string{"--queue", ""}, "--queue"},
		{[]string{"--partitions", "65"}, "--partitions"},
		{[]string{"--producers", "0", "--consumers", "0"}, "nothing to do"},
		{[]string{"--producers", "-1"}, "negative"},
		{[]string{"--size", "0"}, "--size"},
		{[]string{"--size", "2000000"}, "--size"},
		{[]string{"--batch", "101"}, "--batch"},
		{[]string{"--batch", "100", "--size", "65536"}, "4 MiB"},
		{[]string{"--inflight", "0"}, "--inflight"},
		{[]string{"--receive-batch", "101"}, "--receive-batch"},
		{[]string{"--duration", "0"}, "unbounded"},
		{[]string{"--duration", "-1s"}, "negative"},
		{[]string{"--rate", "-5"}, "--rate"},
		{[]string{"--rate", "100", "--producers", "0"}, "--rate needs producers"},
		{[]string{"--tag-every", "100"}, "--tag-every needs --tag"},
		{[]string{"--size", "lots"}, "invalid argument"},
		{[]string{"extra"}, "unknown command"},
	} {
		cmd := newBenchCmd()
		cmd.SetArgs(tc.args)
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bench %v: got %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

func near(got, want float64) bool { return math.Abs(got-want) <= want*0.001 }

// The recorder keeps a whole-run histogram and a per-interval one; the
// percentiles are the HDR histogram's at 3 significant digits.
func TestLatencyRecorderPercentiles(t *testing.T) {
	l := newLatencyRecorder()
	for ms := 1; ms <= 1000; ms++ {
		l.record(time.Duration(ms)*time.Millisecond, 1)
	}
	l.record(500*time.Millisecond, 1000) // a batch: 1000 observations at once
	s := l.summary()
	if s.Count != 2000 {
		t.Fatalf("count %d, want 2000", s.Count)
	}
	for name, got := range map[string][2]float64{
		"p50": {s.P50, 500}, "p90": {s.P90, 800}, "p99": {s.P99, 980}, "p99.9": {s.P999, 998}, "max": {s.Max, 1000},
	} {
		if !near(got[0], got[1]) {
			t.Errorf("%s = %v ms, want %v ± 0.1%%", name, got[0], got[1])
		}
	}
	if math.Abs(s.Mean-(500.5*1000+500*1000)/2000) > 1 {
		t.Errorf("mean %v", s.Mean)
	}
	if iv := l.takeInterval(); iv.Count != 2000 || !near(iv.P50, 500) {
		t.Errorf("first interval %+v", iv)
	}
	l.record(7*time.Millisecond, 1)
	if iv := l.takeInterval(); iv.Count != 1 || !near(iv.P99, 7) {
		t.Errorf("second interval %+v, want one value of 7 ms", iv)
	}
	if s := l.summary(); s.Count != 2001 {
		t.Errorf("total after intervals: %d, want 2001", s.Count)
	}
	l.record(time.Hour, 1) // beyond the range: clamped, not dropped
	l.record(0, 1)
	if s := l.summary(); s.Count != 2003 || !near(s.Max, 600_000) {
		t.Errorf("clamped: %+v", s)
	}
	if (latencySummary{}) != summarize(newLatencyRecorder().total) {
		t.Error("empty histogram should summarise to zeros")
	}
}

func TestBenchJSONShape(t *testing.T) {
	o := defaultBenchOptions()
	o.rate = 5000
	o.receiveBatch = 10
	r := &benchRun{o: o, runID: "abc", sendLat: newLatencyRecorder(), e2eLat: newLatencyRecorder()}
	r.sent.Store(1000)
	r.received.Store(1000)
	r.deleted.Store(990)
	r.sendLat.record(3*time.Millisecond, 1000)
	r.errs.add("UNAVAILABLE", 2)
	r.errs.add("STALE", 1)
	res := r.result(2*time.Second, time.Second, 2*time.Second, 2)
	var out bytes.Buffer
	if err := writeBenchDocument(&out, outputJSON, res); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n != 1 {
		t.Fatalf("want one line, got %d: %s", n, out.String())
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{"config", "runId", "mode", "elapsedSec", "sendElapsedSec", "receiveElapsedSec", "sent",
		"sendFailed", "received", "deleted", "sentPerSec", "receivedPerSec", "deletedPerSec", "drained",
		"sendLatencyMs", "endToEndLatencyMs", "errors", "progressIntervals"}
	if got := sortedKeys(m); !slices.Equal(got, sortedCopy(wantKeys)) {
		t.Errorf("keys %v, want %v", got, sortedCopy(wantKeys))
	}
	lat := m["sendLatencyMs"].(map[string]any)
	if got := sortedKeys(lat); !slices.Equal(got, []string{"count", "max", "mean", "p50", "p90", "p99", "p999"}) {
		t.Errorf("latency keys %v", got)
	}
	if m["mode"] != "open" || m["sentPerSec"] != 1000.0 || m["deletedPerSec"] != 495.0 || m["drained"] != true ||
		lat["count"] != 1000.0 || !near(lat["p99"].(float64), 3) {
		t.Errorf("values: %s", out.String())
	}
	if e := m["errors"].(map[string]any); e["UNAVAILABLE"] != 2.0 || e["STALE"] != 1.0 {
		t.Errorf("errors %v", e)
	}
	cfg := m["config"].(map[string]any)
	if cfg["rate"] != 5000.0 || cfg["batch"] != 10.0 || cfg["duration"] != "30s" || cfg["receiveBatch"] != 10.0 {
		t.Errorf("config %v", cfg)
	}
	var text bytes.Buffer
	if err := writeBenchText(&text, res); err != nil || !strings.Contains(text.String(), "open loop at 5000 msgs/s") ||
		!strings.Contains(text.String(), "STALE=1 UNAVAILABLE=2") {
		t.Errorf("text output %v:\n%s", err, text.String())
	}
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// startBenchNode starts a single-node dev cluster on loopback.
func startBenchNode(t *testing.T) *node.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := node.Start(ctx, node.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Stop(sctx); err != nil {
			t.Errorf("stop node: %v", err)
		}
	})
	if err := n.WaitReady(ctx); err != nil {
		t.Fatalf("wait ready: %v", err)
	}
	return n
}

// A short closed-loop run and an open-loop run through the command: every
// message sent is received and deleted, and end-to-end latency covers each.
func TestBenchEndToEnd(t *testing.T) {
	n := startBenchNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	o := defaultBenchOptions()
	o.endpoint = n.GRPCAddr()
	o.queue, o.create = "bench-e2e", true
	o.producers, o.consumers, o.inflight, o.batch = 2, 2, 2, 10
	o.size, o.duration, o.messages, o.progress = 256, 0, 300, 0
	o.drainTimeout = 10 * time.Second
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	res, err := runBench(ctx, o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 300 || res.Received != 300 || res.Deleted != 300 || !res.Drained || len(res.Errors) != 0 {
		t.Fatalf("closed loop: %+v", res)
	}
	if res.SendLatency.Count != 300 || res.EndToEndLatency.Count != 300 || res.SentPerSec <= 0 {
		t.Fatalf("closed loop latency: send %+v e2e %+v", res.SendLatency, res.EndToEndLatency)
	}

	// Open loop, single sends, tagged 1 in 10; then a filtered receive-only
	// run takes exactly the tagged ones from the backlog.
	cmd := newBenchCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"--endpoints", n.GRPCAddr(), "--queue", "bench-e2e", "--create", "--producers", "2",
		"--consumers", "0", "--batch", "1", "--inflight", "4", "--rate", "1000", "--messages", "200",
		"--duration", "0", "--tag", "hot", "--tag-every", "10", "--progress-interval", "50ms", "--json"})
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("bench: %v (stderr %s)", err, errOut.String())
	}
	var open benchResult
	if err := json.Unmarshal(out.Bytes(), &open); err != nil {
		t.Fatalf("json %q: %v", out.String(), err)
	}
	// 200 messages at 1000/s take at least 199 ms: some progress lines.
	if open.Sent != 200 || open.Mode != "open" || open.SendLatency.Count != 200 || open.ProgressIntervals < 1 ||
		!strings.Contains(errOut.String(), "sent") || open.SendElapsed < 0.19 {
		t.Fatalf("open loop: %+v\nstderr: %s", open, errOut.String())
	}

	o.producers, o.consumers, o.create, o.messages = 0, 2, false, 20
	o.filterTag, o.duration = "hot", 10*time.Second
	res, err = runBench(ctx, o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// Receive-only runs measure other runs' messages: no end-to-end figure.
	if res.Received != 20 || res.Deleted != 20 || res.EndToEndLatency.Count != 0 || len(res.Errors) != 0 {
		t.Fatalf("filtered receive: %+v", res)
	}
}

// A producer moves to the next endpoint when a reply says its call was
// forwarded, stays where calls are served, and ignores a stale report
// about an endpoint it has left already.
func TestBenchProducerFollowsForwarding(t *testing.T) {
	p := &benchProducer{apis: make([]qv1.QueueServiceClient, 3)}
	fwd := metadata.Pairs(router.ForwardedToHeader, "3")
	k, _ := p.api()
	p.served(k, fwd)
	if k, _ = p.api(); k != 1 {
		t.Fatalf("after a forwarded call: endpoint %d, want 1", k)
	}
	p.served(1, metadata.MD{})
	p.served(0, fwd) // a late reply from endpoint 0
	if k, _ = p.api(); k != 1 {
		t.Fatalf("after a served call and a stale report: endpoint %d, want 1", k)
	}
	p.served(1, fwd)
	p.served(2, fwd)
	if k, _ = p.api(); k != 0 {
		t.Fatalf("wraps around: endpoint %d, want 0", k)
	}
}

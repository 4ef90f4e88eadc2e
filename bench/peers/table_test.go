package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseQQ(t *testing.T) {
	out := []byte("progress noise\n" + `{"sent":1000,"received":990,"receivedPerSec":4950.5,"drained":false,` +
		`"sendLatencyMs":{"p99":12.5},"endToEndLatencyMs":{"p99":40.25}}` + "\n")
	o, err := parseQQ(out)
	if err != nil {
		t.Fatal(err)
	}
	want := outcome{E2EPerSec: 4950.5, Received: 990, Sent: 1000, SendP99Ms: 12.5, E2EP99Ms: 40.25}
	if *o != want {
		t.Fatalf("got %+v, want %+v", *o, want)
	}
	if _, err := parseQQ([]byte("no json")); err == nil {
		t.Fatal("parseQQ accepted output without JSON")
	}
}

func TestParsePeer(t *testing.T) {
	nats := []byte("[INF] x\nJSON " + `{"n":100,"received":100,"e2e_msgs_per_s":7000,"timed_out":false,` +
		`"e2e_latency_ms":{"P50":1,"P99":300},"puback_latency_ms":{"P99":400}}` + "\n")
	o, err := parsePeer(nats)
	if err != nil {
		t.Fatal(err)
	}
	if !o.Drained || o.SendP99Ms != 400 || o.E2EP99Ms != 300 || o.E2EPerSec != 7000 {
		t.Fatalf("nats: %+v", *o)
	}
	rmq := []byte("JSON " + `{"n":100,"received":60,"e2e_msgs_per_s":5000,"timed_out":true,` +
		`"e2e_latency_ms":{"P99":200},"confirm_latency_ms":{"P99":250}}`)
	o, err = parsePeer(rmq)
	if err != nil {
		t.Fatal(err)
	}
	if o.Drained || o.SendP99Ms != 250 || o.Received != 60 || o.Sent != 100 {
		t.Fatalf("rmq: %+v", *o)
	}
	if _, err := parsePeer([]byte("label=x\n")); err == nil {
		t.Fatal("parsePeer accepted output without a JSON line")
	}
}

func TestProcParsers(t *testing.T) {
	// The command name holds a space and a ')' to check field counting.
	stat := "1234 (quorumq (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 12 0 100 0 0"
	if got := statTicks(stat); got != 325 {
		t.Fatalf("statTicks = %d, want 325", got)
	}
	io := "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 5\nwrite_bytes: 409600\ncancelled_write_bytes: 0\n"
	if got := ioWriteBytes(io); got != 409600 {
		t.Fatalf("ioWriteBytes = %d", got)
	}
	if s := readProc(-1); s != (procSample{}) {
		t.Fatalf("readProc of no process = %+v", s)
	}
}

func TestTableRatios(t *testing.T) {
	qq := systemResults{
		closed: &outcome{E2EPerSec: 20000, Received: 1000, Sent: 1000, Drained: true, ServerCPU: 0.1, DiskWritten: 4 << 20,
			PebbleBytes: 6 << 20, Pebble: pebbleBytes{total: 6 << 20, wal: 5 << 20, flush: 1 << 19, compaction: 1 << 19}},
		closed10: &outcome{E2EPerSec: 30000, Received: 10, Sent: 20},
		open5k:   &outcome{SendP99Ms: 10, E2EP99Ms: 25, Received: 100, Sent: 100, Drained: true, ServerCPU: 0.05},
	}
	nats := systemResults{
		closed: &outcome{E2EPerSec: 8000, Received: 1000, Sent: 1000, Drained: true, ServerCPU: 0.2, DiskWritten: 2 << 20},
		open5k: &outcome{SendP99Ms: 400, E2EP99Ms: 300, Received: 100, Sent: 100, Drained: true},
	}
	rmq := systemResults{
		closed: &outcome{E2EPerSec: 10000, Received: 1000, Sent: 1000, Drained: true, ServerCPU: 0.4},
		open5k: &outcome{SendP99Ms: 200, E2EP99Ms: 250, Received: 100, Sent: 100, Drained: true},
	}
	var b bytes.Buffer
	if err := table(&b, qq, nats, rmq); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := map[string]string{}
	for l := range strings.SplitSeq(out, "\n") {
		for _, key := range []string{"batch-1 sends", "batch-10 sends", "send (confirm) p99", "5k/s: e2e p99",
			"CPU ms per e2e msg, batch-1", "disk KiB", "drained, batch-10"} {
			if strings.Contains(l, key) {
				lines[key] = l
			}
		}
	}
	for key, want := range map[string]string{
		"batch-1 sends":               "2.00×", // 20000 / max(8000, 10000)
		"batch-10 sends":              "3.00×", // against the peers' closed loop
		"send (confirm) p99":          "20.00×",
		"5k/s: e2e p99":               "10.00×",
		"CPU ms per e2e msg, batch-1": "2.00×", // 0.2 ms best peer / 0.1 ms
		"disk KiB":                    "0.50×", // 2 MiB vs 4 MiB over 1000 messages
		"drained, batch-10":           "no (10 of 20)",
	} {
		if !strings.Contains(lines[key], want) {
			t.Errorf("row %q = %q, want it to contain %q\n%s", key, lines[key], want, out)
		}
	}
	for key, want := range map[string]string{"Pebble KiB": "6.14", "of which WAL": "5.12", "of which flushes": "0.51", "of which compactions": "0.51"} {
		found := false
		for l := range strings.SplitSeq(out, "\n") {
			found = found || strings.Contains(l, key) && strings.Contains(l, want)
		}
		if !found {
			t.Errorf("no row %q with quorumq's %s KiB per message\n%s", key, want, out)
		}
	}
	if !strings.Contains(lines["disk KiB"], "4.10") {
		t.Errorf("disk row: %q, want quorumq's 4.10 KiB per message", lines["disk KiB"])
	}
}

func TestPebblePerMsg(t *testing.T) {
	o := &outcome{Received: 1000, PebbleBytes: 2048000}
	if got := o.pebblePerMsg(); got != 2048 {
		t.Fatalf("pebblePerMsg = %v", got)
	}
}

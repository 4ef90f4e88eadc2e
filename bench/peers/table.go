package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
)

// outcome is what one scenario run of one system measured.
type outcome struct {
	E2EPerSec   float64 // messages received (and acked) per second
	Received    int64
	Sent        int64
	Drained     bool
	SendP99Ms   float64 // confirm / puback / send reply p99
	E2EP99Ms    float64
	ServerCPU   float64 // CPU seconds of all server processes during the run
	DiskWritten int64   // bytes the server processes wrote to the block layer (/proc/PID/io write_bytes)
	PebbleBytes int64   // quorumq only: quorumq_pebble_written_bytes_total of all nodes during the run
	Pebble      pebbleBytes
}

// cpuPerMsg is server CPU seconds per end-to-end message (NaN if nothing was received).
func (o *outcome) cpuPerMsg() float64 {
	if o == nil || o.Received == 0 {
		return math.NaN()
	}
	return o.ServerCPU / float64(o.Received)
}

func (o *outcome) diskPerMsg() float64 {
	if o == nil || o.Received == 0 {
		return math.NaN()
	}
	return float64(o.DiskWritten) / float64(o.Received)
}

func (o *outcome) pebblePerMsg() float64 {
	if o == nil || o.Received == 0 || o.PebbleBytes == 0 {
		return math.NaN()
	}
	return float64(o.PebbleBytes) / float64(o.Received)
}

// pebblePartPerMsg is one part of PebbleBytes (WAL, flushes, compactions)
// per end-to-end message.
func (o *outcome) pebblePartPerMsg(part func(pebbleBytes) int64) float64 {
	if o == nil || o.Received == 0 || o.PebbleBytes == 0 {
		return math.NaN()
	}
	return float64(part(o.Pebble)) / float64(o.Received)
}

// systemResults are a system's scenario outcomes; nil when not run.
type systemResults struct {
	closed   *outcome // 4 producers × 500 in flight, batch 1, closed loop
	closed10 *outcome // batch 10 (quorumq only; the peers have no batch send)
	open5k   *outcome // open loop at 5,000 msgs/s
}

// parseQQ reads the JSON document of `quorumq bench -o json`.
func parseQQ(b []byte) (*outcome, error) {
	var d struct {
		Sent           int64   `json:"sent"`
		Received       int64   `json:"received"`
		ReceivedPerSec float64 `json:"receivedPerSec"`
		Drained        bool    `json:"drained"`
		SendLatency    struct {
			P99 float64 `json:"p99"`
		} `json:"sendLatencyMs"`
		EndToEndLatency struct {
			P99 float64 `json:"p99"`
		} `json:"endToEndLatencyMs"`
	}
	if err := json.Unmarshal(lastJSONLine(b, ""), &d); err != nil {
		return nil, fmt.Errorf("quorumq bench output: %w", err)
	}
	return &outcome{E2EPerSec: d.ReceivedPerSec, Received: d.Received, Sent: d.Sent, Drained: d.Drained,
		SendP99Ms: d.SendLatency.P99, E2EP99Ms: d.EndToEndLatency.P99}, nil
}

// parsePeer reads the "JSON {...}" line that rmqbench and natsbench print
// on stderr.
func parsePeer(b []byte) (*outcome, error) {
	line := lastJSONLine(b, "JSON ")
	if line == nil {
		return nil, errors.New("peer bench printed no JSON line")
	}
	type pct struct{ P99 float64 }
	var d struct {
		N        int64   `json:"n"`
		Received int64   `json:"received"`
		E2ERate  float64 `json:"e2e_msgs_per_s"`
		TimedOut bool    `json:"timed_out"`
		E2E      pct     `json:"e2e_latency_ms"`
		Confirm  *pct    `json:"confirm_latency_ms"` // rmqbench
		PubAck   *pct    `json:"puback_latency_ms"`  // natsbench
	}
	if err := json.Unmarshal(line, &d); err != nil {
		return nil, fmt.Errorf("peer bench output: %w", err)
	}
	o := &outcome{E2EPerSec: d.E2ERate, Received: d.Received, Sent: d.N, E2EP99Ms: d.E2E.P99,
		Drained: !d.TimedOut && d.Received >= d.N}
	switch {
	case d.Confirm != nil:
		o.SendP99Ms = d.Confirm.P99
	case d.PubAck != nil:
		o.SendP99Ms = d.PubAck.P99
	}
	return o, nil
}

// lastJSONLine is the last line of b that starts with prefix and then
// '{', without the prefix.
func lastJSONLine(b []byte, prefix string) []byte {
	var last []byte
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 1<<16), 1<<22)
	for sc.Scan() {
		l := sc.Text()
		if rest, ok := strings.CutPrefix(l, prefix); ok && strings.HasPrefix(rest, "{") {
			last = []byte(rest)
		}
	}
	return last
}

// procSample is a process's CPU ticks and block-layer bytes written.
type procSample struct {
	ticks int64
	wrote int64
}

// readProc samples /proc/PID/stat (utime+stime) and /proc/PID/io
// (write_bytes); a process that is gone samples as zero.
func readProc(pid int) procSample {
	var s procSample
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s.ticks = statTicks(string(b))
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		s.wrote = ioWriteBytes(string(b))
	}
	return s
}

// statTicks is utime+stime of a /proc/PID/stat line. The command name
// (field 2) may hold spaces, so fields are counted after its closing ')'.
func statTicks(stat string) int64 {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

func ioWriteBytes(io string) int64 {
	for l := range strings.SplitSeq(io, "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// table prints the side-by-side table: one column per system and the
// ratio of quorumq to the better peer (for rates: quorumq / best; for
// latencies, CPU and bytes: best / quorumq, so above 1 is better for
// quorumq in every row).
func table(w io.Writer, qq, nats, rmq systemResults) error {
	num := func(v float64, prec int) string {
		if math.IsNaN(v) {
			return "—"
		}
		return strconv.FormatFloat(v, 'f', prec, 64)
	}
	yes := func(o *outcome) string {
		switch {
		case o == nil:
			return "—"
		case o.Drained:
			return "yes"
		default:
			return fmt.Sprintf("no (%d of %d)", o.Received, o.Sent)
		}
	}
	get := func(o *outcome, f func(*outcome) float64) float64 {
		if o == nil {
			return math.NaN()
		}
		return f(o)
	}
	// ratio of quorumq against the better peer; higher is better for
	// quorumq whichever the direction of the figure.
	ratio := func(q, n, r float64, lowerBetter bool) string {
		best := math.NaN()
		for _, v := range []float64{n, r} {
			if math.IsNaN(v) || v == 0 { // not measured
				continue
			}
			if math.IsNaN(best) || (lowerBetter && v < best) || (!lowerBetter && v > best) {
				best = v
			}
		}
		if math.IsNaN(q) || math.IsNaN(best) || q == 0 || best == 0 {
			return "—"
		}
		if lowerBetter {
			return fmt.Sprintf("%.2f×", best/q)
		}
		return fmt.Sprintf("%.2f×", q/best)
	}
	type metric struct {
		name        string
		pick        func(systemResults) *outcome
		val         func(*outcome) float64
		prec        int
		lowerBetter bool
	}
	closed := func(s systemResults) *outcome { return s.closed }
	closed10 := func(s systemResults) *outcome { return s.closed10 }
	open := func(s systemResults) *outcome { return s.open5k }
	e2eRate := func(o *outcome) float64 { return o.E2EPerSec }
	metrics := []metric{
		{"e2e msgs/s, batch-1 sends (4×500 in flight)", closed, e2eRate, 0, false},
		{"e2e msgs/s, batch-10 sends (peers: their batch-1 run)", closed10, e2eRate, 0, false},
		{"open loop 5k/s: send (confirm) p99 ms", open, func(o *outcome) float64 { return o.SendP99Ms }, 1, true},
		{"open loop 5k/s: e2e p99 ms", open, func(o *outcome) float64 { return o.E2EP99Ms }, 1, true},
		{"server CPU ms per e2e msg, batch-1 run", closed, func(o *outcome) float64 { return 1000 * o.cpuPerMsg() }, 3, true},
		{"server CPU ms per e2e msg, open loop 5k/s", open, func(o *outcome) float64 { return 1000 * o.cpuPerMsg() }, 3, true},
		{"disk KiB written per msg (all nodes, /proc io), batch-1 run", closed, func(o *outcome) float64 { return o.diskPerMsg() / 1024 }, 2, true},
		{"Pebble KiB written per msg (all nodes), batch-1 run", closed, func(o *outcome) float64 { return o.pebblePerMsg() / 1024 }, 2, true},
		{"  of which WAL", closed, func(o *outcome) float64 { return o.pebblePartPerMsg(func(p pebbleBytes) int64 { return p.wal }) / 1024 }, 2, true},
		{"  of which flushes", closed, func(o *outcome) float64 {
			return o.pebblePartPerMsg(func(p pebbleBytes) int64 { return p.flush }) / 1024
		}, 2, true},
		{"  of which compactions", closed, func(o *outcome) float64 {
			return o.pebblePartPerMsg(func(p pebbleBytes) int64 { return p.compaction }) / 1024
		}, 2, true},
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "metric\tquorumq\tNATS R3 always\tRabbitMQ QQ\tquorumq vs best peer\t")
	for _, m := range metrics {
		q := get(m.pick(qq), m.val)
		// The peers' batch-10 column is their only (batch-1) closed loop.
		pn, pr := m.pick(nats), m.pick(rmq)
		if m.name == metrics[1].name {
			pn, pr = nats.closed, rmq.closed
		}
		n, r := get(pn, m.val), get(pr, m.val)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", m.name, num(q, m.prec), num(n, m.prec), num(r, m.prec), ratio(q, n, r, m.lowerBetter))
	}
	fmt.Fprintf(tw, "drained, batch-1 run\t%s\t%s\t%s\t\t\n", yes(qq.closed), yes(nats.closed), yes(rmq.closed))
	fmt.Fprintf(tw, "drained, batch-10 run\t%s\t\t\t\t\n", yes(qq.closed10))
	fmt.Fprintf(tw, "drained, open loop 5k/s\t%s\t%s\t%s\t\t\n", yes(qq.open5k), yes(nats.open5k), yes(rmq.open5k))
	return tw.Flush()
}

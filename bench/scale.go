package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Scenario (s), issue 17: the send throughput of 6 nodes against 3 on this
// machine, each cluster bootstrapped with 7 shards (replication factor 3:
// with 6 nodes each holds about half the shard replicas), the same load
// (1 KiB, batch 10, 8 producers (INFLIGHT senders each) + 8 consumers through every node, one
// queue of 6 partitions), ROUNDS alternating rounds of 3 then 6 nodes on
// fresh data; the ratio is of the sums over the rounds. Besides the
// throughput, per message sent: the nodes' CPU time, their WAL fsyncs,
// context switches and Raft messages (batches) sent between nodes,
// figures that a machine shared with other work disturbs less than the
// throughput does.

// scaleShards is the shard count of both clusters (1 metadata + 6 data).
const scaleShards = 7

// usage is what the cluster's processes used so far.
type usage struct {
	cpu    time.Duration // user + system
	ctxsw  int64         // voluntary and involuntary context switches, all threads
	fsyncs float64       // Raft log fsyncs (quorumq_raft_log_fsync_duration_seconds_count)
	msgs   float64       // Raft messages sent to peers
	stream float64       // batches (stream messages) they went in
}

func (u usage) sub(v usage) usage {
	return usage{cpu: u.cpu - v.cpu, ctxsw: u.ctxsw - v.ctxsw, fsyncs: u.fsyncs - v.fsyncs, msgs: u.msgs - v.msgs, stream: u.stream - v.stream}
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux).
const clockTick = 10 * time.Millisecond

func (cl *cluster) usage(ctx context.Context) (usage, error) {
	var u usage
	for _, p := range cl.procs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Process.Pid))
		if err != nil {
			return u, err
		}
		// Fields after the command name (which may hold spaces): state is
		// field 3, utime and stime fields 14 and 15.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 13 {
			return u, fmt.Errorf("short /proc/%d/stat", p.Process.Pid)
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		u.cpu += time.Duration(ut+st) * clockTick
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", p.Process.Pid))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue // a thread that just ended
			}
			for _, line := range strings.Split(string(b), "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					u.ctxsw += n
				}
			}
		}
	}
	for _, m := range cl.metrics {
		if m == "" {
			continue
		}
		vals, err := scrape(ctx, m, "quorumq_raft_log_fsync_duration_seconds_count", "quorumq_raft_transport_messages_sent_total",
			"quorumq_raft_transport_batches_sent_total")
		if err != nil {
			return u, err
		}
		u.fsyncs += sum(vals["quorumq_raft_log_fsync_duration_seconds_count"])
		u.msgs += sum(vals["quorumq_raft_transport_messages_sent_total"])
		u.stream += sum(vals["quorumq_raft_transport_batches_sent_total"])
	}
	return u, nil
}

func sum(xs []float64) float64 {
	var t float64
	for _, x := range xs {
		t += x
	}
	return t
}

// scrape reads the samples of the named metrics from a node's /metrics
// (Prometheus text format), each name's values in the order listed.
func scrape(ctx context.Context, addr string, names ...string) (map[string][]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string][]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, _, _ := strings.Cut(line, " ")
		name, _, _ = strings.Cut(name, "{")
		if !slices.Contains(names, name) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			out[name] = append(out[name], v)
		}
	}
	return out, sc.Err()
}

// leaders is how many shards each node leads (quorumq_raft_leader).
func (cl *cluster) leaders(ctx context.Context) ([]int, error) {
	var out []int
	for _, m := range cl.metrics {
		vals, err := scrape(ctx, m, "quorumq_raft_leader")
		if err != nil {
			return nil, err
		}
		out = append(out, int(sum(vals["quorumq_raft_leader"])))
	}
	return out, nil
}

// waitLeadersSpread waits (up to 30 s) until every shard has a leader and
// no node leads more than its share, ceil(shards / nodes), as the leader
// balancer arranges every few seconds; it returns the last counts.
func (cl *cluster) waitLeadersSpread(ctx context.Context, shards int) []int {
	share := (shards + len(cl.procs) - 1) / len(cl.procs)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ls, err := cl.leaders(ctx)
		if err == nil && sum(intsToFloats(ls)) == float64(shards) && slices.Max(ls) <= share {
			return ls
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return ls
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func intsToFloats(xs []int) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(x)
	}
	return out
}

// scaleRow is one cluster's run in scenario (s).
type scaleRow struct {
	nodes, round  int
	r             *result
	use           usage
	before, after []int // shards led per node, before and after the run
}

// scaleCompare is scenario (s).
func scaleCompare(ctx context.Context, c suiteConfig, dir string, w io.Writer) error {
	d := c.duration.String()
	// INFLIGHT senders per producer (default 1): with few messages in
	// flight a run measures round trips (fsyncs a message shares), with
	// many it measures the work per message.
	inflight := strconv.Itoa(int(envInt("INFLIGHT", 1)))
	load := []string{"--queue", "scale", "--create", "--partitions", "6", "--size", "1024", "--batch", "10",
		"--producers", "8", "--inflight", inflight, "--consumers", "8", "--duration", d, "--drain-timeout", d}
	var rows []scaleRow
	for round := 1; round <= c.rounds; round++ {
		for _, n := range []int{3, 6} {
			row, err := scaleRun(ctx, c.bin, filepath.Join(dir, fmt.Sprintf("s%d-%d", n, round)), n, round, c.keep, c.serveFlags, load)
			if err != nil {
				return err
			}
			rows = append(rows, row)
		}
	}
	load1, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(w, "\n(s) send throughput, 6 nodes vs 3, %d shards (replication factor 3), queue of 6 partitions, 1 KiB, batch 10, 8 producers × %s in flight + 8 consumers through every node, %v per run\n\n",
		scaleShards, inflight, c.duration)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "nodes\tround\tsent/s\trecv+del/s\tsend p50\tp99\tCPU ms/msg\tfsyncs/msg\tctx sw/msg\traft msgs/msg\tbatches/msg\tshards led per node\t")
	var sums [7]float64
	var ratios []string
	for i, r := range rows {
		per := func(x float64) float64 { return x / float64(max(r.r.Sent, 1)) }
		fmt.Fprintf(tw, "%d\t%d\t%.0f\t%.0f\t%.1f\t%.1f\t%.3f\t%.3f\t%.1f\t%.2f\t%.2f\t%v -> %v\t\n", r.nodes, r.round, r.r.SentPerSec, r.r.DeletedPerSec,
			r.r.Send.P50, r.r.Send.P99, per(float64(r.use.cpu.Milliseconds())), per(r.use.fsyncs), per(float64(r.use.ctxsw)),
			per(r.use.msgs), per(r.use.stream), r.before, r.after)
		sums[r.nodes] += r.r.SentPerSec
		if r.nodes == 6 {
			ratios = append(ratios, strconv.FormatFloat(r.r.SentPerSec/max(rows[i-1].r.SentPerSec, 1), 'f', 2, 64))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "(s) 6/3 send throughput over %d rounds: %s (rounds %v); load average at the end: %s",
		c.rounds, ratio("", sums[6], sums[3]), ratios, load1)
	return err
}

// scaleRun bootstraps n nodes in dir, runs the load once and stops them.
func scaleRun(ctx context.Context, bin, dir string, n, round int, keep bool, serveFlags, load []string) (scaleRow, error) {
	row := scaleRow{nodes: n, round: round}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return row, err
	}
	cl, err := startNodes(ctx, bin, dir, clusterSpec{nodes: n, metrics: true, extra: append([]string{"--shards", strconv.Itoa(scaleShards)}, serveFlags...)})
	if err != nil {
		return row, err
	}
	defer func() {
		cl.stop()
		if !keep {
			_ = os.RemoveAll(dir)
		}
	}()
	row.before = cl.waitLeadersSpread(ctx, scaleShards)
	u0, err := cl.usage(ctx)
	if err != nil {
		return row, err
	}
	row.r, err = runQuorumqBench(ctx, bin, dir, cl.grpc, nil, fmt.Sprintf("s-%dnodes-%d", n, round), load...)
	if err != nil {
		return row, err
	}
	u1, err := cl.usage(ctx)
	if err != nil {
		return row, err
	}
	row.use = u1.sub(u0)
	row.after, _ = cl.leaders(ctx)
	logf("(s) %d nodes: CPU %.3f ms/msg, %.3f fsyncs/msg, %.1f context switches/msg", n,
		float64(row.use.cpu.Milliseconds())/float64(max(row.r.Sent, 1)), row.use.fsyncs/float64(max(row.r.Sent, 1)),
		float64(row.use.ctxsw)/float64(max(row.r.Sent, 1)))
	return row, nil
}

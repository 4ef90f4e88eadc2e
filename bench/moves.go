package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Scenario (m), issue 17 item 5: "moves are rate-limited so foreground
// latency stays within 2x of idle". Three nodes (7 shards, replication
// factor 3) hold a BACKLOG of 1 KiB messages (so each move copies a
// snapshot of its shard's share), then a steady open-loop load runs
// (moveRate msgs/s, batch 1, 2 producers with 50 sends in flight each, 2
// consumers, its own queue of 6 partitions): idle for DURATION; in
// windows of moveWindow from just before two nodes join until the
// rebalancer has spread the replicas over five (`quorumq cluster
// rebalance --expect-nodes 5`); idle again on five nodes for DURATION.
// The figure is the send latency (p50, p99) of the worst window during
// the moves against the first idle run.

// moveRate is the load's rate in messages/s: moderate on the shared
// 2-core machine, where 3 nodes take ~2,000 msgs/s in batches of 10.
// moveWindow is the length of one measurement during the moves.
const (
	moveRate   = 300
	moveWindow = 5 * time.Second
)

func movesLatency(ctx context.Context, c suiteConfig, dir string, w io.Writer) error {
	cl, err := startNodes(ctx, c.bin, dir, clusterSpec{nodes: 3, metrics: true, extra: append([]string{"--shards", strconv.Itoa(scaleShards)}, c.serveFlags...)})
	if err != nil {
		return err
	}
	defer cl.stop()
	cl.waitLeadersSpread(ctx, scaleShards)
	bench := func(name string, interrupt <-chan struct{}, args ...string) (*result, error) {
		return runQuorumqBench(ctx, c.bin, dir, cl.grpc, interrupt, name, args...)
	}
	fill, err := bench("m-fill", nil, "--queue", "mv-backlog", "--create", "--partitions", "6", "--size", "1024", "--batch", "10",
		"--inflight", "2", "--producers", "8", "--consumers", "0", "--messages", strconv.FormatInt(c.backlog, 10), "--duration", "0")
	if err != nil {
		return err
	}
	load := func(d string) []string {
		return []string{"--queue", "mv-load", "--create", "--partitions", "6", "--size", "1024", "--batch", "1", "--inflight", "50",
			"--producers", "2", "--consumers", "2", "--rate", strconv.Itoa(moveRate), "--duration", d, "--drain-timeout", c.duration.String()}
	}
	cl.settle(ctx)
	idle, err := bench("m-idle", nil, load(c.duration.String())...)
	if err != nil {
		return err
	}

	// During the moves: windows of moveWindow, one after the other, from
	// just before the joins until the rebalance is over; a window that
	// ended before it counts (the one that saw the end does not).
	type outcome struct {
		took time.Duration
		err  error
	}
	moves := make(chan outcome, 1)
	start := time.Now()
	go func() {
		err := func() error {
			select { // the load first, so the joins fall inside it
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
			for range 2 {
				if err := cl.join(ctx, true, c.serveFlags...); err != nil {
					return fmt.Errorf("join: %w", err)
				}
			}
			return cl.rebalance(ctx, 5, filepath.Join(dir, "m-rebalance.log"))
		}()
		moves <- outcome{time.Since(start), err}
	}()
	var during []*result
	var moved outcome
	for i := 1; ; i++ {
		r, err := bench(fmt.Sprintf("m-moves-%d", i), nil, load(moveWindow.String())...)
		if err != nil {
			return err
		}
		select {
		case moved = <-moves:
		default:
			during = append(during, r)
			continue
		}
		break
	}
	if moved.err != nil {
		return moved.err
	}
	after, err := bench("m-after", nil, load(c.duration.String())...)
	if err != nil {
		return err
	}
	log, _ := os.ReadFile(filepath.Join(dir, "m-rebalance.log"))
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	load1, _ := os.ReadFile("/proc/loadavg")

	fmt.Fprintf(w, "\n(m) send latency while replicas move onto 2 joining nodes, against idle: 3 nodes, %d shards (RF 3), backlog %d x 1 KiB (fill %.0f msgs/s), load %d msgs/s open loop, batch 1, 2+2; serve flags %q\n\n",
		scaleShards, c.backlog, fill.SentPerSec, moveRate, c.serveFlags)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "phase\tsent/s\tsend p50\tp90\tp99\tp99.9\tmax\te2e p50\tp99\terrors\t")
	type phase struct {
		name string
		r    *result
	}
	phases := []phase{{"idle, 3 nodes", idle}}
	var worst50, worst99 float64
	for i, r := range during {
		phases = append(phases, phase{fmt.Sprintf("moves, window %d (%v)", i+1, moveWindow), r})
		worst50, worst99 = max(worst50, r.Send.P50), max(worst99, r.Send.P99)
	}
	phases = append(phases, phase{"idle, 5 nodes", after})
	for _, p := range phases {
		var errs int64
		for _, n := range p.r.Errors {
			errs += n
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t\n", p.name, p.r.SentPerSec,
			p.r.Send.P50, p.r.Send.P90, p.r.Send.P99, p.r.Send.P999, p.r.Send.Max, p.r.E2E.P50, p.r.E2E.P99, errs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "(m) joins and rebalance took %.1fs (%s); %d whole windows during the moves; worst window / idle (3 nodes): send p50 %s, p99 %s; load average at the end: %s",
		moved.took.Seconds(), lines[max(len(lines)-2, 0)], len(during), ratio("", worst50, idle.Send.P50), ratio("", worst99, idle.Send.P99), load1)
	return err
}

// settle waits (up to a minute) until the nodes' Pebble has no
// compaction debt and neither flushed nor compacted for 3 s: what a
// backlog fill leaves behind would otherwise load the idle measurement.
func (cl *cluster) settle(ctx context.Context) {
	names := []string{"quorumq_pebble_compaction_debt_bytes", "quorumq_pebble_flushes_total", "quorumq_pebble_compactions_total"}
	deadline := time.Now().Add(time.Minute)
	var last float64
	quiet := time.Time{}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var debt, work float64
		for _, m := range cl.metrics {
			vals, err := scrape(ctx, m, names...)
			if err != nil {
				return
			}
			debt += sum(vals[names[0]])
			work += sum(vals[names[1]]) + sum(vals[names[2]])
		}
		switch {
		case debt > 0 || work != last:
			quiet, last = time.Time{}, work
		case quiet.IsZero():
			quiet = time.Now()
		case time.Since(quiet) >= 3*time.Second:
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// rebalance runs `quorumq cluster rebalance --expect-nodes n` (it returns
// once n nodes are active and hold even shares of the replicas), its
// output in logPath.
func (cl *cluster) rebalance(ctx context.Context, n int, logPath string) error {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, cl.bin, "cluster", "rebalance", "--expect-nodes", strconv.Itoa(n), "--wait", "10m",
		"--endpoint", cl.grpc[0])
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if werr := os.WriteFile(logPath, out.Bytes(), 0o640); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("cluster rebalance: %w: %s", err, out.String())
	}
	return nil
}

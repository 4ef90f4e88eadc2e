// Command bench runs quorumq's benchmark suite: it builds the binary,
// starts a three-node cluster on 127.0.0.1 in a temporary directory (its
// own ports; stopped on exit), runs a fixed set of `quorumq bench`
// scenarios against it and prints one table.
//
//	go run ./bench                                 # the full suite (15 s scenarios, 1,000,000 backlog)
//	DURATION=10s BACKLOG=100000 go run ./bench     # a quick run
//	ONLY=g ROUNDS=3 DURATION=10s go run ./bench    # topic publish vs queue send
//	ONLY=e BACKLOG=200000 go run ./bench           # the backlog fill and (e) alone
//	ONLY=de go run ./bench                         # (a), the fill, (e) and (d): the backlog ratios
//	ONLY=e PROFILE=/tmp/p go run ./bench           # also CPU profiles of each node during each (e) run
//	ONLY=s ROUNDS=2 DURATION=15s go run ./bench    # 6 nodes against 3: send throughput ratio
//	ONLY=m BACKLOG=100000 DURATION=15s go run ./bench  # send latency during replica moves against idle
//
// Every flag may also come from the environment (DURATION, BACKLOG, BIN,
// TIMEOUT, KEEP, PROFILE, SERVE_FLAGS). Scenarios:
//
//	(a) 1 KiB, batch 10, 8 producers + 8 consumers, closed loop
//	(b) batch 1, 4 producers with 500 sends in flight each, 4 consumers
//	(c) open loop at 5,000 msgs/s (batch 1, 4+4): send and end-to-end latency
//	(d) receive throughput, same load as (a), on a queue holding BACKLOG
//	    messages vs the empty queue of (a)
//	(e) receive-only from that backlog (1 % of it tagged): 0.9 × BACKLOG/100
//	    messages with a tag filter vs as many without (before and after)
//	(f) peak RSS (VmHWM) of each node at the end
//	(g) Publish to a topic with 1 subscription vs SendMessage to a queue,
//	    settings of (a), ROUNDS interleaved rounds (ONLY=g runs only this)
//
// ONLY=e runs the fill and (e) alone, to measure the filtered receive;
// ONLY=de runs (a), the fill, (e) and (d): every backlog ratio and (f).
// Two scenarios run only when asked for, each on clusters of its own:
//
//	(s) ONLY=s: send throughput of 6 nodes against 3 (7 shards,
//	    replication factor 3), ROUNDS alternating rounds (scale.go)
//	(m) ONLY=m: send latency while replicas move onto 2 joining nodes
//	    against idle, on 3 nodes with a BACKLOG (moves.go)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/quorumq/quorumq/bench/internal/promtext"
	"github.com/quorumq/quorumq/internal/testports"
)

type suiteConfig struct {
	only     string // "g", "e" or "de": only those scenarios
	profile  string // directory for CPU profiles of the nodes during (e), or ""
	rounds   int    // of scenario (g)
	duration time.Duration
	backlog  int64
	bin      string
	timeout  time.Duration
	keep     bool
	// serveFlags are added to every node's serve command.
	serveFlags []string
}

func main() {
	var c suiteConfig
	flag.DurationVar(&c.duration, "duration", envDuration("DURATION", 15*time.Second), "length of each scenario (env DURATION)")
	flag.Int64Var(&c.backlog, "backlog", envInt("BACKLOG", 1_000_000), "messages in the backlog of (d) and (e) (env BACKLOG)")
	flag.StringVar(&c.bin, "bin", os.Getenv("BIN"), "quorumq binary to use instead of building one (env BIN)")
	flag.DurationVar(&c.timeout, "timeout", envDuration("TIMEOUT", 30*time.Minute), "bound of the whole suite (env TIMEOUT)")
	flag.StringVar(&c.only, "only", os.Getenv("ONLY"), "run only this scenario: g, e (with the backlog fill), de ((a), the fill, (e), (d)), s or m (env ONLY)")
	flag.StringVar(&c.profile, "profile", os.Getenv("PROFILE"), "save 5 s CPU profiles of each node during each (e) run into this directory (env PROFILE)")
	flag.IntVar(&c.rounds, "rounds", int(envInt("ROUNDS", 3)), "interleaved rounds of scenarios (g) and (s) (env ROUNDS)")
	flag.BoolVar(&c.keep, "keep", os.Getenv("KEEP") != "", "keep the temporary directory with node and bench logs (env KEEP)")
	serveFlags := flag.String("serve-flags", os.Getenv("SERVE_FLAGS"), "space-separated flags added to each node's serve command, e.g. --state-without-wal or --snapshot-bytes-per-sec=0 (env SERVE_FLAGS)")
	flag.Parse()
	c.serveFlags = strings.Fields(*serveFlags)
	if c.duration <= 0 || c.backlog < 100 || c.rounds < 1 || !slices.Contains([]string{"", "g", "e", "de", "s", "m"}, c.only) {
		fmt.Fprintln(os.Stderr, "bench: -duration must be positive, -backlog at least 100, -rounds at least 1, -only empty, g, e, de, s or m")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	err := run(ctx, c)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envInt(name string, def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv(name), 10, 64); err == nil {
		return v
	}
	return def
}

func run(ctx context.Context, c suiteConfig) (err error) {
	dir, err := os.MkdirTemp("", "quorumq-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if c.keep {
			fmt.Fprintln(os.Stderr, "logs and data kept in", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()
	if c.bin == "" {
		c.bin = filepath.Join(dir, "quorumq")
		logf("building %s", c.bin)
		build := exec.CommandContext(ctx, "go", "build", "-o", c.bin, "./cmd/quorumq")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build (run from the repository root): %w", err)
		}
	}
	switch c.only {
	case "s":
		return scaleCompare(ctx, c, dir, os.Stdout)
	case "m":
		return movesLatency(ctx, c, dir, os.Stdout)
	}
	if c.profile != "" {
		if err := os.MkdirAll(c.profile, 0o755); err != nil {
			return err
		}
	}
	cl, err := startCluster(ctx, c.bin, dir, c.profile != "", c.serveFlags)
	if err != nil {
		return err
	}
	defer cl.stop()
	logf("cluster up: gRPC %s (logs in %s)", strings.Join(cl.grpc, ","), dir)

	s := &suite{c: c, cl: cl, dir: dir}
	return s.run(ctx)
}

// cluster is `quorumq serve` processes on loopback.
type cluster struct {
	bin     string
	dir     string
	procs   []*exec.Cmd
	grpc    []string
	https   []string
	metrics []string // metrics listeners; empty strings if off
	raft    []string
}

// freePorts picks n free loopback ports below the kernel's ephemeral range
// (testports.Reserve): a port from ":0" is what outgoing connections take
// too, so one could be taken between the pick and the node's bind.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		addr, err := testports.Reserve()
		if err != nil {
			return nil, err
		}
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		port, err := strconv.Atoi(p)
		if err != nil {
			return nil, err
		}
		ports = append(ports, port)
	}
	return ports, nil
}

// clusterSpec shapes a cluster: nodes bootstrapped together, and the
// serve flags they share (--shards, ...).
type clusterSpec struct {
	nodes   int
	metrics bool // serve /metrics on a free port of each node
	extra   []string
}

// startCluster starts the suite's 3 nodes, with metrics (the Pebble bytes
// written per scenario) and, when asked, pprof (PROFILE).
func startCluster(ctx context.Context, bin, dir string, pprof bool, flags []string) (*cluster, error) {
	spec := clusterSpec{nodes: 3, metrics: true, extra: flags}
	if pprof {
		spec.extra = append(spec.extra, "--pprof")
	}
	return startNodes(ctx, bin, dir, spec)
}

// startNodes bootstraps spec.nodes nodes and waits until each is ready.
func startNodes(ctx context.Context, bin, dir string, spec clusterSpec) (*cluster, error) {
	cl := &cluster{bin: bin, dir: dir}
	// Every port at once (metrics too): a port picked later could be one
	// reserved here for a node not started yet, which then fails to bind.
	ports, err := freePorts(4 * spec.nodes)
	if err != nil {
		return nil, err
	}
	var peers []string
	for i := range spec.nodes {
		peers = append(peers, fmt.Sprintf("%d=%s", i+1, addr(ports[2*spec.nodes+i])))
	}
	for i := range spec.nodes {
		args := append([]string{"--node-id", strconv.Itoa(i + 1), "--peers", strings.Join(peers, ",")}, spec.extra...)
		metricsPort := 0
		if spec.metrics {
			metricsPort = ports[3*spec.nodes+i]
		}
		if err := cl.start(ports[i], ports[spec.nodes+i], ports[2*spec.nodes+i], metricsPort, args...); err != nil {
			cl.stop()
			return nil, err
		}
	}
	if err := waitReady(ctx, cl.https, 60*time.Second); err != nil {
		cl.stop()
		return nil, err
	}
	return cl, nil
}

func addr(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }

// start runs one more node (its log and data under cl.dir, named by its
// position) with the given listener ports (metricsPort 0: no /metrics) and
// flags.
func (cl *cluster) start(httpPort, grpcPort, raftPort, metricsPort int, args ...string) error {
	name := "n" + strconv.Itoa(len(cl.procs)+1)
	metricsAddr := ""
	if metricsPort != 0 {
		metricsAddr = addr(metricsPort)
	}
	logFile, err := os.Create(filepath.Join(cl.dir, name+".log"))
	if err != nil {
		return err
	}
	defer logFile.Close() // the child holds its own descriptor
	args = append([]string{"serve", "--data-dir", filepath.Join(cl.dir, name),
		"--http-addr", addr(httpPort), "--grpc-addr", addr(grpcPort), "--raft-addr", addr(raftPort),
		"--metrics-addr=" + metricsAddr, "--sqs-addr="}, args...)
	cmd := exec.Command(cl.bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The nodes die with the suite even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start node %s: %w", name, err)
	}
	cl.procs = append(cl.procs, cmd)
	cl.grpc = append(cl.grpc, addr(grpcPort))
	cl.https = append(cl.https, addr(httpPort))
	cl.metrics = append(cl.metrics, metricsAddr)
	cl.raft = append(cl.raft, addr(raftPort))
	return nil
}

// join starts a node with an empty data directory that joins the cluster
// through node 1 (serve --join), and waits until it is ready.
func (cl *cluster) join(ctx context.Context, metrics bool, extra ...string) error {
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	metricsPort := 0
	if metrics {
		metricsPort = ports[3]
	}
	if err := cl.start(ports[0], ports[1], ports[2], metricsPort, append([]string{"--join", cl.raft[0]}, extra...)...); err != nil {
		return err
	}
	return waitReady(ctx, cl.https[len(cl.https)-1:], 60*time.Second)
}

// waitReady polls each node's /readyz until it answers 200.
func waitReady(ctx context.Context, https []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, h := range https {
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h+"/readyz", nil)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("node %s not ready: %w", h, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// stop sends SIGTERM (drain) and kills what has not exited after 15 s.
func (cl *cluster) stop() {
	for _, p := range cl.procs {
		_ = p.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range cl.procs {
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
	cl.procs = nil
}

// peakRSS is VmHWM of a process in MiB.
func peakRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// result is the part of `quorumq bench -o json` the table shows.
type result struct {
	Elapsed        float64          `json:"elapsedSec"`
	Sent           int64            `json:"sent"`
	Received       int64            `json:"received"`
	Deleted        int64            `json:"deleted"`
	SentPerSec     float64          `json:"sentPerSec"`
	ReceivedPerSec float64          `json:"receivedPerSec"`
	DeletedPerSec  float64          `json:"deletedPerSec"`
	Drained        bool             `json:"drained"`
	Send           latency          `json:"sendLatencyMs"`
	E2E            latency          `json:"endToEndLatencyMs"`
	Errors         map[string]int64 `json:"errors"`
	pebble         pebbleBytes      // what the nodes' Pebble stores wrote during the run
}

// pebbleBytes is what the nodes' Pebble stores wrote, by where it went
// (quorumq_pebble_*_written_bytes_total summed over the nodes).
type pebbleBytes struct{ total, wal, flush, compaction float64 }

func (p pebbleBytes) minus(q pebbleBytes) pebbleBytes {
	return pebbleBytes{p.total - q.total, p.wal - q.wal, p.flush - q.flush, p.compaction - q.compaction}
}

// pebbleWritten reads the Pebble byte counters of every node (0 for a node
// that does not answer).
func (s *suite) pebbleWritten(ctx context.Context) pebbleBytes {
	var p pebbleBytes
	for _, a := range s.cl.metrics {
		text, err := metricsText(ctx, a)
		if err != nil {
			continue
		}
		p.total += promtext.Sum(text, "quorumq_pebble_written_bytes_total")
		p.wal += promtext.Sum(text, "quorumq_pebble_wal_written_bytes_total")
		p.flush += promtext.Sum(text, "quorumq_pebble_flush_written_bytes_total")
		p.compaction += promtext.Sum(text, "quorumq_pebble_compaction_written_bytes_total")
	}
	return p
}

// metricsText reads a node's /metrics.
func metricsText(ctx context.Context, addr string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("metrics of %s: %w", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return "", fmt.Errorf("metrics of %s: %w", addr, err)
	}
	return string(b), nil
}

type latency struct {
	Count                    int64
	P50, P90, P99, P999, Max float64
}

type row struct {
	name string
	r    *result
	note string
}

type suite struct {
	c     suiteConfig
	cl    *cluster
	dir   string
	rows  []row
	notes []string // lines under the table
}

// bench runs one `quorumq bench -o json` with its progress in a log file.
func (s *suite) bench(ctx context.Context, name string, args ...string) (*result, error) {
	pebble0 := s.pebbleWritten(ctx)
	r, err := runQuorumqBench(ctx, s.c.bin, s.dir, s.cl.grpc, nil, name, args...)
	if err != nil {
		return nil, err
	}
	r.pebble = s.pebbleWritten(ctx).minus(pebble0)
	return r, nil
}

// runQuorumqBench runs `quorumq bench -o json` against endpoints, its
// progress in a log file under dir. A receive on interrupt (nil: none)
// ends the run early (SIGINT: the bench stops and reports what it
// measured so far).
func runQuorumqBench(ctx context.Context, bin, dir string, endpoints []string, interrupt <-chan struct{}, name string, args ...string) (*result, error) {
	logf("(%s) quorumq bench %s", name, strings.Join(args, " "))
	args = append([]string{"bench", "-o", "json", "--endpoint", strings.Join(endpoints, ",")}, args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	logFile, err := os.Create(filepath.Join(dir, "bench-"+strings.NewReplacer(" ", "_", "/", "_").Replace(name)+".log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = &out, io.MultiWriter(logFile)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("(%s): %w", name, err)
	}
	done := make(chan struct{})
	defer close(done)
	if interrupt != nil {
		go func() {
			select {
			case <-interrupt:
				_ = cmd.Process.Signal(os.Interrupt)
			case <-done:
			}
		}()
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("(%s): %w (see %s)", name, err, logFile.Name())
	}
	var r result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return nil, fmt.Errorf("(%s) output %q: %w", name, out.String(), err)
	}
	logf("(%s) sent %.0f/s, received %.0f/s, send p50 %.1f p99 %.1f ms, e2e p99 %.1f ms, errors %v",
		name, r.SentPerSec, r.ReceivedPerSec, r.Send.P50, r.Send.P99, r.E2E.P99, r.Errors)
	return &r, nil
}

func (s *suite) run(ctx context.Context) error {
	if s.c.only == "g" {
		if err := s.topicVsQueue(ctx, s.c.rounds); err != nil {
			return err
		}
		return s.print(os.Stdout)
	}
	d := s.c.duration.String()
	common := []string{"--size", "1024", "--create", "--duration", d, "--drain-timeout", d}
	if s.c.only == "de" {
		return s.backlogRatios(ctx, common)
	}
	if s.c.only == "e" {
		if err := s.fill(ctx); err != nil {
			return err
		}
		e, err := s.filtered(ctx)
		if err != nil {
			return err
		}
		s.rows = append(s.rows, e...)
		return s.print(os.Stdout)
	}
	a, err := s.bench(ctx, "a", append(common, "--queue", "sa", "--batch", "10", "--producers", "8", "--consumers", "8")...)
	if err != nil {
		return err
	}
	s.rows = append(s.rows, row{"(a) batch 10, 8+8, closed loop", a, ""})
	b, err := s.bench(ctx, "b", append(common, "--queue", "sb", "--batch", "1", "--inflight", "500",
		"--producers", "4", "--consumers", "4")...)
	if err != nil {
		return err
	}
	s.rows = append(s.rows, row{"(b) batch 1, 4×500 in flight, 4 cons", b, ""})
	c, err := s.bench(ctx, "c", append(common, "--queue", "sc", "--batch", "1", "--inflight", "500",
		"--producers", "4", "--consumers", "4", "--rate", "5000")...)
	if err != nil {
		return err
	}
	s.rows = append(s.rows, row{"(c) open loop 5000/s, batch 1, 4+4", c, ""})
	if err := s.backlog(ctx, common, a); err != nil {
		return err
	}
	if err := s.topicVsQueue(ctx, s.c.rounds); err != nil {
		return err
	}
	return s.print(os.Stdout)
}

// backlog fills queue sd, runs (e) on it, then (d): receives from the
// backlog against a, (a)'s receives from an empty queue.
func (s *suite) backlog(ctx context.Context, common []string, a *result) error {
	if err := s.fill(ctx); err != nil {
		return err
	}
	e, err := s.filtered(ctx)
	if err != nil {
		return err
	}
	db, err := s.bench(ctx, "d-backlog", append(common, "--queue", "sd", "--batch", "10", "--producers", "8", "--consumers", "8")...)
	if err != nil {
		return err
	}
	s.rows = append(s.rows,
		row{"(d) recv, empty queue: (a)", a, ""},
		row{"(d) recv, backlog queue", db, ratio("backlog/empty", db.ReceivedPerSec, a.ReceivedPerSec)},
	)
	s.rows = append(s.rows, e...)
	return nil
}

// backlogRatios is ONLY=de: (a) on an empty queue, the fill, (e), and (d)
// on the backlog queue, in the full suite's order.
func (s *suite) backlogRatios(ctx context.Context, common []string) error {
	a, err := s.bench(ctx, "a", append(common, "--queue", "sa", "--batch", "10", "--producers", "8", "--consumers", "8")...)
	if err != nil {
		return err
	}
	if err := s.backlog(ctx, common, a); err != nil {
		return err
	}
	return s.print(os.Stdout)
}

// fill sends the backlog of (d) and (e) to queue sd, 1 % of it tagged.
// Bounded by the suite's timeout.
func (s *suite) fill(ctx context.Context) error {
	fill, err := s.bench(ctx, "fill", "--size", "1024", "--create", "--queue", "sd", "--batch", "10", "--inflight", "2",
		"--producers", "8", "--consumers", "0", "--messages", strconv.FormatInt(s.c.backlog, 10), "--duration", "0",
		"--tag", "hot", "--tag-every", "100")
	if err != nil {
		return err
	}
	s.rows = append(s.rows, row{fmt.Sprintf("    fill backlog of %d (8×2, batch 10)", s.c.backlog), fill, ""})
	return s.settle(ctx)
}

// settle waits, after the fill, until no node has compaction debt and none
// wrote sstable bytes (flushes, compactions) for 3 s, at most 3 minutes (a
// compaction's bytes count when it ends, so quiet counters alone do not
// tell that none is running): otherwise the first
// receive after the fill pays for its compactions (measured: its Pebble
// bytes per message were 7 KiB of compactions, the run after's none, and
// its rate a third of the next unfiltered run's), and the ratios of (d)
// and (e) measure the fill's tail, not the receive.
func (s *suite) settle(ctx context.Context) error {
	start := time.Now()
	deadline := start.Add(3 * time.Minute)
	var last pebbleBytes
	quiet := 0
	for {
		debt := 0.0
		var now pebbleBytes
		for _, a := range s.cl.metrics {
			text, err := metricsText(ctx, a)
			if err != nil {
				return err
			}
			debt += promtext.Sum(text, "quorumq_pebble_compaction_debt_bytes")
			now.flush += promtext.Sum(text, "quorumq_pebble_flush_written_bytes_total")
			now.compaction += promtext.Sum(text, "quorumq_pebble_compaction_written_bytes_total")
		}
		if debt == 0 && now.flush == last.flush && now.compaction == last.compaction {
			quiet++
		} else {
			quiet = 0
		}
		last = now
		if quiet >= 3 {
			logf("settled after the fill in %v (compaction debt %.0f MiB)", time.Since(start).Round(time.Second), debt/(1<<20))
			return nil
		}
		if time.Now().After(deadline) {
			logf("not settled after the fill in %v (compaction debt %.0f MiB): going on", time.Since(start).Round(time.Second), debt/(1<<20))
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// filtered is (e): 0.9 × BACKLOG/100 messages received from the backlog
// without a filter, then as many with the tag filter, then as many without
// again (each unfiltered run takes 1 % tagged ones: 0.9 leaves enough for
// the filter). The filtered rate is compared with the mean of the two
// unfiltered runs, so that neither pays alone for what the fill left
// behind (flushes, compactions, a cold block cache): measured on a 200,000
// backlog, whichever receive ran first after the fill was about 3× slower.
func (s *suite) filtered(ctx context.Context) ([]row, error) {
	n := strconv.FormatInt(s.c.backlog/100*9/10, 10)
	recvOnly := []string{"--queue", "sd", "--producers", "0", "--consumers", "8", "--messages", n, "--duration", s.c.duration.String()}
	profiled := func(name string, args ...string) (*result, error) {
		wait := s.profileNodes(ctx, name)
		defer wait()
		return s.bench(ctx, name, args...)
	}
	eu1, err := profiled("e-unfiltered-1", recvOnly...)
	if err != nil {
		return nil, err
	}
	ef, err := profiled("e-filtered", append(recvOnly, "--filter-tag", "hot")...)
	if err != nil {
		return nil, err
	}
	eu2, err := profiled("e-unfiltered-2", recvOnly...)
	if err != nil {
		return nil, err
	}
	recv := func(r *result) string { return fmt.Sprintf("recv %.0f/s", r.ReceivedPerSec) }
	mean := (eu1.ReceivedPerSec + eu2.ReceivedPerSec) / 2
	return []row{
		{"(e) recv-only " + n + " msgs, unfiltered", eu1, recv(eu1)},
		{"(e) recv-only " + n + " msgs, 1% tag filter", ef, recv(ef) + "; " + ratio("filtered/unfiltered (mean)", ef.ReceivedPerSec, mean)},
		{"(e) recv-only " + n + " msgs, unfiltered again", eu2, recv(eu2)},
	}, nil
}

// profileNodes saves a 5 s CPU profile of each node, from the start of run
// name, into the -profile directory (nothing without one); the returned
// function waits for them.
func (s *suite) profileNodes(ctx context.Context, name string) func() {
	if s.c.profile == "" {
		return func() {}
	}
	var wg sync.WaitGroup
	for i, h := range s.cl.https {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h+"/debug/pprof/profile?seconds=5", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				logf("profile of node %d: %v", i+1, err)
				return
			}
			defer resp.Body.Close()
			path := filepath.Join(s.c.profile, fmt.Sprintf("%s-n%d.pprof", name, i+1))
			f, err := os.Create(path)
			if err != nil {
				logf("profile of node %d: %v", i+1, err)
				return
			}
			if _, err := io.Copy(f, resp.Body); err != nil {
				logf("profile of node %d: %v", i+1, err)
			}
			if err := f.Close(); err != nil {
				logf("profile of node %d: %v", i+1, err)
			}
		})
	}
	return wg.Wait
}

func ratio(name string, x, y float64) string {
	if y == 0 {
		return name + " n/a"
	}
	return fmt.Sprintf("%s %.2f", name, x/y)
}

func (s *suite) print(w io.Writer) error {
	fmt.Fprintf(w, "\nquorumq bench suite: 3 nodes on 127.0.0.1, 1 KiB messages, %v per scenario, backlog %d\n\n",
		s.c.duration, s.c.backlog)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tsent/s\trecv+del/s\tsend p50\tp90\tp99\tp99.9\te2e p50\tp90\tp99\tp99.9\terrors\t")
	ms := func(l latency, f float64) string {
		if l.Count == 0 {
			return "-"
		}
		return strconv.FormatFloat(f, 'f', 1, 64)
	}
	for _, r := range s.rows {
		var errs int64
		for _, n := range r.r.Errors {
			errs += n
		}
		note := r.note
		if !r.r.Drained {
			note = strings.TrimSpace(fmt.Sprintf("%s not drained: received %d of %d", note, r.r.Received, r.r.Sent))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.name, r.r.SentPerSec, r.r.DeletedPerSec,
			ms(r.r.Send, r.r.Send.P50), ms(r.r.Send, r.r.Send.P90), ms(r.r.Send, r.r.Send.P99), ms(r.r.Send, r.r.Send.P999),
			ms(r.r.E2E, r.r.E2E.P50), ms(r.r.E2E, r.r.E2E.P90), ms(r.r.E2E, r.r.E2E.P99), ms(r.r.E2E, r.r.E2E.P999), errs, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "(latencies in ms; recv+del/s counts messages received and deleted)")
	fmt.Fprintln(w, "Pebble KiB written per message (all nodes, during the run; flushes and compactions may trail it):")
	seen := map[*result]bool{}
	for _, r := range s.rows {
		n := max(r.r.Sent, r.r.Received)
		if n == 0 || r.r.pebble.total == 0 || seen[r.r] {
			continue
		}
		seen[r.r] = true
		kib := func(b float64) float64 { return b / 1024 / float64(n) }
		fmt.Fprintf(w, "  %s: %.2f (WAL %.2f, flushes %.2f, compactions %.2f)\n", strings.TrimSpace(r.name),
			kib(r.r.pebble.total), kib(r.r.pebble.wal), kib(r.r.pebble.flush), kib(r.r.pebble.compaction))
	}
	for _, n := range s.notes {
		fmt.Fprintln(w, n)
	}
	var rss []string
	for i, p := range s.cl.procs {
		mib, err := peakRSS(p.Process.Pid)
		if err != nil {
			rss = append(rss, fmt.Sprintf("node %d: %v", i+1, err))
			continue
		}
		rss = append(rss, fmt.Sprintf("node %d %.0f MiB", i+1, mib))
	}
	if _, err := fmt.Fprintf(w, "(f) peak RSS (VmHWM): %s\n", strings.Join(rss, ", ")); err != nil {
		return err
	}
	// Should be 0: a report means a single delete broke the set-once rule
	// (store/DESIGN.md, "Single deletes").
	misuse := 0.0
	for _, a := range s.cl.metrics {
		text, err := metricsText(context.Background(), a)
		if err != nil {
			return err
		}
		if !strings.Contains(text, "quorumq_pebble_api_misuse_total") {
			return fmt.Errorf("%s: no quorumq_pebble_api_misuse_total", a)
		}
		misuse += promtext.Sum(text, "quorumq_pebble_api_misuse_total")
	}
	_, err := fmt.Fprintf(w, "Pebble API misuse reports (quorumq_pebble_api_misuse_total, all nodes): %.0f\n", misuse)
	return err
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

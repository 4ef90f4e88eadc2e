// Command peers runs quorumq's side-by-side scenarios and the same
// workload on NATS JetStream (3-node R3, sync_interval always) and
// RabbitMQ (3-node quorum queue) in one run, on this machine, and prints
// one table with quorumq's ratio to the better peer (`make bench-peers`).
//
// Workload (as ../shared/peers): 1 KiB bodies, 4 producers with 500
// unconfirmed sends each, 4 consumers acking (deleting) every message;
// then an open loop at 5,000 msgs/s. quorumq also runs batch-10 sends.
// Server CPU and disk bytes come from /proc/PID/stat and /proc/PID/io of
// every server process, sampled around each run.
//
//	go run ./bench/peers -peers $PEERS -bin bin/quorumq [-duration 20s] [-which qq,nats,rmq] [-profile] [-qq-extra --unary]
//
// PEERS is a writable copy of ../shared/peers with rmqbench/rmqbench,
// natsbench/natsbench and bin/nats-server built (the make target does it).
// quorumq's nodes listen on 127.0.0.1 ports 18081-3 (HTTP), 19091-3
// (gRPC), 17001-3 (Raft) and 26101-3 (metrics).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/quorumq/quorumq/bench/internal/promtext"
)

type config struct {
	peers    string
	bin      string
	duration time.Duration
	which    []string
	out      string
	profile  bool
	qqExtra  []string
	qqServe  []string // flags added to each quorumq node's serve command
}

func main() {
	var c config
	var which string
	flag.StringVar(&c.peers, "peers", os.Getenv("PEERS"), "writable copy of ../shared/peers with the benches built (env PEERS)")
	flag.StringVar(&c.bin, "bin", os.Getenv("BIN"), "quorumq binary (env BIN)")
	flag.DurationVar(&c.duration, "duration", envDuration("DURATION", 20*time.Second), "send phase of each quorumq scenario (env DURATION)")
	flag.StringVar(&which, "which", envOr("WHICH", "qq,nats,rmq"), "systems to run, comma-separated: qq, nats, rmq (env WHICH)")
	flag.StringVar(&c.out, "out", os.Getenv("OUT"), "directory for raw outputs and logs (default $PEERS/results/run-<time>)")
	flag.BoolVar(&c.profile, "profile", os.Getenv("PROFILE") != "", "save 15 s CPU profiles of each quorumq node during its runs (env PROFILE)")
	var qqExtra, qqServe string
	flag.StringVar(&qqServe, "qq-serve-flags", os.Getenv("QQ_SERVE_FLAGS"), "flags added to each quorumq node's serve command, space-separated, e.g. --state-without-wal (env QQ_SERVE_FLAGS)")
	flag.StringVar(&qqExtra, "qq-extra", os.Getenv("QQ_EXTRA"), "extra flags of quorumq's bench runs, space-separated, e.g. --unary (env QQ_EXTRA)")
	flag.Parse()
	c.qqExtra = strings.Fields(qqExtra)
	c.qqServe = strings.Fields(qqServe)
	c.which = strings.Split(which, ",")
	if c.peers == "" || (slices.Contains(c.which, "qq") && c.bin == "") || c.duration <= 0 {
		fmt.Fprintln(os.Stderr, "peers: -peers and -bin are required; -duration must be positive")
		os.Exit(2)
	}
	if c.out == "" {
		c.out = filepath.Join(c.peers, "results", "run-"+time.Now().UTC().Format("20060102-150405"))
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, c)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func run(ctx context.Context, c config) error {
	host, _ := os.Hostname()
	fmt.Printf("# side by side %s on %s (%d cores); load average at start %s\n",
		time.Now().UTC().Format(time.RFC3339), host, runtime.NumCPU(), loadavg())
	var qq, nats, rmq systemResults
	var err error
	for _, w := range c.which {
		switch w {
		case "qq":
			qq, err = runQQ(ctx, c)
		case "nats":
			nats, err = runNATS(ctx, c)
		case "rmq":
			rmq, err = runRMQ(ctx, c)
		default:
			err = fmt.Errorf("unknown system %q (qq, nats, rmq)", w)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", w, err)
		}
	}
	fmt.Printf("# load average at end %s; raw outputs in %s\n\n", loadavg(), c.out)
	return table(os.Stdout, qq, nats, rmq)
}

// measure runs cmd, sampling the server pids around it; it returns the
// command's stdout and stderr (also saved under c.out as name.out/.err).
func measure(ctx context.Context, c config, name string, pids []int, argv ...string) (stdout, stderr []byte, o *outcome, err error) {
	before := make([]procSample, len(pids))
	for i, p := range pids {
		before[i] = readProc(p)
	}
	logf("%s: %s", name, strings.Join(argv, " "))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	cmd.Env = append(os.Environ(), "PEERS="+c.peers)
	runErr := cmd.Run()
	o = &outcome{}
	for i, p := range pids {
		a := readProc(p)
		o.ServerCPU += float64(a.ticks-before[i].ticks) / 100 // USER_HZ is 100 on Linux
		o.DiskWritten += a.wrote - before[i].wrote
	}
	stdout, stderr = []byte(so.String()), []byte(se.String())
	_ = os.WriteFile(filepath.Join(c.out, name+".out"), stdout, 0o644)
	_ = os.WriteFile(filepath.Join(c.out, name+".err"), stderr, 0o644)
	if runErr != nil {
		return stdout, stderr, o, fmt.Errorf("%s: %w (see %s)", name, runErr, filepath.Join(c.out, name+".err"))
	}
	return stdout, stderr, o, nil
}

// withProc copies the /proc figures of m into o.
func withProc(o, m *outcome) *outcome {
	o.ServerCPU, o.DiskWritten = m.ServerCPU, m.DiskWritten
	return o
}

// qqCluster is three quorumq nodes on the fixed side-by-side ports.
type qqCluster struct {
	procs []*exec.Cmd
	pids  []int
}

func startQQ(ctx context.Context, c config, dir string) (*qqCluster, error) {
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	peers := "1=127.0.0.1:17001,2=127.0.0.1:17002,3=127.0.0.1:17003"
	cl := &qqCluster{}
	for i := 1; i <= 3; i++ {
		id := strconv.Itoa(i)
		logFile, err := os.Create(filepath.Join(dir, "n"+id+".log"))
		if err != nil {
			cl.stop()
			return nil, err
		}
		args := []string{"serve", "--node-id", id, "--data-dir", filepath.Join(dir, "n"+id),
			"--http-addr", "127.0.0.1:1808" + id, "--grpc-addr", "127.0.0.1:1909" + id, "--raft-addr", "127.0.0.1:1700" + id,
			"--metrics-addr", "127.0.0.1:2610" + id, "--sqs-addr=", "--peers", peers}
		if c.profile {
			args = append(args, "--pprof")
		}
		args = append(args, c.qqServe...)
		cmd := exec.Command(c.bin, args...)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			_ = logFile.Close()
			cl.stop()
			return nil, fmt.Errorf("start node %s: %w", id, err)
		}
		_ = logFile.Close()
		cl.procs = append(cl.procs, cmd)
		cl.pids = append(cl.pids, cmd.Process.Pid)
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for i := 1; i <= 3; i++ {
		url := "http://127.0.0.1:1808" + strconv.Itoa(i) + "/readyz"
		for {
			req, _ := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-rctx.Done():
				cl.stop()
				return nil, fmt.Errorf("node %d not ready: %w", i, rctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return cl, nil
}

// stop sends SIGTERM and kills what has not exited after 15 s.
func (cl *qqCluster) stop() {
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

// profile saves a CPU profile of each node, started 3 s into a run; the
// returned wait function waits for the profiles.
func profileNodes(ctx context.Context, c config, name string) func() {
	if !c.profile {
		return func() {}
	}
	var wg sync.WaitGroup
	for i := 1; i <= 3; i++ {
		wg.Go(func() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(3 * time.Second):
			}
			url := fmt.Sprintf("http://127.0.0.1:1808%d/debug/pprof/profile?seconds=15", i)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				logf("profile n%d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(c.out, fmt.Sprintf("%s-n%d.pprof", name, i)))
			if err != nil {
				return
			}
			defer f.Close()
			_, _ = io.Copy(f, resp.Body)
		})
	}
	return wg.Wait
}

func runQQ(ctx context.Context, c config) (systemResults, error) {
	var res systemResults
	eps := "127.0.0.1:19091,127.0.0.1:19092,127.0.0.1:19093"
	dur := c.duration.String()
	scenarios := []struct {
		name string
		dst  **outcome
		args []string
	}{
		{"qq-batch1", &res.closed, []string{"--batch", "1", "--inflight", "500"}},
		{"qq-batch10", &res.closed10, []string{"--batch", "10", "--inflight", "50"}},
		{"qq-open5k", &res.open5k, []string{"--batch", "1", "--inflight", "500", "--rate", "5000"}},
	}
	for _, s := range scenarios {
		cl, err := startQQ(ctx, c, filepath.Join(c.peers, "qq"))
		if err != nil {
			return res, err
		}
		argv := append([]string{c.bin, "bench", "--endpoint", eps, "--queue", "sbs", "--create",
			"--producers", "4", "--consumers", "4", "--size", "1024", "--duration", dur,
			"--progress-interval", "0", "-o", "json"}, append(s.args, c.qqExtra...)...)
		waitProf := profileNodes(ctx, c, s.name)
		pebble0 := pebbleWritten(ctx)
		out, _, m, err := measure(ctx, c, s.name, cl.pids, argv...)
		pebble := pebbleWritten(ctx).minus(pebble0)
		waitProf()
		cl.stop()
		if err != nil {
			return res, err
		}
		o, err := parseQQ(out)
		if err != nil {
			return res, err
		}
		*s.dst = withProc(o, m)
		(*s.dst).PebbleBytes, (*s.dst).Pebble = pebble.total, pebble
	}
	return res, nil
}

// pebbleBytes is what the nodes' Pebble stores wrote, by where it went.
type pebbleBytes struct{ total, wal, flush, compaction int64 }

func (p pebbleBytes) minus(q pebbleBytes) pebbleBytes {
	return pebbleBytes{p.total - q.total, p.wal - q.wal, p.flush - q.flush, p.compaction - q.compaction}
}

// pebbleWritten sums quorumq_pebble_written_bytes_total, and the WAL, flush
// and compaction parts of it, over the nodes' metrics listeners (0 where a
// node has none).
func pebbleWritten(ctx context.Context) pebbleBytes {
	var sum, wal, flush, compaction float64
	for i := 1; i <= 3; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:2610%d/metrics", i), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		_ = resp.Body.Close()
		sum += promtext.Sum(string(b), "quorumq_pebble_written_bytes_total")
		wal += promtext.Sum(string(b), "quorumq_pebble_wal_written_bytes_total")
		flush += promtext.Sum(string(b), "quorumq_pebble_flush_written_bytes_total")
		compaction += promtext.Sum(string(b), "quorumq_pebble_compaction_written_bytes_total")
	}
	return pebbleBytes{int64(sum), int64(wal), int64(flush), int64(compaction)}
}

// script runs a script of the peers folder.
func script(ctx context.Context, c config, path string, args ...string) error {
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(c.peers, path)}, args...)...)
	cmd.Env = append(os.Environ(), "PEERS="+c.peers)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", path, err, out)
	}
	return nil
}

func pidFiles(c config, paths ...string) ([]int, error) {
	var pids []int
	for _, p := range paths {
		b, err := os.ReadFile(filepath.Join(c.peers, p))
		if err != nil {
			return nil, err
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		pids = append(pids, n)
	}
	return pids, nil
}

// peerRuns runs the closed-loop and the 5k/s scenario of a peer bench.
func peerRuns(ctx context.Context, c config, name, bench string, pids []int, extra ...string) (systemResults, error) {
	var res systemResults
	runs := []struct {
		name string
		dst  **outcome
		args []string
	}{
		{name + "-closed", &res.closed, []string{"-n", "150000", "-timeout", "150s"}},
		{name + "-open5k", &res.open5k, []string{"-n", "100000", "-rate", "5000", "-timeout", "150s"}},
	}
	for _, r := range runs {
		argv := append(append([]string{filepath.Join(c.peers, bench)}, extra...), append(r.args, "-label", r.name)...)
		_, errOut, m, err := measure(ctx, c, r.name, pids, argv...)
		if err != nil {
			return res, err
		}
		o, err := parsePeer(errOut)
		if err != nil {
			return res, err
		}
		*r.dst = withProc(o, m)
	}
	return res, nil
}

func runNATS(ctx context.Context, c config) (systemResults, error) {
	for i := 1; i <= 3; i++ {
		_ = os.RemoveAll(filepath.Join(c.peers, "nats", "c"+strconv.Itoa(i), "store"))
	}
	if err := script(ctx, c, "nats/start-cluster.sh", "always"); err != nil {
		return systemResults{}, err
	}
	defer func() { _ = script(context.Background(), c, "nats/stop.sh", "c1", "c2", "c3") }()
	pids, err := pidFiles(c, "nats/c1/pid", "nats/c2/pid", "nats/c3/pid")
	if err != nil {
		return systemResults{}, err
	}
	return peerRuns(ctx, c, "nats", "natsbench/natsbench", pids,
		"-urls", "nats://127.0.0.1:4223,nats://127.0.0.1:4224,nats://127.0.0.1:4225", "-r", "3")
}

func runRMQ(ctx context.Context, c config) (systemResults, error) {
	for i := 1; i <= 3; i++ {
		_ = os.RemoveAll(filepath.Join(c.peers, "rmq", "n"+strconv.Itoa(i), "mnesia"))
	}
	defer func() {
		for _, i := range []string{"3", "2", "1"} {
			_ = script(context.Background(), c, "rmq/stop-node.sh", i)
		}
		_ = script(context.Background(), c, "rmq/stop-epmd.sh")
	}()
	if err := script(ctx, c, "rmq/start-epmd.sh"); err != nil {
		return systemResults{}, err
	}
	for _, i := range []string{"1", "2", "3"} {
		if err := script(ctx, c, "rmq/start-node.sh", i); err != nil {
			return systemResults{}, err
		}
	}
	join := `source $PEERS/rmq/env.sh; for i in 2 3; do n=rabbit$i@localhost
  $RMQBIN/rabbitmqctl -n $n stop_app && $RMQBIN/rabbitmqctl -n $n join_cluster rabbit1@localhost && $RMQBIN/rabbitmqctl -n $n start_app || exit 1; done`
	cmd := exec.CommandContext(ctx, "bash", "-c", join)
	cmd.Env = append(os.Environ(), "PEERS="+c.peers)
	if out, err := cmd.CombinedOutput(); err != nil {
		return systemResults{}, fmt.Errorf("join cluster: %w: %s", err, out)
	}
	pids, err := pidFiles(c, "rmq/n1/pid", "rmq/n2/pid", "rmq/n3/pid")
	if err != nil {
		return systemResults{}, err
	}
	return peerRuns(ctx, c, "rmq", "rmqbench/rmqbench", pids, "-type", "quorum")
}

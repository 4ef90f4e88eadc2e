// Package chaos is the process tier of the fault-injection suite (issue 9):
// real `quorumq serve` processes on 127.0.0.1, built with -tags chaos so
// that --fault-injection can cut nodes off from each other, under a seeded
// schedule of kill -9 (leader, follower, majority, all), SIGSTOP longer than
// the visibility timeouts, partitions, restarts, a wiped node (which
// rejoins with --join under a new Raft id while its old id is removed, as
// an operator repairs a lost disk) and membership changes
// (membership_test.go: a running node drained and removed, then joining
// empty; a wiped node's replicas moved to its new id with MoveReplica),
// while producers and consumers record every call; a checker reads the
// history and every replica's state.
// Topics ride along (topic_workload_test.go): a publisher with idempotency
// keys, a consumer of two subscribed queues (one filtered by tag, one
// FIFO) and a group reading each partition, sometimes crashing before it
// commits; the topic checker (topic_history_test.go) wants every
// acknowledged publish in its log, the group's reads in offset order with
// no gap (again only after a crash or an unknown commit), and every log
// message in each matching queue exactly once (FIFO: in order per key).
//
// TestChaosSmoke (one short fixed schedule) runs in `make test`; `make
// chaos` runs TestChaos (chaos_long_test.go, build tag chaos) over
// CHAOS_RUNS random schedules of CHAOS_DURATION each. CHAOS_SEED=n replays
// one schedule; CHAOS_NODES (3 or 5) and CHAOS_SHARDS (default 4 for odd seeds, 1 for even) size the
// cluster. A seed fixes the schedule and the workload's choices, not the
// machine's interleavings.
package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// chaosBin is a quorumq built with -tags chaos ($QUORUMQ_CHAOS_BIN or
// built here); prodBin a normal build ($QUORUMQ_BIN or built here).
var chaosBin, prodBin string

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "quorumq-chaos-bin")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	build := func(env, name string, tags ...string) (string, error) {
		if p := os.Getenv(env); p != "" {
			return p, nil
		}
		out := filepath.Join(dir, name)
		args := append([]string{"build", "-o", out}, tags...)
		args = append(args, "github.com/quorumq/quorumq/cmd/quorumq")
		if b, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
		}
		return out, nil
	}
	if chaosBin, err = build("QUORUMQ_CHAOS_BIN", "quorumq-chaos", "-tags", "chaos"); err != nil {
		return 0, err
	}
	if prodBin, err = build("QUORUMQ_BIN", "quorumq"); err != nil {
		return 0, err
	}
	return m.Run(), nil
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// TestProductionBinaryRefusesFaultInjection: a normal build exits with a
// clear error instead of serving the fault endpoint.
func TestProductionBinaryRefusesFaultInjection(t *testing.T) {
	dir := t.TempDir()
	addr := func() string {
		a, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	cmd := exec.Command(prodBin, "serve", "--fault-injection", "--data-dir", dir,
		"--http-addr", addr(), "--grpc-addr", addr(), "--raft-addr", addr(), "--metrics-addr=", "--sqs-addr=")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		defer close(done)
		out, err = cmd.CombinedOutput()
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("a production build served with --fault-injection; output:\n%s", out)
	}
	if err == nil || !strings.Contains(string(out), "built without -tags chaos") {
		t.Fatalf("want a refusal naming -tags chaos; err %v, output:\n%s", err, out)
	}
	if _, statErr := os.Stat(filepath.Join(dir, "pebble")); statErr == nil {
		t.Fatalf("the refused node opened its data directory")
	}
}

// TestChaosSmoke runs one short schedule with a fixed script (a leader
// killed, a leader partitioned away, a follower paused) through the whole
// pipeline: workload, heal, offline replica comparison, drain, checker.
func TestChaosSmoke(t *testing.T) {
	seed := uint64(envInt(t, "CHAOS_SEED", 1))
	dir, err := runDir(baseDir(t), seed)
	if err != nil {
		t.Fatal(err)
	}
	res := runSchedule(runConfig{bin: chaosBin, dir: dir, seed: seed, nodes: 3, shards: envInt(t, "CHAOS_SHARDS", 1),
		duration: envDuration(t, "CHAOS_SMOKE_DURATION", 9*time.Second), maxVis: time.Second, short: true,
		script: []episode{killLeader, isolateLeader, pauseFollower}, logf: t.Logf})
	t.Logf("%s", res.report())
	if len(res.violations) > 0 || len(res.harnessErrs) > 0 {
		t.Fatalf("seed %d: %d violations, %d harness errors (logs kept in %s):\n%s", seed, len(res.violations), len(res.harnessErrs), dir, res.report())
	}
	if res.counts["sends acknowledged"] == 0 || res.counts["messages received"] == 0 {
		t.Fatalf("the workload did nothing: %s", fmtCounts(res.counts))
	}
	if res.counts["publishes acknowledged"] == 0 || res.counts["fan-out copies received"] == 0 || res.counts["group reads"] == 0 {
		t.Fatalf("the topic workload did nothing: %s", fmtCounts(res.counts))
	}
	_ = os.RemoveAll(dir)
}

// baseDir holds the schedules' data and node logs: $CHAOS_DIR, or a new
// temporary directory. A passing schedule's directory is removed; a
// failing one's is kept for its logs.
func baseDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("CHAOS_DIR"); d != "" {
		return d
	}
	d, err := os.MkdirTemp("", "quorumq-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

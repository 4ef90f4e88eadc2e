package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Seeds: TestSim3Nodes runs seeds 1..30 and TestSim5Nodes 1001..1020 by
// default. A failing run names its seed; replay it with
//
//	QUORUMQ_SIM_SEED=<seed> go test ./tests/sim -run TestSim3Nodes -v
//
// (TestSim5Nodes for a five-node seed). The seed fixes the fault schedule
// (membership changes included), the workload's choices and the clock
// skews; goroutine interleavings and timer firings are the machine's, so a
// replay repeats the schedule, not every interleaving. QUORUMQ_SIM_SEEDS=<n> changes the number of seeds.
func TestSim3Nodes(t *testing.T) { runSeeds(t, 3, 1, 30) }

func TestSim5Nodes(t *testing.T) { runSeeds(t, 5, 1001, 20) }

func runSeeds(t *testing.T, nodes int, base uint64, n int) {
	if v := os.Getenv("QUORUMQ_SIM_SEEDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	seeds := make([]uint64, n)
	for i := range seeds {
		seeds[i] = base + uint64(i)
	}
	if v := os.Getenv("QUORUMQ_SIM_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seeds = []uint64{s}
	}
	var mu sync.Mutex
	total := map[string]int{}
	var maxLeader time.Duration
	t.Run("seeds", func(t *testing.T) {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
				t.Parallel()
				sum, leaderAfter := runSim(t, nodes, seed)
				mu.Lock()
				for k, v := range sum {
					total[k] += v
				}
				maxLeader = max(maxLeader, leaderAfter)
				mu.Unlock()
			})
		}
	})
	t.Logf("%d nodes, %d seeds: %s; slowest leader after healing %v", nodes, len(seeds), fmtSummary(total), maxLeader)
	if d := total["redeliveries"]; total["received"] > 0 {
		t.Logf("duplicate deliveries: %d of %d receives (%.1f%%)", d, total["received"], 100*float64(d)/float64(total["received"]))
	}
}

// schedule is one run's fault events, for the failure report.
type schedule struct {
	mu     sync.Mutex
	start  time.Time
	events []string
}

func (s *schedule) add(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, fmt.Sprintf("%6.3fs ", time.Since(s.start).Seconds())+fmt.Sprintf(format, args...))
}

func (s *schedule) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.events, "\n")
}

// runSim runs one seeded simulation and returns its summary and how long
// the cluster took to agree on a leader after healing.
func runSim(t *testing.T, nodes int, seed uint64) (map[string]int, time.Duration) {
	const (
		tick       = 10 * time.Millisecond
		faultPhase = 1500 * time.Millisecond
		producers  = 2
		consumers  = 2
	)
	rng := rand.New(rand.NewPCG(seed, 0x51))
	retain := uint64(1000)
	if rng.IntN(2) == 0 {
		retain = 20 // truncate the log early: lagging members get snapshots
	}
	sched := &schedule{start: time.Now()}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d (%d nodes): %s\nschedule:\n%s\nreplay: QUORUMQ_SIM_SEED=%d go test ./tests/sim -run TestSim%dNodes -v",
			seed, nodes, fmt.Sprintf(format, args...), sched, seed, nodes)
	}
	c, err := newCluster(seed, nodes, tick, retain, t.Logf)
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	defer c.stopAll()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w := &workload{c: c, h: newHistory(), seed: seed, vis: 150 + int64(rng.IntN(350)), stopLoad: make(chan struct{}), stopRly: make(chan struct{})}
	if rng.IntN(3) > 0 {
		w.maxRecv = int32(1 + rng.IntN(3))
	}
	if rng.IntN(2) == 0 {
		w.retry = &storepb.RetryPolicy{BaseMs: 10 + int64(rng.IntN(40)), FactorMilli: 2000, MaxMs: 400, JitterMilli: int64(rng.IntN(2) * 500)}
	}
	sched.add("retain %d, visibility %d ms, max receives %d, retry %v", retain, w.vis, w.maxRecv, w.retry)
	if err := w.setup(ctx, rng); err != nil {
		fail("%v", err)
	}
	if err := w.setupLimits(ctx, rng); err != nil {
		fail("%v", err)
	}
	w.relayWG.Add(1)
	go w.relay(ctx)
	for p := range producers {
		w.wg.Add(1)
		go w.producer(ctx, p)
	}
	for k := range consumers {
		w.wg.Add(1)
		go w.consumer(ctx, k)
	}
	w.wg.Add(1)
	go w.superseder(ctx)
	w.wg.Add(1)
	go w.limits(ctx)

	// The fault schedule. Crashes keep a majority of every configuration
	// the group may be in up (a power loss of all aside); membership
	// changes (membership_test.go) start at planned times, one at a time.
	m := newMembers(c, sched)
	m.start()
	defer m.stopCoordinator()
	mrng := rand.New(rand.NewPCG(seed, 0x3e))
	planned := 1 + mrng.IntN(2)
	planAt := time.Now().Add(time.Duration(mrng.IntN(500)) * time.Millisecond)
	restartAt := map[uint64]time.Time{}
	powerLoss := rng.IntN(3) == 0
	crashes := 0
	// disturb crashes or cuts off leader l right after a membership change
	// was proposed.
	disturb := func(l uint64) {
		if _, up := c.status(l); up && m.canCrash(l) && mrng.IntN(2) == 0 {
			lose := mrng.IntN(2) == 0
			c.crash(lose, 0, l)
			crashes++
			restartAt[l] = time.Now().Add(time.Duration(50+mrng.IntN(300)) * time.Millisecond)
			sched.add("mid-change: crash leader %d (power loss %v)", l, lose)
		} else {
			c.partition(l)
			sched.add("mid-change: cut off leader %d", l)
		}
		m.count("leader disturbed mid-change")
	}
	end := time.Now().Add(faultPhase)
	for time.Now().Before(end) {
		select {
		case <-time.After(time.Duration(40+rng.IntN(160)) * time.Millisecond):
		case l := <-m.mid:
			disturb(l)
		}
		for id, at := range restartAt {
			if time.Now().After(at) {
				delete(restartAt, id)
				if c.node(id) == nil {
					continue // retired or wiped meanwhile
				}
				if err := c.start(id); err != nil {
					fail("restart: %v", err)
				}
				sched.add("restart node %d", id)
			}
		}
		m.checkImpostors()
		if mrng.IntN(3) == 0 { // removed replicas linger a while
			for _, id := range m.takeRemoved() {
				c.retire(id)
				sched.add("retire removed node %d", id)
			}
		}
		if mrng.IntN(4) == 0 {
			m.retireImpostors()
		}
		if planned > 0 && time.Now().After(planAt) && m.idle() && m.plan(mrng) {
			planned--
			planAt = time.Now().Add(time.Duration(100+mrng.IntN(400)) * time.Millisecond)
		}
		up := c.upIDs()
		ids := c.idList()
		switch n := rng.IntN(100); {
		case n < 14:
			k := 1 + rng.IntN(max(len(ids)/2, 1))
			perm := rng.Perm(len(ids))
			var side []uint64
			for _, i := range perm[:k] {
				side = append(side, ids[i])
			}
			if l := c.leader(); l != 0 && rng.IntN(2) == 0 {
				side = []uint64{l}
			}
			c.partition(side...)
			sched.add("partition %v from the rest", side)
		case n < 24:
			c.heal()
			sched.add("heal network")
		case n < 34:
			pct := []int{5, 20, 40}[rng.IntN(3)]
			c.faults.mu.Lock()
			c.faults.dropPct = pct
			c.faults.mu.Unlock()
			sched.add("drop %d%% of messages", pct)
		case n < 41:
			pct := []int{10, 30}[rng.IntN(2)]
			c.faults.mu.Lock()
			c.faults.dupPct = pct
			c.faults.mu.Unlock()
			sched.add("duplicate %d%% of messages", pct)
		case n < 49:
			pct, d := []int{20, 50}[rng.IntN(2)], time.Duration(2+rng.IntN(30))*time.Millisecond
			c.faults.mu.Lock()
			c.faults.delayPct, c.faults.delayMax = pct, d
			c.faults.mu.Unlock()
			sched.add("delay (reorder) %d%% of messages by up to %v", pct, d)
		case n < 70:
			if len(up) == 0 {
				break
			}
			id := up[rng.IntN(len(up))]
			if l := c.leader(); l != 0 && rng.IntN(2) == 0 {
				id = l
			}
			if !m.canCrash(id) {
				break
			}
			lose, pct := rng.IntN(3) > 0, 0
			if lose && rng.IntN(3) == 0 {
				pct = 30
			}
			c.crash(lose, pct, id)
			crashes++
			restartAt[id] = time.Now().Add(time.Duration(50+rng.IntN(350)) * time.Millisecond)
			sched.add("crash node %d (power loss %v, unsynced kept %d%%)", id, lose, pct)
		case n < 76 && powerLoss:
			powerLoss = false
			c.crash(true, 0, up...)
			crashes += len(up)
			for _, id := range ids {
				restartAt[id] = time.Now().Add(time.Duration(50+rng.IntN(200)) * time.Millisecond)
			}
			sched.add("power loss of all nodes %v", up)
		}
	}

	// Heal: network faults off, every node back up; a leader must follow
	// within 3 election timeouts.
	close(w.stopLoad)
	m.paused.Store(true)
	c.heal()
	m.retireAll()
	for _, id := range c.idList() {
		if err := c.start(id); err != nil {
			fail("restart: %v", err)
		}
	}
	healed := time.Now()
	sched.add("healed; all nodes up")
	// An election timeout is counted in ticks, and on a loaded machine the
	// hosts' tickers fire late: a ticker at their interval counts the ticks
	// the machine let pass, so the limit holds under load too.
	tk := time.NewTicker(c.tick)
	defer tk.Stop()
	ticks := 0
	var leaderAfter time.Duration
	for {
		if c.agreedLeader() != 0 {
			leaderAfter = time.Since(healed)
			break
		}
		if time.Since(healed) > 10*time.Second {
			fail("no leader 10s after healing")
		}
		select {
		case <-tk.C:
			ticks++
		case <-time.After(time.Millisecond):
		}
	}
	sched.add("leader %d after %v (%d ticks)", c.agreedLeader(), leaderAfter, ticks)
	m.paused.Store(false)
	if limit := 3 * c.electionTicks(); ticks > limit {
		fail("leader only %v (%d ticks) after healing (limit: 3 election timeouts = %d ticks)", leaderAfter, ticks, limit)
	}
	w.wg.Wait()
	sched.add("workload stopped")
	// The change under way finishes or rolls back; the configuration is
	// what the changes led to, and never joint.
	if err := m.settle(10 * time.Second); err != nil {
		fail("%v", err)
	}
	sched.add("membership settled: voters %v", c.idList())

	// The outbox empties; then every replica converges and holds every
	// acknowledged message that no delete may have removed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		l := c.leader()
		if l != 0 {
			if _, _, outbox, err := w.pending(l); err == nil && outbox == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			fail("outbox not empty 10s after healing")
		}
		time.Sleep(tick)
	}
	if _, err := c.converged(10 * time.Second); err != nil {
		fail("before the drain: %v", err)
	}
	want := w.h.undeleted()
	for _, id := range c.idList() {
		have, _, _, err := w.pending(id)
		if err != nil {
			fail("node %d: %v", id, err)
		}
		for _, m := range want {
			if have[m] == "" {
				fail("node %d: acknowledged message %s (never deleted) is not in its state", id, m)
			}
		}
	}

	// Drain, check the history, and converge again.
	if err := w.drain(ctx, rng); err != nil {
		fail("%v", err)
	}
	close(w.stopRly)
	w.relayWG.Wait()
	leader := c.leader()
	violations, summary := w.h.check(func(id string) bool {
		have, _, _, _ := w.pending(leader)
		return have[id] != ""
	})
	violations = append(violations, c.electionViolations()...)
	if len(violations) > 0 {
		fail("%d violations:\n%s", len(violations), strings.Join(violations, "\n"))
	}
	applied, err := c.converged(10 * time.Second)
	if err != nil {
		fail("after the drain: %v", err)
	}
	summary["crashes"] += crashes
	for k, v := range m.counts {
		summary[k] += v
	}
	summary["runs"]++
	_, delivered, dropped := c.delivered()
	summary["raft messages delivered"] += int(delivered)
	summary["raft messages dropped"] += int(dropped)
	snaps, _ := c.net.SnapshotCounts()
	summary["snapshots installed"] += int(snaps)
	t.Logf("seed %d: applied %d, leader after healing %v; %s\nschedule:\n%s", seed, applied, leaderAfter, fmtSummary(summary), sched)
	return summary, leaderAfter
}

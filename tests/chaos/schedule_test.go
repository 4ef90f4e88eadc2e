package chaos

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// episode is one kind of fault; a schedule is a seeded sequence of them,
// each injected, held, then repaired, with quiet gaps between.
type episode string

const (
	killLeader    episode = "kill -9 leader"
	killFollower  episode = "kill -9 follower"
	killMajority  episode = "kill -9 majority"
	killAll       episode = "kill -9 all"
	pauseLeader   episode = "SIGSTOP leader"
	pauseFollower episode = "SIGSTOP follower"
	isolateLeader episode = "partition leader"
	partitionMin  episode = "partition minority"
	wipeFollower  episode = "wipe follower"
	wipeLeader    episode = "wipe leader"
	isolateKill   episode = "partition leader + kill -9 new leader"
	pauseKill     episode = "SIGSTOP leader + kill -9 follower"
	drainRejoin   episode = "drain, remove, rejoin empty" // membership_test.go
	wipeMove      episode = "wipe, rejoin, move replicas"
)

var allEpisodes = []episode{killLeader, killFollower, killMajority, killAll, pauseLeader, pauseFollower, isolateLeader, partitionMin,
	wipeFollower, wipeLeader, isolateKill, pauseKill, drainRejoin, wipeMove}

// runConfig is one schedule's setup.
type runConfig struct {
	bin      string
	dir      string
	seed     uint64
	nodes    int
	shards   int
	duration time.Duration // of the fault phase
	script   []episode     // fixed episodes (the smoke); nil: random
	short    bool          // hold each fault for its shortest time (the smoke)
	maxVis   time.Duration // queue visibility timeouts are drawn in [1s, maxVis]
	logf     func(format string, args ...any)
}

// runResult is what one schedule did and found.
type runResult struct {
	seed        uint64
	schedule    []string
	counts      map[string]int
	dupReasons  map[string]int
	notes       []string // unexplained redeliveries, in detail
	violations  []string
	failovers   []time.Duration // fault to a leader on the surviving majority
	restarts    []time.Duration // restart of a majority (or all) to a leader
	catchUps    []time.Duration // wiped node back to the leader's commit index
	healLeader  time.Duration   // final heal to an agreed leader
	converge    time.Duration   // final heal to equal applied indexes
	episodes    map[episode]int
	harnessErrs []string // the harness could not do what it meant to (not product violations)
}

type scheduleLog struct {
	mu    sync.Mutex
	start time.Time
	lines []string
	logf  func(string, ...any)
}

func (s *scheduleLog) add(format string, args ...any) {
	line := fmt.Sprintf("%6.2fs ", time.Since(s.start).Seconds()) + fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.lines = append(s.lines, line)
	s.mu.Unlock()
	s.logf("%s", line)
}

func runSchedule(cfg runConfig) (res runResult) {
	res = runResult{seed: cfg.seed, episodes: map[episode]int{}}
	rng := rand.New(rand.NewPCG(cfg.seed, 0xc4a05))
	sched := &scheduleLog{start: time.Now(), logf: cfg.logf}
	defer func() { res.schedule = sched.lines }()
	harness := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		res.harnessErrs = append(res.harnessErrs, msg)
		sched.add("HARNESS: %s", msg)
	}
	violate := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		res.violations = append(res.violations, msg)
		sched.add("VIOLATION: %s", msg)
	}

	if cfg.maxVis < time.Second {
		cfg.maxVis = 5 * time.Second
	}
	queueVis := time.Second + time.Duration(rng.Int64N(int64(cfg.maxVis-time.Second)+1)).Truncate(time.Millisecond)
	maxRecv := int32(1 + rng.IntN(3))
	sched.add("seed %d: %d nodes, %d shards, queue visibility %v, max receives %d, DLQ, fault phase %v, dir %s",
		cfg.seed, cfg.nodes, cfg.shards, queueVis, maxRecv, cfg.duration, cfg.dir)
	c, err := startCluster(cfg, sched)
	if err != nil {
		harness("%v", err)
		return res
	}
	defer c.stopAll()
	if _, err := c.waitLeaders(c.ids, 30*time.Second); err != nil {
		harness("initial election: %v", err)
		return res
	}
	w := &workload{c: c, h: newHistory(), seed: cfg.seed, mainQ: "main", deadQ: "dlq", slowQ: "slow", maxRecv: maxRecv,
		queueVis: queueVis, maxVis: cfg.maxVis, producers: 2, consumers: 4, tw: newTopicWork(cfg.shards)}
	if err := w.createQueues(cfg.shards); err != nil {
		harness("%v", err)
		return res
	}
	if err := w.createTopic(); err != nil {
		harness("%v", err)
		return res
	}
	w.start()
	defer w.stop()

	// The fault phase: episodes until the duration is spent.
	end := time.Now().Add(cfg.duration)
	for i := 0; time.Now().Before(end); i++ {
		gap := time.Duration(500+rng.IntN(1500)) * time.Millisecond
		time.Sleep(gap)
		if !time.Now().Before(end) {
			break
		}
		var ep episode
		if cfg.script != nil {
			if i >= len(cfg.script) {
				time.Sleep(time.Until(end))
				break
			}
			ep = cfg.script[i]
		} else {
			ep = allEpisodes[rng.IntN(len(allEpisodes))]
		}
		res.episodes[ep]++
		if err := runEpisode(c, rng, ep, cfg, sched, &res); err != nil {
			harness("%s: %v", ep, err)
		}
	}

	// Heal: workload off, network healed, every node running; then a leader
	// must follow within 3 election timeouts.
	w.stop()
	sched.add("workload stopped: %s", fmtCounts(w.h.ops))
	if err := c.heal(); err != nil {
		harness("heal: %v", err)
	}
	for _, id := range c.idsIn(paused) {
		if err := c.resume(id); err != nil {
			harness("resume: %v", err)
		}
	}
	for _, id := range c.idsIn(down) {
		if err := c.start(id); err != nil {
			harness("restart: %v", err)
			return res
		}
	}
	if err := c.heal(); err != nil {
		harness("heal: %v", err)
	}
	res.healLeader, err = c.waitLeaders(c.ids, 30*time.Second)
	sched.add("healed: leader after %v", res.healLeader.Round(time.Millisecond))
	if err != nil {
		violate("liveness: %v", err)
		return res
	} else if res.healLeader > 3*electionTimeout {
		violate("liveness: leader %v after healing (limit 3 election timeouts = %v)", res.healLeader.Round(time.Millisecond), 3*electionTimeout)
	}
	applied, conv, err := c.converged(30 * time.Second)
	res.converge = conv
	if err != nil {
		violate("%v", err)
		return res
	}
	sched.add("converged after %v: applied %v", conv.Round(time.Millisecond), applied)

	// A read through each node counts at least every acknowledged message
	// that no delete may have removed (more: unknown sends and deletes).
	want := w.h.undeleted()
	for _, id := range c.ids {
		var depth int64
		for _, q := range w.queues() {
			d, err := w.queueDepth(id, q)
			if err != nil {
				violate("read through node %d after healing: %v", id, err)
			}
			depth += d
		}
		if depth < int64(len(want)) {
			violate("read through node %d: %d messages stored, but %d acknowledged messages were never deleted", id, depth, len(want))
		}
	}

	// Every replica, read offline: equal state, and every acknowledged
	// message that no delete may have removed.
	diffs, states, err := c.offlineCompare(want, w.flush, sched)
	if err != nil {
		harness("%v", err)
		return res
	}
	for _, d := range diffs {
		violate("replicas before the drain: %s", d)
	}
	sched.add("replicas compared before the drain: %d acknowledged messages held by each, applied %v", len(want), states[c.ids[0]].applied)
	restarted := time.Now()
	for _, id := range c.ids {
		if err := c.start(id); err != nil {
			harness("restart after the offline read: %v", err)
			return res
		}
	}
	d, err := c.waitLeaders(c.ids, 30*time.Second)
	if err != nil {
		violate("liveness after a full restart: %v", err)
		return res
	}
	res.restarts = append(res.restarts, time.Since(restarted))
	sched.add("restarted all: leader after %v (%v after the last process started)", time.Since(restarted).Round(time.Millisecond), d.Round(time.Millisecond))

	// Drain (the topic's groups and fan-out copies first), check the
	// history, converge, compare the final states.
	if err := w.drainTopic(60 * time.Second); err != nil {
		violate("%v", err)
	}
	if err := w.drain(60 * time.Second); err != nil {
		violate("%v", err)
	}
	drainEnd := time.Now()
	topicQueues := map[string]bool{}
	for _, s := range w.tw.subs {
		topicQueues[s.queue] = true
	}
	cr := w.h.check(checkConfig{mainQueue: w.mainQ, deadQueue: w.deadQ, maxReceives: maxRecv, drainEnd: drainEnd, topicQueues: topicQueues})
	res.counts, res.dupReasons, res.notes = cr.counts, cr.dupReasons, cr.notes
	w.h.mu.Lock()
	recvs := slices.Clone(w.h.recvs)
	w.h.mu.Unlock()
	cr.violations = append(cr.violations, w.tw.h.check(topicCheck{partitions: w.tw.partitions, groups: w.tw.groups, subs: w.tw.subs}, recvs, res.counts)...)
	for _, n := range cr.notes {
		sched.add("NOTE: %s", n)
	}
	for _, v := range cr.violations {
		violate("%s", v)
	}
	diffs, states, err = c.offlineCompare(nil, w.flush, sched)
	if err != nil {
		harness("after the drain: %v", err)
		return res
	}
	for _, d := range diffs {
		violate("replicas after the drain: %s", d)
	}
	for _, id := range c.ids {
		if n := len(states[id].ids); n > 0 {
			violate("node %d holds %d messages after the drain emptied every queue", id, n)
		}
	}
	sched.add("done: applied %v; %d violations", states[c.ids[0]].applied, len(res.violations))
	return res
}

// startCluster starts a new cluster. The ports are picked free, but
// another process on the machine may take one before a node binds it: then
// the cluster starts again on new ports (at most 3 times).
func startCluster(cfg runConfig, sched *scheduleLog) (*cluster, error) {
	var errs []error
	for attempt := 1; attempt <= 3; attempt++ {
		c, err := newCluster(cfg.bin, cfg.dir, cfg.nodes, cfg.shards, cfg.logf)
		if err != nil {
			return nil, err
		}
		for _, id := range c.ids {
			if err = c.start(id); err != nil {
				break
			}
		}
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		sched.add("  cluster start %d failed (%v): again on new ports", attempt, err)
		c.stopAll()
		for _, id := range c.ids {
			if err := os.RemoveAll(c.nodes[id].dir); err != nil {
				return nil, fmt.Errorf("remove %s: %w", c.nodes[id].dir, err)
			}
		}
	}
	return nil, fmt.Errorf("cluster start: %w", errors.Join(errs...))
}

// createQueues makes the dead-letter queue, the main queue (partitioned over
// the shards) and the superseder's queue, retrying until the cluster answers.
func (w *workload) createQueues(shards int) error {
	rng := rand.New(rand.NewPCG(w.seed, 600))
	mk := func(name string, a *qv1.QueueAttributes) error {
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel, api := w.api(rng)
			_, err := api.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: name, Attributes: a})
			cancel()
			if err == nil {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("create queue %s: %w", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	vis := durationpb.New(w.queueVis)
	if err := mk(w.deadQ, &qv1.QueueAttributes{VisibilityTimeout: vis}); err != nil {
		return err
	}
	main := &qv1.QueueAttributes{VisibilityTimeout: vis, DeadLetter: &qv1.DeadLetterPolicy{Queue: w.deadQ, MaxReceiveCount: w.maxRecv}}
	if shards > 1 {
		main.Partitions = int32(shards)
	}
	if err := mk(w.mainQ, main); err != nil {
		return err
	}
	if err := mk(flushQ, &qv1.QueueAttributes{Partitions: max(1, int32(shards))}); err != nil {
		return err
	}
	return mk(w.slowQ, &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(time.Second)})
}

// flushQ is an always empty queue: purging it makes an entry on every shard
// that changes nothing (see offlineCompare).
const flushQ = "flush"

// flush purges flushQ (retrying until the cluster answers).
func (w *workload) flush() error {
	rng := rand.New(rand.NewPCG(w.seed, 700))
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel, api := w.api(rng)
		_, err := api.PurgeQueue(ctx, &qv1.PurgeQueueRequest{Name: flushQ})
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("purge %s: %w", flushQ, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killAll kills every node with SIGKILL, in parallel.
func (c *cluster) killAll() error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.ids))
	for i, id := range c.ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.kill(id, false)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// offlineCompare waits until the replicas report equal applied indexes,
// kills every node at once (a graceful stop would move leaderships and so
// append entries while the nodes stop), and compares their data read
// offline. Apply batches are written without sync: a replica's last ones
// become durable with its next synced Raft write, and a killed node replays
// them at restart. So once the replicas converge (after two flushes,
// purges of an empty queue) every node syncs its WAL before the kill, and
// the replicas are compared at the applied index they have on disk. A
// leadership moved by the nodes' balancer appends an entry, so it first
// waits until the leaders are spread. If an entry still slipped in (the
// applied indexes read offline differ), the nodes restart and it tries
// again, up to 5 times. The nodes are down afterwards.
func (c *cluster) offlineCompare(want map[string]string, flush func() error, sched *scheduleLog) ([]string, map[uint64]replicaState, error) {
	for attempt := 1; ; attempt++ {
		if err := c.waitBalanced(30 * time.Second); err != nil {
			return nil, nil, err
		}
		if _, _, err := c.converged(30 * time.Second); err != nil {
			return nil, nil, err
		}
		for range 2 {
			if err := flush(); err != nil {
				return nil, nil, err
			}
		}
		if _, _, err := c.converged(30 * time.Second); err != nil {
			return nil, nil, err
		}
		if err := c.syncAll(); err != nil {
			return nil, nil, err
		}
		if err := c.killAll(); err != nil {
			return nil, nil, err
		}
		diffs, states, err := c.compareReplicas(want)
		if err != nil {
			return nil, nil, err
		}
		same := true
		for _, id := range c.ids {
			if !maps.Equal(states[id].applied, states[c.ids[0]].applied) {
				same = false
			}
		}
		if same {
			return diffs, states, nil
		}
		if attempt == 5 {
			// States at different indexes cannot be compared.
			return nil, nil, fmt.Errorf("replicas read offline 5 times, their applied indexes differed each time (last: %v)", appliedOf(states))
		}
		sched.add("  offline read %d: applied indexes differ (an entry arrived while the nodes stopped); restart and read again", attempt)
		for _, id := range c.ids {
			if err := c.start(id); err != nil {
				return nil, nil, err
			}
		}
		if _, err := c.waitLeaders(c.ids, 30*time.Second); err != nil {
			return nil, nil, err
		}
	}
}

func appliedOf(states map[uint64]replicaState) map[uint64]map[uint64]uint64 {
	out := map[uint64]map[uint64]uint64{}
	for id, st := range states {
		out[id] = st.applied
	}
	return out
}

// waitBalanced waits until no node leads more than its share of the shards
// (shards / nodes, rounded up): the nodes' leader balancer then moves no
// leadership, and so appends no entry, while offlineCompare stops them.
func (c *cluster) waitBalanced(limit time.Duration) error {
	if c.shards < 2 {
		return nil
	}
	share := (c.shards + len(c.ids) - 1) / len(c.ids)
	deadline := time.Now().Add(limit)
	for {
		led := map[uint64]int{}
		if v, err := c.view(c.ids[0], time.Second); err == nil && len(v.leader) == c.shards {
			for _, l := range v.leader {
				led[l]++
			}
			if led[0] == 0 && slices.Max(slices.Collect(maps.Values(led))) <= share {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leaders not spread over the nodes after %v: %v", limit, led)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// majority is the smallest majority of n.
func majority(n int) int { return n/2 + 1 }

func without(ids []uint64, drop ...uint64) []uint64 {
	var out []uint64
	for _, id := range ids {
		if !slices.Contains(drop, id) {
			out = append(out, id)
		}
	}
	return out
}

// runEpisode injects ep, holds it, repairs it, and measures recovery.
func runEpisode(c *cluster, rng *rand.Rand, ep episode, cfg runConfig, sched *scheduleLog, res *runResult) error {
	maxVis := cfg.maxVis
	hold := func(lo, hi time.Duration) time.Duration {
		d := lo + time.Duration(rng.Int64N(int64(hi-lo)+1)).Truncate(time.Millisecond)
		if cfg.short {
			return lo
		}
		return d
	}
	leader := c.leader()
	all := c.ids
	var follower uint64
	if others := without(all, leader); len(others) > 0 {
		follower = others[rng.IntN(len(others))]
	}
	// failover measures how long the surviving majority takes to agree on
	// a leader among themselves.
	failover := func(survivors []uint64) {
		if len(survivors) < majority(len(all)) {
			return
		}
		d, err := c.waitLeaders(survivors, 15*time.Second)
		if err != nil {
			sched.add("  no leader on %v within 15s", survivors)
			return
		}
		res.failovers = append(res.failovers, d)
		sched.add("  new leader on %v after %v", survivors, d.Round(time.Millisecond))
	}
	restart := func(ids []uint64) error {
		for _, id := range ids {
			if err := c.start(id); err != nil {
				return err
			}
		}
		return nil
	}
	switch ep {
	case killLeader, killFollower:
		victim := leader
		if ep == killFollower {
			victim = follower
		}
		if victim == 0 {
			victim = all[rng.IntN(len(all))]
		}
		if err := c.kill(victim, false); err != nil {
			return err
		}
		start := time.Now()
		h := hold(time.Second, 4*time.Second)
		sched.add("%s: node %d (leader was %d), down for %v", ep, victim, leader, h)
		if ep == killLeader {
			failover(without(all, victim))
		}
		time.Sleep(time.Until(start.Add(h)))
		sched.add("  restart node %d", victim)
		return restart([]uint64{victim})
	case killMajority, killAll:
		perm := rng.Perm(len(all))
		n := majority(len(all))
		if ep == killAll {
			n = len(all)
		}
		var victims []uint64
		if leader != 0 {
			victims = append(victims, leader)
		}
		for _, i := range perm {
			if len(victims) < n && !slices.Contains(victims, all[i]) {
				victims = append(victims, all[i])
			}
		}
		for _, id := range victims {
			if err := c.kill(id, false); err != nil {
				return err
			}
		}
		h := hold(time.Second, 4*time.Second)
		sched.add("%s: nodes %v (leader was %d), down for %v", ep, victims, leader, h)
		time.Sleep(h)
		rng.Shuffle(len(victims), func(i, j int) { victims[i], victims[j] = victims[j], victims[i] })
		sched.add("  restart nodes %v", victims)
		if err := restart(victims); err != nil {
			return err
		}
		started := time.Now()
		if d, err := c.waitLeaders(all, 15*time.Second); err != nil {
			sched.add("  no agreed leader 15s after the restart")
		} else {
			res.restarts = append(res.restarts, d)
			sched.add("  leader after %v", time.Since(started).Round(time.Millisecond))
		}
		return nil
	case pauseLeader, pauseFollower:
		victim := leader
		if ep == pauseFollower {
			victim = follower
		}
		if victim == 0 {
			victim = all[rng.IntN(len(all))]
		}
		// Longer than any lease: a paused leader's leases run out meanwhile.
		h := maxVis + hold(500*time.Millisecond, 2*time.Second)
		if err := c.signal(victim, syscall.SIGSTOP); err != nil {
			return err
		}
		start := time.Now()
		sched.add("%s: node %d (leader was %d) for %v (leases at most %v)", ep, victim, leader, h, maxVis)
		if victim == leader {
			failover(without(all, victim))
		}
		time.Sleep(time.Until(start.Add(h)))
		sched.add("  SIGCONT node %d", victim)
		return c.resume(victim)
	case isolateLeader, partitionMin:
		var side []uint64
		if ep == isolateLeader && leader != 0 {
			side = []uint64{leader}
		} else {
			k := 1 + rng.IntN((len(all)-1)/2)
			for _, i := range rng.Perm(len(all))[:k] {
				side = append(side, all[i])
			}
		}
		if err := c.partition(side); err != nil {
			return err
		}
		start := time.Now()
		h := hold(2*time.Second, 6*time.Second)
		sched.add("%s: %v | %v (leader was %d) for %v", ep, side, without(all, side...), leader, h)
		if slices.Contains(side, leader) {
			failover(without(all, side...))
		}
		time.Sleep(time.Until(start.Add(h)))
		sched.add("  heal")
		return c.heal()
	case isolateKill, pauseKill:
		// Two faults at once: the leader cut off (partitioned or paused),
		// then a node of the majority killed (the new leader, or any
		// other): three nodes lose their quorum until a repair.
		if leader == 0 {
			return fmt.Errorf("no leader to fault")
		}
		if ep == isolateKill {
			if err := c.partition([]uint64{leader}); err != nil {
				return err
			}
		} else if err := c.signal(leader, syscall.SIGSTOP); err != nil {
			return err
		}
		sched.add("%s: node %d cut off (leader)", ep, leader)
		rest := without(all, leader)
		failover(rest)
		victim := rest[rng.IntN(len(rest))]
		if ep == isolateKill {
			if l, ok := c.agreedLeaders(rest); ok {
				victim = l
			}
		}
		if err := c.kill(victim, false); err != nil {
			return err
		}
		h := hold(time.Second, 3*time.Second)
		sched.add("  kill -9 node %d too, for %v", victim, h)
		time.Sleep(h)
		if ep == isolateKill {
			sched.add("  heal, restart node %d", victim)
			if err := c.heal(); err != nil {
				return err
			}
		} else {
			sched.add("  SIGCONT node %d, restart node %d", leader, victim)
			if err := c.resume(leader); err != nil {
				return err
			}
		}
		if err := restart([]uint64{victim}); err != nil {
			return err
		}
		started := time.Now()
		if _, err := c.waitLeaders(all, 15*time.Second); err != nil {
			sched.add("  no agreed leader 15s after the repair")
		} else {
			res.restarts = append(res.restarts, time.Since(started))
			sched.add("  leader after %v", time.Since(started).Round(time.Millisecond))
		}
		return nil
	case wipeFollower, wipeLeader:
		if ep == wipeLeader {
			follower = leader
		}
		if follower == 0 {
			return fmt.Errorf("no node to wipe (leader %d)", leader)
		}
		if err := c.kill(follower, false); err != nil {
			return err
		}
		survivors := without(all, follower)
		if err := c.holdCommitted(survivors, 20*time.Second); err != nil {
			return fmt.Errorf("survivors did not catch up before the wipe: %w", err)
		}
		if err := c.wipe(follower); err != nil {
			return err
		}
		old := c.raftID(follower)
		sched.add("%s: node %d (raft id %d) killed, survivors caught up, data removed, rejoined empty (leader was %d)", ep, follower, old, leader)
		target := map[uint64]uint64{}
		for _, id := range survivors {
			if v, err := c.view(id, time.Second); err == nil {
				for s, ci := range v.commit {
					target[s] = max(target[s], ci)
				}
			}
		}
		if len(target) == 0 {
			return fmt.Errorf("no survivor answered GetCluster")
		}
		// An empty node under its old id is fenced (it could vote twice):
		// it joins under a new id, and the old one is retired.
		start := time.Now()
		nid, err := c.rejoin(follower, survivors[rng.IntN(len(survivors))], 60*time.Second)
		if err != nil {
			return fmt.Errorf("wiped node did not rejoin: %w", err)
		}
		sched.add("  node %d joined as raft id %d, raft id %d removed, after %v", follower, nid, old, time.Since(start).Round(time.Millisecond))
		if err := c.waitApplied([]uint64{follower}, target, 30*time.Second); err != nil {
			return fmt.Errorf("wiped node did not catch up: %w", err)
		}
		res.catchUps = append(res.catchUps, time.Since(start))
		sched.add("  node %d caught up after %v", follower, time.Since(start).Round(time.Millisecond))
		return nil
	}
	return membershipEpisode(c, rng, ep, leader, sched, res)
}

// waitApplied waits until every node in ids has applied, per shard, at
// least want.
func (c *cluster) waitApplied(ids []uint64, want map[uint64]uint64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		okAll := true
		for _, id := range ids {
			v, err := c.view(id, time.Second)
			if err != nil {
				okAll = false
				break
			}
			for s, a := range want {
				if v.applied[s] < a {
					okAll = false
				}
			}
		}
		if okAll {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes %v have not applied %v after %v", ids, want, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// holdCommitted waits until every node in ids holds every entry committed
// so far, on every shard. A wiped replica forgets what it acknowledged, so
// before it comes back empty this must hold for the survivors: otherwise
// its empty copy and a lagging survivor could be a majority without a
// committed entry, and elect a leader that overwrites it. Commit indexes
// read before the wipe are not enough (an entry committed after the read
// may sit on one survivor only); instead: a leader among ids holds every
// committed entry and has appended an entry of its own term, so once all
// of ids have applied up to that leader's last index, each holds them all.
func (c *cluster) holdCommitted(ids []uint64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	if _, err := c.waitLeaders(ids, limit); err != nil {
		return err
	}
	want := map[uint64]uint64{}
	for len(want) < c.shards {
		if time.Now().After(deadline) {
			return fmt.Errorf("the leaders among %v did not answer within %v", ids, limit)
		}
		for _, id := range ids {
			v, err := c.view(id, time.Second)
			if err != nil {
				continue
			}
			for s, l := range v.leader {
				if l == id {
					want[s] = v.last[s]
				}
			}
		}
		if len(want) < c.shards {
			time.Sleep(50 * time.Millisecond) // a leader did not answer: ask again shortly
		}
	}
	return c.waitApplied(ids, want, time.Until(deadline))
}

// runDir makes the directory of one schedule.
func runDir(base string, seed uint64) (string, error) {
	dir := filepath.Join(base, fmt.Sprintf("seed-%d", seed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("run dir: %w", err)
	}
	return dir, nil
}

// report formats one schedule's result.
func (r runResult) report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %d violations, %d harness errors\n", r.seed, len(r.violations), len(r.harnessErrs))
	fmt.Fprintf(&b, "schedule:\n  %s\n", strings.Join(r.schedule, "\n  "))
	fmt.Fprintf(&b, "operations: %s\n", fmtCounts(r.counts))
	if recv := r.counts["messages received"]; recv > 0 {
		fmt.Fprintf(&b, "duplicates: %d redeliveries of %d deliveries (%.1f%%): %s\n", r.counts["redeliveries"], recv,
			100*float64(r.counts["redeliveries"])/float64(recv), fmtCounts(r.dupReasons))
	}
	fmt.Fprintf(&b, "recovery: failovers %v; restarts %v; wiped catch-ups %v; heal->leader %v; heal->converged %v\n",
		rounded(r.failovers), rounded(r.restarts), rounded(r.catchUps), r.healLeader.Round(time.Millisecond), r.converge.Round(time.Millisecond))
	for _, v := range r.violations {
		fmt.Fprintf(&b, "VIOLATION: %s\n", v)
	}
	for _, v := range r.harnessErrs {
		fmt.Fprintf(&b, "HARNESS: %s\n", v)
	}
	return b.String()
}

func rounded(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

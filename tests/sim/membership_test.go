package sim

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/quorumq/quorumq/raftnode"
)

// Issue 17 item 9 in the simulation tier: membership changes in the
// seeded schedule, among the crashes, partitions and message faults, with
// the checker's invariants unchanged.
//
//   - join: a new replica id joins (JoinGroup), is added as a learner,
//     catches up (snapshot and log) and is promoted;
//   - remove: a voter leaves (sometimes the leader, which either hands
//     leadership over first, as server/node does, or removes itself);
//   - replace: a voter loses its whole disk; it may first come back under
//     its old id (an impostor: bootstrapped again, new incarnation), which
//     the others' pinned incarnations fence; then a new id joins as a
//     learner and replaces the old one in one joint change;
//   - move: a new id replaces a live voter in one joint change.
//
// The fault loop plans a change (one at a time, like server/node's
// replica-set record); a coordinator goroutine carries it out with the
// Host API the way server/node's executeChanges does: each pass reads the
// leader's applied configuration and proposes only what is missing, leaves
// a joint configuration raft left behind (LeaveJoint), and rolls a join or
// move back (removes the learner) when the learner does not catch up in
// time. Sometimes the leader is crashed or cut off right after a change is
// proposed. Every change ends finished or rolled back, never joint; the
// voters stay at 3 or more, and within what keeps a majority of each
// configuration (old and new) up given the crashes.

type changeKind int

const (
	kindJoin changeKind = iota
	kindRemove
	kindReplace
	kindMove
)

func (k changeKind) String() string { return [...]string{"join", "remove", "replace", "move"}[k] }

// change is one planned membership change.
type change struct {
	kind          changeKind
	add, drop     uint64   // the new replica (0: none), the voter that leaves (0: none)
	before, after []uint64 // voters before and once done
	started       time.Time
	direct        bool          // a leader that leaves removes itself (else it hands leadership over first)
	rollAt        time.Duration // a join or move whose learner is not caught up by then is rolled back
	// Changed by the coordinator only.
	disturb     bool      // crash or cut off the leader right after the step that changes voters
	learnerAt   time.Time // when the coordinator first saw the new replica as a learner
	rollingBack bool
}

func (p *change) String() string {
	return fmt.Sprintf("%s (add %d, remove %d: voters %v -> %v)", p.kind, p.add, p.drop, p.before, p.after)
}

// members plans membership changes (fault loop) and carries them out
// (coordinator goroutine).
type members struct {
	c       *cluster
	sched   *schedule
	initial int         // voters at bootstrap
	maxV    int         // at most this many voters
	mid     chan uint64 // the leader to disturb mid-change (cap 1)
	stop    context.CancelFunc
	wg      sync.WaitGroup
	paused  atomic.Bool // while the healed cluster elects its leader (that is timed)
	mu      sync.Mutex
	voters  []uint64 // applied voters when nothing is pending; the before set otherwise
	pending *change
	removed []uint64 // out of the configuration, not yet retired (they linger a while)
	nextID  uint64
	n       int // changes planned so far
	counts  map[string]int
	failure string // an unexpected configuration, reported by the checker
}

func newMembers(c *cluster, sched *schedule) *members {
	ids := c.idList()
	// Three nodes grow to four (and back); five shrink and grow back: six
	// voters would need four votes to elect, and the elections after
	// healing are timed.
	return &members{c: c, sched: sched, initial: len(ids), maxV: max(len(ids), 4), mid: make(chan uint64, 1),
		voters: ids, nextID: uint64(len(ids)) + 1, counts: map[string]int{}}
}

func (m *members) count(k string) {
	m.mu.Lock()
	m.counts["membership: "+k]++
	m.mu.Unlock()
}

// start runs the coordinator until stopCoordinator.
func (m *members) start() {
	ctx, cancel := context.WithCancel(context.Background())
	m.stop = cancel
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * m.c.tick):
			}
			m.step(ctx)
		}
	}()
}

func (m *members) stopCoordinator() {
	if m.stop != nil {
		m.stop()
		m.wg.Wait()
		m.stop = nil
	}
}

// up reports whether replica id is up (a wiped id, or its impostor, is not).
func (m *members) up(id uint64) bool {
	_, ok := m.c.status(id)
	return ok
}

// fits reports whether configuration s keeps a majority up with the
// replicas in extra down as well.
func (m *members) fits(s []uint64, extra ...uint64) bool {
	down := 0
	for _, id := range s {
		if !m.up(id) || slices.Contains(extra, id) {
			down++
		}
	}
	return down <= (len(s)-1)/2
}

// configs returns the voter sets the group may be in: the current one and,
// with a change pending, the one it leads to (joint means both).
func (m *members) configs() [][]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := [][]uint64{m.voters}
	if m.pending != nil {
		out = append(out, m.pending.after)
	}
	return out
}

// canCrash reports whether node id may crash now: every configuration the
// group may be in keeps a majority up.
func (m *members) canCrash(id uint64) bool {
	for _, s := range m.configs() {
		if !m.fits(s, id) {
			return false
		}
	}
	return true
}

// idle reports whether no change is pending.
func (m *members) idle() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pending == nil
}

// plan starts a change of a kind the current configuration allows (fault
// loop). It returns false if none does.
func (m *members) plan(rng *rand.Rand) bool {
	m.mu.Lock()
	b := slices.Clone(m.voters)
	m.mu.Unlock()
	pick := func() uint64 { // a voter, the leader half the time
		if l := m.c.leader(); l != 0 && slices.Contains(b, l) && rng.IntN(2) == 0 {
			return l
		}
		return b[rng.IntN(len(b))]
	}
	without := func(s []uint64, id uint64) []uint64 {
		return slices.DeleteFunc(slices.Clone(s), func(x uint64) bool { return x == id })
	}
	with := func(s []uint64, id uint64) []uint64 { return slices.Sorted(slices.Values(append(slices.Clone(s), id))) }
	kind := changeKind(rng.IntN(4))
	switch {
	case len(b) > m.initial && rng.IntN(2) == 0:
		kind = kindRemove // grown by a join: shrink back (retire a node)
	case len(b) < m.initial && rng.IntN(2) == 0:
		kind = kindJoin // shrunk by a removal: grow back
	}
	p := &change{kind: kind, before: b, started: time.Now(), direct: rng.IntN(2) == 0, disturb: rng.IntN(3) == 0,
		rollAt: time.Duration(20+rng.IntN(100)) * m.c.tick}
	x := m.nextID
	switch kind {
	case kindJoin:
		p.add, p.after = x, with(b, x)
		if len(b) >= m.maxV || !m.fits(p.after) {
			return false
		}
	case kindRemove:
		p.drop = pick()
		p.after = without(b, p.drop)
		if len(b) <= 3 || !m.fits(p.after) {
			return false
		}
	case kindReplace, kindMove:
		p.drop = pick()
		p.add, p.after = x, with(without(b, p.drop), x)
		lost := []uint64{}
		if kind == kindReplace {
			lost = append(lost, p.drop)
		}
		if !m.fits(b, lost...) || !m.fits(p.after) {
			return false
		}
	}
	m.n++
	m.sched.add("membership change %d: %v, disturb %v, leader removes itself %v, roll back after %v", m.n, p, p.disturb, p.direct, p.rollAt)
	if kind == kindReplace {
		m.wipe(rng, p.drop, b)
	}
	if p.add != 0 {
		m.nextID++
		if err := m.c.addNode(p.add); err != nil {
			m.fail("start new replica %d: %v", p.add, err)
			return false
		}
	}
	m.mu.Lock()
	m.pending = p
	m.mu.Unlock()
	return true
}

// wipe loses replica id's whole data directory. Half the time the node
// first comes back under its old id, bootstrapped again with the voters it
// was configured with (an operator's mistake): a new incarnation, which
// every other host refuses, so it can never vote or acknowledge with state
// it no longer has.
func (m *members) wipe(rng *rand.Rand, id uint64, voters []uint64) {
	m.c.retire(id)
	m.count("disks wiped")
	if rng.IntN(2) == 0 {
		imp := &simNode{id: id, peers: voters, impostor: true, fs: vfs.NewCrashableMem()}
		if err := m.c.startNode(imp); err != nil {
			m.fail("start impostor %d: %v", id, err)
			return
		}
		m.c.mu.Lock()
		m.c.impostors[id] = imp
		m.c.mu.Unlock()
		m.count("wiped nodes back under their old id (fenced)")
		m.sched.add("node %d wiped; back under its old id, bootstrapped with %v", id, voters)
		if l := m.c.leader(); l != 0 && l != id && rng.IntN(2) == 0 {
			// Where its vote would matter: the other voters elect a new
			// leader, and a majority may need it. Fenced, it gives none.
			m.c.partition(l)
			m.sched.add("partition leader %d from the rest", l)
		}
		return
	}
	m.sched.add("node %d wiped", id)
}

// takeRemoved returns the replicas removed from the configuration that
// still run.
func (m *members) takeRemoved() []uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.removed
	m.removed = nil
	return r
}

// step is one coordinator pass: on the leader, propose what the pending
// change still misses.
func (m *members) step(ctx context.Context) {
	m.mu.Lock()
	p := m.pending
	m.mu.Unlock()
	if p == nil || m.paused.Load() {
		return
	}
	c := m.c
	l := c.leader()
	n := c.node(l)
	if n == nil {
		return
	}
	n.mu.RLock()
	h := n.host
	n.mu.RUnlock()
	st, ok := c.nodeStatus(n)
	if h == nil || !ok || !st.IsLeader {
		return
	}
	timeout := 3 * c.electionTimeout()
	if st.Joint {
		// Raft leaves a joint configuration by itself, unless a transfer
		// dropped that; server/node's executor calls LeaveJoint then.
		lctx, cancel := context.WithTimeout(ctx, timeout)
		err := h.LeaveJoint(lctx, shard)
		cancel()
		m.count("LeaveJoint calls (joint configuration seen)")
		m.sched.add("leader %d: leave the joint configuration: %v", l, errText(err))
		return
	}
	if m.finish(st, p) {
		return
	}
	var changes []raftnode.MemberChange
	switch x, y := p.add, p.drop; {
	case x != 0 && !slices.Contains(st.Members, x):
		changes = []raftnode.MemberChange{{Kind: raftnode.AddLearner, ID: x}}
	case x != 0 && slices.Contains(st.Learners, x):
		m.mu.Lock()
		if p.learnerAt.IsZero() {
			p.learnerAt = time.Now()
		}
		if !p.rollingBack && p.kind != kindReplace && time.Since(p.learnerAt) > p.rollAt {
			p.rollingBack = true
			m.sched.add("rolling back %v: learner %d did not catch up in %v", p, x, p.rollAt)
		}
		back := p.rollingBack
		m.mu.Unlock()
		switch {
		case back:
			changes = []raftnode.MemberChange{{Kind: raftnode.RemoveMember, ID: x}}
		case !caughtUp(st, x):
			return
		case y == l && !p.direct:
			m.handOff(ctx, h, st, l, x)
			return
		default:
			changes = []raftnode.MemberChange{{Kind: raftnode.AddVoter, ID: x}}
			if y != 0 && slices.Contains(st.Members, y) {
				changes = append(changes, raftnode.MemberChange{Kind: raftnode.RemoveMember, ID: y})
			}
		}
	case y != 0 && slices.Contains(st.Members, y):
		if y == l && !p.direct {
			m.handOff(ctx, h, st, l, 0)
			return
		}
		changes = []raftnode.MemberChange{{Kind: raftnode.RemoveMember, ID: y}}
	default:
		return
	}
	// The disturbance hits the step that changes the voters (a joint
	// change for a move or replace).
	final := slices.ContainsFunc(changes, func(ch raftnode.MemberChange) bool { return ch.Kind != raftnode.AddLearner })
	m.mu.Lock()
	disturb := p.disturb && final
	p.disturb = p.disturb && !final
	m.mu.Unlock()
	if disturb {
		// Crash or cut off the leader once the change is (probably) in
		// its log: the fault loop does it (it owns the crash budget).
		time.AfterFunc(time.Duration(rand.Int64N(int64(2*c.tick))), func() {
			select {
			case m.mid <- l:
			default:
			}
		})
	}
	m.sched.add("leader %d proposes %v", l, changes)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	err := h.ChangeMembers(cctx, shard, changes...)
	cancel()
	if slices.ContainsFunc(changes, func(ch raftnode.MemberChange) bool { return ch.ID == l && ch.Kind == raftnode.RemoveMember }) {
		m.count("leader removed itself")
	}
	m.sched.add("leader %d: %v: %v", l, changes, errText(err))
}

// finish reports whether st, the leader's applied configuration (not
// joint), shows the pending change p finished or rolled back, and if so
// records it.
func (m *members) finish(st raftnode.GroupStatus, p *change) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	x, y := p.add, p.drop
	if p.rollingBack && slices.Contains(st.Voters, x) {
		p.rollingBack = false // the promotion went first: finish the change
		m.sched.add("roll-back of %v overtaken by the promotion", p)
	}
	var want []uint64
	var outcome string
	switch {
	case p.rollingBack && !slices.Contains(st.Members, x):
		want, outcome = p.before, "rolled back"
	case !p.rollingBack && (x == 0 || slices.Contains(st.Voters, x)) && (y == 0 || !slices.Contains(st.Members, y)):
		want, outcome = p.after, "done"
	default:
		return false
	}
	if (!slices.Equal(st.Voters, want) || len(st.Learners) > 0) && m.failure == "" {
		m.failure = fmt.Sprintf("%v %s: voters %v learners %v, want voters %v and no learner", p, outcome, st.Voters, st.Learners, want)
	}
	m.counts[fmt.Sprintf("membership: %s %s", p.kind, outcome)]++
	m.sched.add("membership change %v %s after %v", p, outcome, time.Since(p.started).Round(time.Millisecond))
	m.voters, m.pending = slices.Clone(st.Voters), nil
	gone := y
	if outcome == "rolled back" {
		gone = 0
		if x != 0 {
			gone = x
		}
	} else if x != 0 {
		if n := m.c.node(x); n != nil {
			n.mu.RLock()
			if n.up && n.host.SnapshotsApplied() > 0 {
				m.counts["membership: new replicas caught up by snapshot"]++
			}
			n.mu.RUnlock()
		}
	}
	if gone != 0 {
		m.removed = append(m.removed, gone)
	}
	return true
}

// handOff has leader l (h) hand leadership to another voter that is
// replicating (not skip) before its replica is removed, as server/node's
// handOff does.
func (m *members) handOff(ctx context.Context, h *raftnode.Host, st raftnode.GroupStatus, l, skip uint64) {
	for _, p := range st.Peers {
		if p.ID == l || p.ID == skip || !slices.Contains(st.Voters, p.ID) || !p.RecentActive || p.State != "StateReplicate" {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, 3*m.c.electionTimeout())
		err := h.TransferLeadership(tctx, shard, p.ID)
		cancel()
		m.count("leadership handed over before a removal")
		m.sched.add("leader %d hands leadership to %d before its removal: %v", l, p.ID, errText(err))
		return
	}
}

// catchUpLag is server/node's: how far behind the leader's applied index
// a learner may be to be promoted.
const catchUpLag = 64

// caughtUp reports whether the leader's view of learner x is close to its
// applied index (server/node's caughtUp).
func caughtUp(st raftnode.GroupStatus, x uint64) bool {
	for _, p := range st.Peers {
		if p.ID == x {
			return p.RecentActive && p.State == "StateReplicate" && p.Match+catchUpLag >= st.Applied
		}
	}
	return false
}

// settle waits (after healing) until the pending change is finished or
// rolled back, stops the coordinator, retires what was removed and the
// impostors, and checks that the configuration is what the changes led
// to: not joint, no learner, the expected voters, at least 3, every
// replica that holds data among them.
func (m *members) settle(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !m.idle() {
		if time.Now().After(deadline) {
			m.mu.Lock()
			p := m.pending
			m.mu.Unlock()
			l := m.c.leader()
			st, _ := m.c.status(l)
			return fmt.Errorf("membership change %v unfinished %v after healing; leader %d: voters %v learners %v joint %v",
				p, timeout, l, st.Voters, st.Learners, st.Joint)
		}
		time.Sleep(m.c.tick)
	}
	m.stopCoordinator()
	m.retireAll()
	m.mu.Lock()
	voters, failure := slices.Clone(m.voters), m.failure
	m.mu.Unlock()
	if failure != "" {
		return errors.New(failure)
	}
	if len(voters) < 3 {
		return fmt.Errorf("only %d voters: %v", len(voters), voters)
	}
	for {
		l := m.c.leader()
		st, ok := m.c.status(l)
		if ok && st.IsLeader && !st.Joint && len(st.Learners) == 0 && slices.Equal(st.Voters, voters) && slices.Equal(st.Members, m.c.idList()) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leader %d: voters %v learners %v joint %v; want voters %v, replicas %v", l, st.Voters, st.Learners, st.Joint, voters, m.c.idList())
		}
		time.Sleep(m.c.tick)
	}
}

// retireAll retires the removed replicas and the impostors.
func (m *members) retireAll() {
	for _, id := range m.takeRemoved() {
		m.c.retire(id)
	}
	m.retireImpostors()
}

// retireImpostors stops every impostor, checking it never led.
func (m *members) retireImpostors() {
	m.c.mu.Lock()
	imps := maps.Clone(m.c.impostors)
	clear(m.c.impostors)
	m.c.mu.Unlock()
	for id, n := range imps {
		m.checkImpostor(n)
		m.c.cutOff(id)
		m.c.stopNodes(false, 0, map[uint64]*simNode{id: n})
		m.sched.add("impostor %d stopped", id)
	}
}

// checkImpostors fails the run if an impostor leads (sampled by the fault
// loop; the election-safety check sees more).
func (m *members) checkImpostors() {
	m.c.mu.RLock()
	imps := slices.Collect(maps.Values(m.c.impostors))
	m.c.mu.RUnlock()
	for _, n := range imps {
		m.checkImpostor(n)
	}
}

func (m *members) checkImpostor(n *simNode) {
	if st, ok := m.c.nodeStatus(n); ok && st.IsLeader {
		m.fail("node %d, wiped and back under its old id, leads term %d", n.id, st.Term)
	}
}

// fail records the first unexpected membership outcome for settle.
func (m *members) fail(format string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failure == "" {
		m.failure = fmt.Sprintf(format, args...)
	}
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// addNode starts a new, empty replica id that waits to be added.
func (c *cluster) addNode(id uint64) error {
	c.mu.Lock()
	n := &simNode{id: id, join: true, fs: vfs.NewCrashableMem(), skew: c.skewRng.Int64N(1000) - 500}
	c.nodes[id] = n
	c.ids = append(c.ids, id)
	slices.Sort(c.ids)
	c.mu.Unlock()
	return c.startNode(n)
}

// cutOff detaches id from the network: nothing from or to it.
func (c *cluster) cutOff(id uint64) {
	c.faults.mu.Lock()
	c.faults.down[id] = true
	c.faults.mu.Unlock()
	c.net.Detach(id)
}

// retire stops replica id for good and forgets it (removed from the
// configuration, or its disk lost).
func (c *cluster) retire(id uint64) {
	c.mu.Lock()
	n := c.nodes[id]
	delete(c.nodes, id)
	c.ids = slices.DeleteFunc(c.ids, func(x uint64) bool { return x == id })
	c.mu.Unlock()
	if n == nil {
		return
	}
	c.cutOff(id)
	c.stopNodes(false, 0, map[uint64]*simNode{id: n})
}

// Package sim is the in-process simulation tier of the fault-injection
// suite (issue 9): 3- and 5-node Raft clusters in one process, the queue
// store as their state machine, a seeded fault schedule, a concurrent
// workload that records a history, and a checker over that history and the
// replicas' final state.
//
// The schedule mixes partitions, message drops, duplicates and delays,
// crashes (with or without losing unsynced writes), power loss of all
// nodes, and membership changes (issue 17, membership_test.go): a new
// replica joins as a learner and is promoted, a voter is removed (the
// leader too), a voter whose disk was wiped is replaced by a new replica
// id (after it may have come back under its old id, fenced), a voter is
// moved in one joint change; a change may be hit by a crash or partition
// of the leader mid-way. The checks: no acknowledged message lost, no
// delivery after a successful delete (and the other history checks in
// workload_test.go), replicas converge to one state hash, a leader within
// three election timeouts of healing (counted in the ticks the machine let
// pass, so load does not fail it), at most one leader per term, and every
// membership change finished or rolled back, never joint.
//
// The cluster is raftnode.Host + store.Store directly, not server/node:
// each node's Pebble lives on its own crashable in-memory filesystem
// (vfs.NewCrashableMem), so a crash can keep only what was synced
// (CrashClone), and a node starts in milliseconds. Commands are built here
// (storepb) and proposed with Host.Propose, as server/ does; a small relay
// moves dead-letter outbox entries as server/'s relay does; membership
// changes use Host.ChangeMembers, LeaveJoint and TransferLeadership as
// server/node's move executor does. What this tier does not cover: the
// gRPC API, forwarding, long polls, housekeeping ticks, the membership
// records and planner of the metadata shard (the process tier,
// tests/chaos, drives those).
package sim

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/quorumq/quorumq/internal/keys"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/store"
)

const shard = 0

// simNode is one replica: its filesystem outlives its restarts.
type simNode struct {
	id uint64
	// join: added at run time (JoinGroup: never bootstrapped, it waits
	// for the leader); else bootstrapped with peers.
	join     bool
	peers    []uint64
	impostor bool // a wiped node restarted under its old id (see membership_test.go)

	mu    sync.RWMutex // held for reading while the store or host is used; Lock to stop
	fs    *vfs.MemFS
	db    *pebble.DB
	host  *raftnode.Host
	store *store.Store
	up    bool
	skew  int64 // this node's clock offset, ms
}

// faults is the network's fault state, consulted for every message.
type faults struct {
	mu        sync.Mutex
	rng       *rand.Rand
	down      map[uint64]bool // crashed: nothing from or to it
	side      map[uint64]int  // partition side; absent = 0
	dropPct   int
	dupPct    int
	delayPct  int
	delayMax  time.Duration
	delivered int
}

func (f *faults) cut(from, to uint64) bool {
	return f.down[from] || f.down[to] || f.side[from] != f.side[to]
}

func (f *faults) drop(e raftnode.Envelope) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cut(e.Msg.GetFrom(), e.Msg.GetTo()) {
		return true
	}
	return f.dropPct > 0 && f.rng.IntN(100) < f.dropPct
}

func (f *faults) delay(e raftnode.Envelope) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.delayPct > 0 && f.rng.IntN(100) < f.delayPct {
		return time.Duration(1 + f.rng.Int64N(int64(f.delayMax)))
	}
	return 0
}

// cluster is in-process nodes over a MemNetwork with a fault layer.
type cluster struct {
	log    func(format string, args ...any)
	net    *raftnode.MemNetwork
	faults *faults
	// mu guards nodes, ids and incs: membership changes add and retire
	// nodes while the workload reads them.
	mu    sync.RWMutex
	nodes map[uint64]*simNode
	ids   []uint64 // the replicas that hold data (retired and wiped ones leave), sorted
	// incs is each replica id's incarnation as server/node's membership
	// records carry it: every host pins all of them (PinPeer).
	incs map[uint64]uint64
	// impostors: wiped nodes running again under their old id, outside
	// ids (under mu).
	impostors map[uint64]*simNode
	tick      time.Duration
	retain    uint64
	crashRng  *rand.Rand // unsynced-data choices of CrashClone; under crashMu
	crashMu   sync.Mutex
	skewRng   *rand.Rand // clock skews of nodes added later; under mu

	// leaders is the leader seen in each term (election safety: at most
	// one), under termMu; a second one is a violation.
	termMu     sync.Mutex
	leaders    map[uint64]uint64
	violations []string
}

// idList returns the ids of the replicas that hold data.
func (c *cluster) idList() []uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.ids)
}

// node returns replica id, nil once it was retired or wiped.
func (c *cluster) node(id uint64) *simNode {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.nodes[id]
}

// sawLeader records that node id leads term (election safety).
func (c *cluster) sawLeader(id, term uint64) {
	c.termMu.Lock()
	defer c.termMu.Unlock()
	switch was, ok := c.leaders[term]; {
	case !ok:
		c.leaders[term] = id
	case was != id:
		c.violations = append(c.violations, fmt.Sprintf("two leaders in term %d: nodes %d and %d", term, was, id))
		c.leaders[term] = id
	}
}

// electionViolations returns the election-safety violations seen.
func (c *cluster) electionViolations() []string {
	c.termMu.Lock()
	defer c.termMu.Unlock()
	return slices.Clone(c.violations)
}

// electionTimeout is the longest election timeout raft may draw: it
// randomises each one in [ElectionTicks, 2*ElectionTicks) ticks, and
// raftnode's default ElectionTicks is 10.
func (c *cluster) electionTimeout() time.Duration { return time.Duration(c.electionTicks()) * c.tick }

// electionTicks is electionTimeout in ticks.
func (c *cluster) electionTicks() int { return 2 * 10 }

func newCluster(seed uint64, n int, tick time.Duration, retain uint64, logf func(string, ...any)) (*cluster, error) {
	rng := rand.New(rand.NewPCG(seed, 0xc1))
	c := &cluster{log: logf, net: raftnode.NewMemNetwork(), nodes: map[uint64]*simNode{}, tick: tick, retain: retain,
		faults:   &faults{rng: rand.New(rand.NewPCG(seed, 0xfa)), down: map[uint64]bool{}, side: map[uint64]int{}},
		crashRng: rand.New(rand.NewPCG(seed, 0xcc)), skewRng: rng, incs: map[uint64]uint64{}, impostors: map[uint64]*simNode{},
		leaders: map[uint64]uint64{}}
	c.net.Drop(c.faults.drop)
	c.net.Delay(c.faults.delay)
	var peers []uint64
	for id := uint64(1); id <= uint64(n); id++ {
		peers = append(peers, id)
	}
	for _, id := range peers {
		c.ids = append(c.ids, id)
		c.nodes[id] = &simNode{id: id, peers: peers, fs: vfs.NewCrashableMem(), skew: rng.Int64N(1000) - 500}
	}
	for _, id := range peers {
		if err := c.start(id); err != nil {
			c.stopAll()
			return nil, err
		}
	}
	return c, nil
}

// transport drops everything a crashed node would still send, duplicates
// some messages, and gates snapshots by the same faults as messages.
type transport struct {
	c    *cluster
	id   uint64
	next raftnode.SnapshotTransport
}

func (t transport) Send(msgs []raftnode.Envelope) {
	f := t.c.faults
	f.mu.Lock()
	if f.down[t.id] {
		f.mu.Unlock()
		return
	}
	out := msgs
	if f.dupPct > 0 {
		out = make([]raftnode.Envelope, 0, len(msgs)+4)
		for _, m := range msgs {
			out = append(out, m)
			if f.rng.IntN(100) < f.dupPct {
				out = append(out, m)
			}
		}
	}
	f.delivered += len(out)
	f.mu.Unlock()
	t.next.Send(out)
}

func (t transport) SendSnapshot(ctx context.Context, env raftnode.Envelope, data raftnode.SnapshotData) error {
	f := t.c.faults
	f.mu.Lock()
	cut := f.cut(t.id, env.Msg.GetTo())
	f.mu.Unlock()
	if cut {
		return raftnode.ErrUnreachable
	}
	return t.next.SendSnapshot(ctx, env, data)
}

var _ raftnode.SnapshotTransport = transport{}

// sm is the queue store as a raftnode state machine.
type sm struct{ *store.Store }

func (sm) AfterApply([]any) {}

type quietPebble struct{}

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (quietPebble) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// start opens replica id's Pebble from its filesystem and starts its host
// (nothing if it is up, retired or wiped).
func (c *cluster) start(id uint64) error {
	n := c.node(id)
	if n == nil {
		return nil
	}
	return c.startNode(n)
}

// startNode starts n's host: a bootstrapped member on its first start,
// or a replica added at run time (JoinGroup). Every host pins the
// incarnations the cluster recorded, as server/node pins those of its
// membership records; an impostor's incarnation is never recorded.
func (c *cluster) startNode(n *simNode) error {
	id := n.id
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.up {
		return nil
	}
	db, err := pebble.Open("db", &pebble.Options{FS: n.fs, Logger: quietPebble{}, MemTableSize: 1 << 20})
	if err != nil {
		return fmt.Errorf("node %d: open pebble: %w", id, err)
	}
	h, err := raftnode.NewHost(raftnode.Config{NodeID: id, DB: db, TickInterval: c.tick, LogRetain: c.retain, Logger: discard,
		Transport:  transport{c: c, id: id, next: c.net.Transport(id).(raftnode.SnapshotTransport)},
		SnapshotFS: n.fs, SnapshotDir: "snapshots"})
	if err != nil {
		db.Close()
		return fmt.Errorf("node %d: %w", id, err)
	}
	st := store.New(db, shard)
	if n.join {
		err = h.JoinGroup(shard, sm{st})
	} else {
		err = h.AddGroup(shard, n.peers, sm{st})
	}
	if err != nil {
		h.Stop()
		db.Close()
		return fmt.Errorf("node %d: %w", id, err)
	}
	c.mu.Lock()
	if !n.impostor {
		c.incs[id] = h.Incarnation()
	}
	incs := maps.Clone(c.incs)
	var others []*simNode
	for oid, o := range c.nodes {
		if oid != id {
			others = append(others, o)
		}
	}
	c.mu.Unlock()
	for pid, inc := range incs {
		if err := h.PinPeer(pid, inc); err != nil && !errors.Is(err, raftnode.ErrFenced) {
			h.Stop()
			db.Close()
			return fmt.Errorf("node %d: pin %d: %w", id, pid, err)
		}
	}
	n.db, n.host, n.store, n.up = db, h, st, true
	c.faults.mu.Lock()
	delete(c.faults.down, id)
	c.faults.mu.Unlock()
	c.net.Attach(id, h)
	h.Start()
	if !n.impostor {
		for _, o := range others {
			o.mu.RLock()
			if o.up {
				_ = o.host.PinPeer(id, incs[id]) // ErrStopped: it pins at its next start
			}
			o.mu.RUnlock()
		}
	}
	return nil
}

// crash stops node id. lose: the restarted node sees only what was synced
// (a power loss), with unsyncedPct percent of unsynced writes surviving;
// otherwise the process died and the OS kept its writes.
func (c *cluster) crash(lose bool, unsyncedPct int, ids ...uint64) {
	// First cut the nodes off, so nothing they do after the crash point
	// reaches anyone; then take the crash images; then stop them.
	c.faults.mu.Lock()
	for _, id := range ids {
		c.faults.down[id] = true
	}
	c.faults.mu.Unlock()
	for _, id := range ids {
		c.net.Detach(id)
	}
	nodes := map[uint64]*simNode{}
	for _, id := range ids {
		if n := c.node(id); n != nil {
			nodes[id] = n
		}
	}
	c.stopNodes(lose, unsyncedPct, nodes)
}

// stopNodes stops the given nodes (cut off already); lose: see crash.
func (c *cluster) stopNodes(lose bool, unsyncedPct int, nodes map[uint64]*simNode) {
	images := map[uint64]*vfs.MemFS{}
	if lose {
		c.crashMu.Lock()
		for _, id := range slices.Sorted(maps.Keys(nodes)) {
			cfg := vfs.CrashCloneCfg{UnsyncedDataPercent: unsyncedPct}
			if unsyncedPct > 0 {
				cfg.RNG = rand.New(rand.NewPCG(c.crashRng.Uint64(), 1))
			}
			images[id] = nodes[id].fs.CrashClone(cfg)
		}
		c.crashMu.Unlock()
	}
	for id, n := range nodes {
		n.mu.Lock()
		if n.up {
			n.host.Stop()
			_ = n.db.Close()
			n.db, n.host, n.store, n.up = nil, nil, nil, false
			if img := images[id]; img != nil {
				n.fs = img
			}
		}
		n.mu.Unlock()
	}
}

func (c *cluster) stopAll() {
	c.mu.RLock()
	nodes := append(slices.Collect(maps.Values(c.nodes)), slices.Collect(maps.Values(c.impostors))...)
	c.mu.RUnlock()
	for _, n := range nodes {
		n.mu.Lock()
		if n.up {
			n.host.Stop()
			_ = n.db.Close()
			n.db, n.host, n.store, n.up = nil, nil, nil, false
		}
		n.mu.Unlock()
	}
}

func (c *cluster) upIDs() []uint64 {
	var out []uint64
	for _, id := range c.idList() {
		n := c.node(id)
		if n == nil {
			continue
		}
		n.mu.RLock()
		if n.up {
			out = append(out, id)
		}
		n.mu.RUnlock()
	}
	return out
}

// partition puts the given nodes on a new side.
func (c *cluster) partition(ids ...uint64) {
	c.faults.mu.Lock()
	defer c.faults.mu.Unlock()
	side := 1
	for _, s := range c.faults.side {
		side = max(side, s+1)
	}
	for _, id := range ids {
		c.faults.side[id] = side
	}
}

// heal removes partitions and message faults (crashed nodes stay down).
func (c *cluster) heal() {
	c.faults.mu.Lock()
	defer c.faults.mu.Unlock()
	c.faults.side = map[uint64]int{}
	c.faults.dropPct, c.faults.dupPct, c.faults.delayPct = 0, 0, 0
}

// status returns node id's group status, ok false if it is down.
func (c *cluster) status(id uint64) (raftnode.GroupStatus, bool) {
	return c.nodeStatus(c.node(id))
}

// nodeStatus is status for a node (nil: gone); a leader's term is
// recorded for the election-safety check.
func (c *cluster) nodeStatus(n *simNode) (raftnode.GroupStatus, bool) {
	if n == nil {
		return raftnode.GroupStatus{}, false
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if !n.up {
		return raftnode.GroupStatus{}, false
	}
	st, err := n.host.Status(shard)
	if err == nil && st.IsLeader {
		c.sawLeader(n.id, st.Term)
	}
	return st, err == nil
}

// leader returns a node that believes it leads, 0 if none is known.
func (c *cluster) leader() uint64 {
	for _, id := range c.idList() {
		if st, ok := c.status(id); ok && st.IsLeader {
			return id
		}
	}
	return 0
}

// agreedLeader returns a leader that every voter of its configuration
// names, 0 if there is none; every replica holding data must be up.
// Learners, replicas not yet added and ones already removed do not vote.
func (c *cluster) agreedLeader() uint64 {
	ids := c.idList()
	var leaders []raftnode.GroupStatus
	for _, id := range ids {
		st, ok := c.status(id)
		if !ok {
			return 0
		}
		if st.IsLeader {
			leaders = append(leaders, st)
		}
	}
next:
	for _, l := range leaders {
		for _, v := range l.Voters {
			if st, ok := c.status(v); ok && st.LeaderID != l.LeaderID || !ok && slices.Contains(ids, v) {
				continue next
			}
		}
		return l.LeaderID
	}
	return 0
}

// withStore runs f on node id's store unless the node is down.
func (c *cluster) withStore(id uint64, f func(*store.Store, *pebble.DB) error) error {
	n := c.node(id)
	if n == nil {
		return errNodeDown
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if !n.up {
		return errNodeDown
	}
	return f(n.store, n.db)
}

var errNodeDown = errors.New("node down")

// stateHash hashes node id's state range (applied index and ConfState
// included) from a consistent Pebble snapshot.
func (c *cluster) stateHash(id uint64) (applied uint64, sum string, err error) {
	err = c.withStore(id, func(_ *store.Store, db *pebble.DB) error {
		snap := db.NewSnapshot()
		defer snap.Close()
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: keys.StatePrefix(shard), UpperBound: keys.StateEnd(shard)})
		if err != nil {
			return err
		}
		defer it.Close()
		h := sha256.New()
		for ok := it.First(); ok; ok = it.Next() {
			k, v := it.Key(), it.Value()
			if string(k) == string(keys.AppliedIndex(shard)) && len(v) == 8 {
				applied = uint64(v[0])<<56 | uint64(v[1])<<48 | uint64(v[2])<<40 | uint64(v[3])<<32 |
					uint64(v[4])<<24 | uint64(v[5])<<16 | uint64(v[6])<<8 | uint64(v[7])
			}
			fmt.Fprintf(h, "%d:%x=%d:%x;", len(k), k, len(v), v)
		}
		sum = fmt.Sprintf("%x", h.Sum(nil))
		return it.Error()
	})
	return applied, sum, err
}

// converged waits until every node reports the same applied index and
// state hash, and returns them; on timeout it returns what differs.
func (c *cluster) converged(timeout time.Duration) (uint64, error) {
	deadline := time.Now().Add(timeout)
	for {
		var desc []string
		var applied uint64
		var sum string
		same := true
		for _, id := range c.idList() {
			a, s, err := c.stateHash(id)
			if err != nil {
				return 0, fmt.Errorf("node %d: %w", id, err)
			}
			st, _ := c.status(id)
			desc = append(desc, fmt.Sprintf("node %d: applied %d (status %d, commit %d, last %d) hash %.12s", id, a, st.Applied, st.Commit, st.LastIndex, s))
			if sum == "" {
				applied, sum = a, s
			} else if a != applied || s != sum {
				same = false
			}
		}
		if same {
			return applied, nil
		}
		if time.Now().After(deadline) {
			sort.Strings(desc)
			return 0, fmt.Errorf("replicas differ after %v: %v", timeout, desc)
		}
		time.Sleep(c.tick)
	}
}

// clock is node n's wall clock in ms (skewed), as a leader stamps
// commands.
func (c *cluster) clock(n *simNode) int64 { return time.Now().UnixMilli() + n.skew }

// outcome of a proposal.
type outcome int

const (
	ok      outcome = iota
	failed          // certainly not applied
	unknown         // may or may not have been applied
)

func (o outcome) String() string { return [...]string{"ok", "fail", "unknown"}[o] }

// propose sends cmd (stamped by the proposing node's clock) to the leader,
// following not-leader hints, until it is applied, certainly failed, or
// the deadline passes.
func (c *cluster) propose(ctx context.Context, rng *rand.Rand, build func(timeMs int64) []byte) (*store.Result, outcome) {
	var hint uint64
	sent := false // a proposal may have been appended somewhere
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			if sent {
				return nil, unknown
			}
			return nil, failed
		}
		id := hint
		if id == 0 {
			id = c.leader()
		}
		if id == 0 {
			up := c.upIDs()
			if len(up) == 0 {
				time.Sleep(c.tick)
				continue
			}
			id = up[rng.IntN(len(up))]
		}
		hint = 0
		n := c.node(id)
		if n == nil {
			time.Sleep(c.tick)
			continue
		}
		n.mu.RLock()
		h := n.host
		n.mu.RUnlock()
		if h == nil {
			time.Sleep(c.tick)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 20*c.tick)
		r, err := h.Propose(pctx, shard, build(c.clock(n)))
		cancel()
		var nl *raftnode.NotLeaderError
		switch {
		case err == nil:
			return r.(*store.Result), ok
		case errors.As(err, &nl):
			hint = nl.LeaderID
			if hint == 0 {
				time.Sleep(c.tick)
			}
		case errors.Is(err, raftnode.ErrProposalDropped):
			time.Sleep(c.tick)
		default:
			// Leadership lost, timeout, stopped mid-wait: the entry may
			// commit later. The caller retries idempotent commands.
			sent = true
			return nil, unknown
		}
	}
}

// envelope for reading delivered counts in reports.
func (c *cluster) delivered() (int, uint64, uint64) {
	c.faults.mu.Lock()
	n := c.faults.delivered
	c.faults.mu.Unlock()
	d, dr := c.net.Counts()
	return n, d, dr
}

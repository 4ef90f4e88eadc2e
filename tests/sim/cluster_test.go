// Package sim is the in-process simulation tier of the fault-injection
// suite (issue 9): 3- and 5-node Raft clusters in one process, the queue
// store as their state machine, a seeded fault schedule, a concurrent
// workload that records a history, and a checker over that history and the
// replicas' final state.
//
// The cluster is raftnode.Host + store.Store directly, not server/node:
// each node's Pebble lives on its own crashable in-memory filesystem
// (vfs.NewCrashableMem), so a crash can keep only what was synced
// (CrashClone), and a node starts in milliseconds. Commands are built here
// (storepb) and proposed with Host.Propose, as server/ does; a small relay
// moves dead-letter outbox entries as server/'s relay does. What this tier
// does not cover: the gRPC API, forwarding, long polls, housekeeping ticks.
package sim

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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

// simNode is one member: its filesystem outlives its incarnations.
type simNode struct {
	id uint64

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

// cluster is n in-process nodes over a MemNetwork with a fault layer.
type cluster struct {
	log      func(format string, args ...any)
	net      *raftnode.MemNetwork
	faults   *faults
	nodes    map[uint64]*simNode
	ids      []uint64
	tick     time.Duration
	retain   uint64
	crashRng *rand.Rand // unsynced-data choices of CrashClone; under crashMu
	crashMu  sync.Mutex
}

// electionTimeout is the longest election timeout raft may draw: it
// randomises each one in [ElectionTicks, 2*ElectionTicks) ticks, and
// raftnode's default ElectionTicks is 10.
func (c *cluster) electionTimeout() time.Duration { return 2 * 10 * c.tick }

func newCluster(seed uint64, n int, tick time.Duration, retain uint64, logf func(string, ...any)) (*cluster, error) {
	rng := rand.New(rand.NewPCG(seed, 0xc1))
	c := &cluster{log: logf, net: raftnode.NewMemNetwork(), nodes: map[uint64]*simNode{}, tick: tick, retain: retain,
		faults:   &faults{rng: rand.New(rand.NewPCG(seed, 0xfa)), down: map[uint64]bool{}, side: map[uint64]int{}},
		crashRng: rand.New(rand.NewPCG(seed, 0xcc))}
	c.net.Drop(c.faults.drop)
	c.net.Delay(c.faults.delay)
	for id := uint64(1); id <= uint64(n); id++ {
		c.ids = append(c.ids, id)
		c.nodes[id] = &simNode{id: id, fs: vfs.NewCrashableMem(), skew: rng.Int64N(1000) - 500}
	}
	for _, id := range c.ids {
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

// start opens node id's Pebble from its filesystem and starts its host.
func (c *cluster) start(id uint64) error {
	n := c.nodes[id]
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
	if err := h.AddGroup(shard, c.ids, sm{st}); err != nil {
		h.Stop()
		db.Close()
		return fmt.Errorf("node %d: %w", id, err)
	}
	n.db, n.host, n.store, n.up = db, h, st, true
	c.faults.mu.Lock()
	delete(c.faults.down, id)
	c.faults.mu.Unlock()
	c.net.Attach(id, h)
	h.Start()
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
	images := map[uint64]*vfs.MemFS{}
	if lose {
		c.crashMu.Lock()
		for _, id := range ids {
			cfg := vfs.CrashCloneCfg{UnsyncedDataPercent: unsyncedPct}
			if unsyncedPct > 0 {
				cfg.RNG = rand.New(rand.NewPCG(c.crashRng.Uint64(), 1))
			}
			images[id] = c.nodes[id].fs.CrashClone(cfg)
		}
		c.crashMu.Unlock()
	}
	for _, id := range ids {
		n := c.nodes[id]
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
	for _, n := range c.nodes {
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
	for _, id := range c.ids {
		n := c.nodes[id]
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
	n := c.nodes[id]
	n.mu.RLock()
	defer n.mu.RUnlock()
	if !n.up {
		return raftnode.GroupStatus{}, false
	}
	st, err := n.host.Status(shard)
	return st, err == nil
}

// leader returns a node that believes it leads, 0 if none is known.
func (c *cluster) leader() uint64 {
	for _, id := range c.ids {
		if st, ok := c.status(id); ok && st.IsLeader {
			return id
		}
	}
	return 0
}

// agreedLeader returns the leader every live node names, 0 if they differ.
func (c *cluster) agreedLeader() uint64 {
	var l uint64
	for _, id := range c.ids {
		st, ok := c.status(id)
		if !ok {
			return 0
		}
		if st.LeaderID == 0 || (l != 0 && st.LeaderID != l) {
			return 0
		}
		l = st.LeaderID
	}
	if st, ok := c.status(l); !ok || !st.IsLeader {
		return 0
	}
	return l
}

// withStore runs f on node id's store unless the node is down.
func (c *cluster) withStore(id uint64, f func(*store.Store, *pebble.DB) error) error {
	n := c.nodes[id]
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
		for _, id := range c.ids {
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

// clock is node id's wall clock in ms (skewed), as a leader stamps
// commands.
func (c *cluster) clock(id uint64) int64 { return time.Now().UnixMilli() + c.nodes[id].skew }

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
		n := c.nodes[id]
		n.mu.RLock()
		h := n.host
		n.mu.RUnlock()
		if h == nil {
			time.Sleep(c.tick)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 20*c.tick)
		r, err := h.Propose(pctx, shard, build(c.clock(id)))
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

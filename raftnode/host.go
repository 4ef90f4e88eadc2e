// Package raftnode runs many Raft groups (go.etcd.io/raft/v3 RawNodes) on one
// node over one shared Pebble DB for their logs and, optionally, a second one
// without a WAL for their state. One loop goroutine drives every group: each
// round it steps inbound messages and queued proposals, collects every ready
// group, writes all their log entries and HardStates in one synced Pebble
// batch, sends messages, applies committed entries (one indexed batch per
// group, not synced) and advances. See DESIGN.md in this directory.
//
// raftpb types stay inside this package and its transport; the state machine
// sees only payload bytes and a Pebble batch.
package raftnode

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/quorumq/quorumq/internal/keys"
)

// StateMachine is one group's replicated state machine.
type StateMachine interface {
	// Apply applies one committed normal entry's payload (what was passed to
	// Propose), writing only into b: an indexed batch shared by the whole
	// apply round, so later entries read earlier writes. It runs on the
	// host's loop goroutine and must be deterministic. A returned error means
	// storage failure: the group halts (ErrHalted) and the batch is dropped.
	Apply(b *pebble.Batch, index uint64, data []byte) (result any, err error)
	// AfterApply is called after the round's batch is committed, with the
	// round's results in log order. It must not block (it wakes long polls).
	AfterApply(results []any)
}

// Restorer is optionally implemented by a StateMachine: Restored is called
// on the loop goroutine after a snapshot from the leader replaced the
// group's state range (every key under keys.StatePrefix), so caches of that
// state must be dropped and waiters woken. It must not block.
type Restorer interface {
	Restored()
}

// Restoring is optionally implemented by a StateMachine: Restoring is
// called before a snapshot replaces the group's state range or a removal
// deletes it (Restored follows once done), so caches that readers use
// outside Apply stop answering for the state being replaced. It must not
// block.
type Restoring interface {
	Restoring()
}

// Stamper is optionally implemented by a StateMachine: Stamp is called on
// the leader's loop with each proposal's payload (what was passed to
// Propose) just before raft appends it, so in log order. It may rewrite
// data in place, keeping its length: the state machine stamps time there,
// so that stamps follow log order even when classes reorder proposals
// (a proposer's clock read at Propose can be older than an entry
// appended before it). It must not block.
type Stamper interface {
	Stamp(data []byte)
}

// Transport carries raft messages to other nodes. A Transport that also
// implements SnapshotTransport can bring lagging or new members up to date
// by snapshot; without it such members stay behind.
type Transport interface {
	// Send hands messages to the network. It must not block; dropping
	// messages is fine (raft retries). Send owns msgs after the call; the
	// messages must not be modified. MsgSnap never goes through Send.
	Send(msgs []Envelope)
}

// Envelope is one raft message of one group. Msg.To names the node.
type Envelope struct {
	Group uint64
	Msg   *pb.Message
}

// Config configures a Host. Zero values take the documented defaults.
type Config struct {
	NodeID uint64
	// DB holds every group's raft log (HardState, entries, truncation
	// point) and the node's own records (incarnations); shared by all
	// groups, never closed by the host. Its WAL must be on.
	DB *pebble.DB
	// StateDB, if set and not DB, holds the replicated state (applied
	// index, ConfState, the state machines' keys) and may run without a
	// WAL (Options.DisableWAL): each message's body is then written once
	// (in the log's WAL) until a flush. The host makes it durable with
	// explicit flushes (StateFlushBytes, StateFlushInterval, before a
	// snapshot install is recorded, at Stop) and truncates each group's
	// log only up to the applied index its last flush made durable. Never
	// closed by the host. Nil: the state lives in DB (one WAL for both).
	StateDB *pebble.DB
	// StateFlushBytes: with a StateDB, flush it once this many log bytes
	// were written since the last flush (default 8 MiB; keep it well under
	// DB's memtable, so truncation reaches log entries while they are still
	// in the memtable and they are never flushed).
	StateFlushBytes int64
	// StateFlushInterval: with a StateDB, flush it at least this often
	// while anything was applied (default 5s).
	StateFlushInterval time.Duration
	// LogFlushBytes: with a StateDB, once this many log bytes were written
	// since DB's last flush by the host, DB is flushed right after a state
	// flush let every group truncate (two ticks later), so its memtable
	// goes to disk holding only the retained entries, not the entries
	// still waiting for the state flush (0: never; the node sets half of
	// DB's memtable, so DB rarely fills a memtable by itself).
	LogFlushBytes  int64
	Transport      Transport     // may be nil for single-member groups
	TickInterval   time.Duration // default 100ms
	ElectionTicks  int           // default 10
	HeartbeatTicks int           // default 1
	// LogRetain is the number of entries kept behind the applied index when
	// the log is truncated (default 256), for a member that was briefly
	// away. The leader truncates every tick, so entries mostly die in
	// Pebble's memtable; it does not truncate past an active member's
	// match index (or the snapshot it is being sent) unless that member
	// lags by more than LogLagLimit entries; members that are down or far
	// behind get a snapshot.
	LogRetain uint64
	// LogLagLimit is how far (entries) behind the applied index an active
	// member may be and still hold the log for its catch-up (default 4096;
	// 4×LogRetain if LogRetain is set).
	LogLagLimit uint64
	Logger      *slog.Logger // default slog.Default()

	// SnapshotFS and SnapshotDir hold received snapshots while they are
	// streamed in (as sstables, ingested into DB once complete). They must
	// be on the DB's filesystem (ideally the same device, so ingestion is a
	// hard link): e.g. <data-dir>/snapshots. The host owns the directory and
	// removes leftover snapshot files in it at NewHost. Defaults: vfs.Default
	// and a fresh temporary directory removed at Stop — fine for tests, but
	// a crash in the middle of installing a snapshot can then only be
	// finished if the directory survives: set it in production.
	SnapshotFS  vfs.FS
	SnapshotDir string
	// SnapshotChunkBytes bounds the key/value bytes per snapshot chunk sent
	// (default 1 MiB; a single larger record travels alone).
	SnapshotChunkBytes int
	// MaxSnapshotSends bounds the snapshots this host streams at once
	// (default 4); more are reported to raft as failed and retried later.
	MaxSnapshotSends int
	// SnapshotBytesPerSecond bounds the snapshot data this host sends, over
	// all its streams (0: unlimited), so that copying a replica leaves
	// disk and network to foreground traffic.
	SnapshotBytesPerSecond int64
	// Metrics receives log write, apply and proposal timings; nil: none.
	Metrics Metrics
	// EntryCacheBytes bounds each group's cache of recently appended log
	// entries (encoded bytes), from which raft reads entries to apply and
	// to send instead of Pebble (default 4 MiB; negative: no cache).
	EntryCacheBytes int
	// MaxQueuedProposalBytes bounds, per group, the proposals waiting for
	// the loop: framed payload bytes plus a fixed per-proposal overhead
	// (default 16 MiB, four of the largest API requests). Beyond it Propose
	// fails at once with ErrOverloaded; a proposal into an empty queue is
	// always accepted, whatever its size.
	MaxQueuedProposalBytes int
	// MaxUncommittedBytes bounds, per group, the payload bytes of the
	// leader's appended but not yet committed log tail (raft's
	// MaxUncommittedEntriesSize; default 32 MiB). Beyond it proposals fail
	// with ErrOverloaded; raft admits any proposal while the tail is empty.
	MaxUncommittedBytes uint64
}

// GroupStatus is a group's state as of the host's last round.
type GroupStatus struct {
	Group      uint64
	LeaderID   uint64 // 0 = unknown
	Term       uint64
	IsLeader   bool
	Applied    uint64
	Commit     uint64
	FirstIndex uint64
	LastIndex  uint64
	Members    []uint64 // voters and learners, sorted
	Voters     []uint64 // incoming and outgoing voters, sorted
	Learners   []uint64 // learners (and learners to be), sorted
	Joint      bool     // the configuration is joint (a change of several voters is under way)
	// Peers is the leader's view of every member's replication, sorted by
	// id; nil on followers.
	Peers []PeerProgress
	// LeaderContact is when this replica last received an append, a
	// heartbeat or a snapshot (what a leader sends its members only);
	// zero: none since the group started here.
	LeaderContact time.Time
}

// PeerProgress is a leader's view of one member of a group.
type PeerProgress struct {
	ID           uint64
	Match        uint64 // highest index known replicated on the member
	Next         uint64 // next index the leader sends
	State        string // "StateProbe", "StateReplicate" or "StateSnapshot"
	RecentActive bool   // heard from within the last election timeout
}

const (
	maxQueuedMessages = 1 << 14 // per group; beyond: dropped (raft retries)
	// proposalOverhead is what a queued proposal costs besides its payload
	// (proposal, channel, waiter map entry), so that many tiny proposals
	// are bounded too.
	proposalOverhead = 128
	// maxPropChunkBytes bounds the payload of one MsgProp (raft's
	// MaxSizePerMsg): raft takes or drops a MsgProp as a whole, so near
	// the uncommitted limit a round's proposals go in as far as they fit.
	maxPropChunkBytes = 1 << 20
	// maxReusedBatch bounds the buffer a loop batch keeps between rounds.
	maxReusedBatch = 8 << 20
	// indexedBatchRetained is what Pebble's Reset keeps of an indexed
	// batch's buffer (its batchMaxRetainedSize; not settable for them).
	indexedBatchRetained = 1 << 20
)

// Host runs Raft groups. Its methods are safe for concurrent use.
type Host struct {
	cfg   Config
	db    *pebble.DB // the log (Config.DB)
	sdb   *pebble.DB // the state (Config.StateDB, or db)
	split bool       // sdb is not db: state without a WAL, flushed by flusher
	log   *slog.Logger

	// The loop's log and apply batches, reset and reused every round: a
	// batch fresh from Pebble's pool (emptied by every GC) grows to the
	// round's size by doubling and copying, which was 2 % of a node's
	// CPU in a closed-loop profile. Reset keeps the log batch's buffer up
	// to maxReusedBatch and the indexed apply batch's up to Pebble's
	// fixed 1 MiB; while recent rounds outgrow that, each starts as a
	// new batch with room for the largest of them (applyMax, decaying by
	// 1/16 a round): a busy group's apply rounds vary from 64 KiB to 2 MiB.
	logBatch, applyBatch *pebble.Batch
	applyMax             int

	mu      sync.Mutex
	groups  map[uint64]*group
	order   []*group      // in AddGroup order; the loop's view
	changed chan struct{} // closed and replaced when a leader or term changes
	started bool
	stopped bool

	wake     chan struct{} // cap 1: work was queued
	stopc    chan struct{}
	done     chan struct{} // closed when the loop exited
	stopOnce sync.Once

	// Snapshot transfers run off the loop, in goroutines counted by bg
	// (Add only under mu while !stopped) and ended by ctx at Stop.
	ctx         context.Context
	cancel      context.CancelFunc
	bg          sync.WaitGroup
	snapPace    *snapshotPacer      // Config.SnapshotBytesPerSecond
	sending     int                 // under mu: outgoing snapshot streams
	unreachable map[uint64]struct{} // under mu: peers reported unreachable
	removing    map[uint64]bool     // under mu: groups RemoveGroup is removing
	rounds      uint64              // under mu: loop rounds begun (takeUnreachable)
	roundc      chan struct{}       // under mu: closed and replaced when a round begins, if roundWait
	roundWait   bool                // under mu: someone waits on roundc
	snapFS      vfs.FS
	snapDir     string
	snapTempDir bool // snapDir was created by NewHost; removed at Stop

	incarnation uint64            // this data directory's (fence.go)
	pinMu       sync.Mutex        // guards pinned
	pinned      map[uint64]uint64 // peer -> incarnation first heard from
	fenced      atomic.Uint64     // inbound batches refused by AdmitPeer
	recorded    sync.Map          // group -> []uint64: members by the cluster's records (RecordMembers)

	proposals     atomic.Uint64
	syncs         atomic.Uint64
	nextID        atomic.Uint64
	snapsSent     atomic.Uint64
	snapsReceived atomic.Uint64
	snapsApplied  atomic.Uint64

	// Two-DB mode (split): log bytes written (loop), the count at the
	// last state flush, a kick for the flusher and its exit.
	logBytes     atomic.Int64
	flushedBytes atomic.Int64
	logFlushed   int64 // flusher only: logBytes at the last flush of the log DB
	flushKick    chan struct{}
	flushDone    chan struct{}
	stateFlushes atomic.Uint64

	// testHook, if set (tests only, before the call that reaches the
	// step), is called at the named steps of two-DB snapshot installs and
	// removals, where the crash tests take a copy of the synced
	// filesystem.
	testHook func(step string)
}

func (h *Host) hook(step string) {
	if h.testHook != nil {
		h.testHook(step)
	}
}

// NewHost returns a host with no groups. Call AddGroup, then Start.
func NewHost(cfg Config) (_ *Host, err error) {
	if cfg.NodeID == 0 {
		return nil, errors.New("raftnode: NodeID must not be 0")
	}
	if cfg.DB == nil {
		return nil, errors.New("raftnode: DB is required")
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = 100 * time.Millisecond
	}
	if cfg.ElectionTicks <= 0 {
		cfg.ElectionTicks = 10
	}
	if cfg.HeartbeatTicks <= 0 {
		cfg.HeartbeatTicks = 1
	}
	if cfg.LogLagLimit == 0 {
		cfg.LogLagLimit = 4096
		if cfg.LogRetain != 0 {
			cfg.LogLagLimit = 4 * cfg.LogRetain
		}
	}
	if cfg.LogRetain == 0 {
		cfg.LogRetain = 256
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SnapshotChunkBytes <= 0 {
		cfg.SnapshotChunkBytes = 1 << 20
	}
	if cfg.MaxSnapshotSends <= 0 {
		cfg.MaxSnapshotSends = 4
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	if cfg.EntryCacheBytes == 0 {
		cfg.EntryCacheBytes = 4 << 20
	}
	if cfg.MaxQueuedProposalBytes <= 0 {
		cfg.MaxQueuedProposalBytes = 16 << 20
	}
	if cfg.MaxUncommittedBytes == 0 {
		cfg.MaxUncommittedBytes = 32 << 20
	}
	if cfg.StateDB == nil {
		cfg.StateDB = cfg.DB
	}
	if cfg.StateFlushBytes <= 0 {
		cfg.StateFlushBytes = 8 << 20
	}
	if cfg.StateFlushInterval <= 0 {
		cfg.StateFlushInterval = 5 * time.Second
	}
	h := &Host{
		cfg:         cfg,
		db:          cfg.DB,
		sdb:         cfg.StateDB,
		split:       cfg.StateDB != cfg.DB,
		flushKick:   make(chan struct{}, 1),
		flushDone:   make(chan struct{}),
		log:         cfg.Logger.With("node", cfg.NodeID),
		groups:      make(map[uint64]*group),
		changed:     make(chan struct{}),
		wake:        make(chan struct{}, 1),
		stopc:       make(chan struct{}),
		done:        make(chan struct{}),
		unreachable: make(map[uint64]struct{}),
		removing:    make(map[uint64]bool),
		roundc:      make(chan struct{}),
		snapFS:      cfg.SnapshotFS,
		snapPace:    &snapshotPacer{rate: float64(cfg.SnapshotBytesPerSecond)},
		snapDir:     cfg.SnapshotDir,
	}
	if h.snapFS == nil {
		h.snapFS = vfs.Default
	}
	if h.snapDir == "" {
		if h.snapFS != vfs.Default {
			return nil, errors.New("raftnode: SnapshotDir is required with a SnapshotFS")
		}
		dir, err := os.MkdirTemp("", "raftnode-snapshots-")
		if err != nil {
			return nil, fmt.Errorf("raftnode: snapshot dir: %w", err)
		}
		h.snapDir, h.snapTempDir = dir, true
	}
	if err := h.cleanSnapshotDir(); err != nil {
		if h.snapTempDir {
			_ = os.RemoveAll(h.snapDir)
		}
		return nil, fmt.Errorf("raftnode: snapshot dir: %w", err)
	}
	if h.incarnation, h.pinned, err = loadIncarnations(h.db); err != nil {
		if h.snapTempDir {
			_ = os.RemoveAll(h.snapDir)
		}
		return nil, fmt.Errorf("raftnode: %w", err)
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	// Proposal ids must not repeat across restarts or nodes: an entry
	// proposed elsewhere (or before a restart) is applied here without a
	// waiter, and must not complete a local waiter by accident.
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	h.nextID.Store(binary.BigEndian.Uint64(seed[:]) >> 1)
	return h, nil
}

// AddGroup adds a group. On first start (nothing stored for the group) it
// bootstraps the group with peers as voters; afterwards peers is ignored and
// HardState, ConfState and the applied index are loaded from Pebble, so
// applied entries are not delivered again. It may be called before or after
// Start.
func (h *Host) AddGroup(group uint64, peers []uint64, sm StateMachine) error {
	return h.addGroup(group, peers, sm, false)
}

// addGroup is AddGroup, or JoinGroup if join: a fresh group is not
// bootstrapped and waits for its leader.
func (h *Host) addGroup(group uint64, peers []uint64, sm StateMachine, join bool) (err error) {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return ErrStopped
	}
	if _, ok := h.groups[group]; ok || h.removing[group] {
		h.mu.Unlock()
		return fmt.Errorf("%w: %d", ErrGroupExists, group)
	}
	h.mu.Unlock()

	if err := h.recoverRemove(group); err != nil {
		return fmt.Errorf("raftnode: group %d: %w", group, err)
	}
	if err := h.recoverInstall(group); err != nil {
		return fmt.Errorf("raftnode: group %d: %w", group, err)
	}
	st, fresh, err := loadStorage(h.db, h.sdb, group)
	if err != nil {
		return fmt.Errorf("raftnode: group %d: %w", group, err)
	}
	st.cacheLimit = uint64(max(h.cfg.EntryCacheBytes, 0))
	st.cacheFirst = st.lastIndex + 1
	log := h.log.With("group", group)
	rc := &raft.Config{
		ID:              h.cfg.NodeID,
		ElectionTick:    h.cfg.ElectionTicks,
		HeartbeatTick:   h.cfg.HeartbeatTicks,
		Storage:         st,
		Applied:         st.applied,
		MaxSizePerMsg:   maxPropChunkBytes,
		MaxInflightMsgs: 256,
		CheckQuorum:     true,
		PreVote:         true,
		Logger:          raftLogger{l: log},
		// Dropped proposals come back as ErrOverloaded (see drain).
		MaxUncommittedEntriesSize: h.cfg.MaxUncommittedBytes,
		// A leader removed from the group stops leading it at once.
		StepDownOnRemoval: true,
	}
	defer func() { // newRaft panics on a bad config or inconsistent storage
		if r := recover(); r != nil {
			err = fmt.Errorf("raftnode: group %d: start raft: %v", group, r)
		}
	}()
	rn, err := raft.NewRawNode(rc)
	if err != nil {
		return fmt.Errorf("raftnode: group %d: %w", group, err)
	}
	if fresh && !join {
		if len(peers) == 0 {
			return fmt.Errorf("raftnode: group %d: no peers to bootstrap with", group)
		}
		rp := make([]raft.Peer, len(peers))
		for i, p := range peers {
			rp[i] = raft.Peer{ID: p}
		}
		if err := rn.Bootstrap(rp); err != nil {
			return fmt.Errorf("raftnode: group %d: bootstrap: %w", group, err)
		}
	}
	g := newGroup(group, sm, st, rn, log)
	g.maxPropBytes = h.cfg.MaxQueuedProposalBytes
	g.activeTicks = uint64(h.cfg.ElectionTicks)
	if voters := rn.Status().Config.Voters.IDs(); len(voters) == 1 {
		_, g.selfElect = voters[h.cfg.NodeID]
	}
	g.refreshStatus()

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return ErrStopped
	}
	if _, ok := h.groups[group]; ok || h.removing[group] {
		return fmt.Errorf("%w: %d", ErrGroupExists, group)
	}
	h.groups[group] = g
	h.order = append(h.order, g)
	h.signal()
	return nil
}

// Start starts the host's loop goroutine. Stop stops it.
func (h *Host) Start() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.started || h.stopped {
		return
	}
	h.started = true
	go h.run()
	if h.split {
		go h.flusher()
	} else {
		close(h.flushDone)
	}
}

// Stop stops the loop and waits for it to exit. Waiting proposals and reads
// fail with ErrStopped. Stop does not close the DB. It is idempotent.
func (h *Host) Stop() {
	h.stopOnce.Do(func() {
		h.mu.Lock()
		h.stopped = true
		started := h.started
		groups := slices.Clone(h.order)
		h.mu.Unlock()
		h.cancel()
		close(h.stopc)
		if started {
			<-h.done
			<-h.flushDone
		}
		h.bg.Wait() // snapshot streams end with h.ctx
		if h.split {
			// Nothing writes the state any more: make it durable, so a
			// clean restart replays nothing.
			if err := h.flushState(); err != nil {
				h.log.Error("flush state at stop", "err", err)
			}
		}
		for _, g := range groups {
			g.close(ErrStopped)
			h.dropStaged(g)
		}
		if h.snapTempDir {
			_ = os.RemoveAll(h.snapDir)
		}
	})
}

// ReportUnreachable tells every group that messages to node to could not
// be delivered (the transport calls it when a send fails), so leaders stop
// pipelining appends to it and probe instead. It does not block.
func (h *Host) ReportUnreachable(to uint64) {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return
	}
	h.unreachable[to] = struct{}{}
	h.mu.Unlock()
	h.signal()
}

// takeUnreachable returns and clears the peers reported unreachable. The
// loop calls it once at the start of every round, after it took the
// groups of the round (active): RemoveGroup counts rounds by it.
func (h *Host) takeUnreachable() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rounds++
	if h.roundWait {
		close(h.roundc)
		h.roundc, h.roundWait = make(chan struct{}), false
	}
	if len(h.unreachable) == 0 {
		return nil
	}
	ids := make([]uint64, 0, len(h.unreachable))
	for id := range h.unreachable {
		ids = append(ids, id)
	}
	clear(h.unreachable)
	return ids
}

// SnapshotsSent returns the number of snapshots this host streamed to a
// peer that accepted them.
func (h *Host) SnapshotsSent() uint64 { return h.snapsSent.Load() }

// SnapshotsReceived returns the number of snapshots fully received and
// handed to raft (raft may still refuse a stale one).
func (h *Host) SnapshotsReceived() uint64 { return h.snapsReceived.Load() }

// SnapshotsApplied returns the number of snapshots installed (ingested and
// restored) on this host.
func (h *Host) SnapshotsApplied() uint64 { return h.snapsApplied.Load() }

// LogBytes estimates the disk space taken by the group's raft log (Pebble's
// estimate over the log key range: flushed data only, so a freshly written
// log may read low).
func (h *Host) LogBytes(group uint64) (uint64, error) {
	if _, err := h.lookup(group); err != nil {
		return 0, err
	}
	return h.db.EstimateDiskUsage(keys.LogPrefix(group), keys.LogEnd(group))
}

// Proposals returns the number of proposals Propose has accepted.
func (h *Host) Proposals() uint64 { return h.proposals.Load() }

// LogSyncs returns the number of synced log writes (one per round that had
// entries or a HardState needing durability, whatever the number of groups
// and proposals in it).
func (h *Host) LogSyncs() uint64 { return h.syncs.Load() }

// Propose replicates data through the group's log and returns the
// StateMachine's Apply result once the entry is committed (fsynced on a
// majority) and applied on this node. Proposals queued together share one
// fsync. The proposal goes in the Class ctx carries (WithClass): classes
// share each round fairly and are bounded separately. Errors: *NotLeaderError (this node is not the leader),
// ErrLeadershipLost (outcome unknown), ErrProposalDropped (not appended),
// ErrOverloaded (not appended: the group's backlog is full), ErrStopped,
// ErrGroupNotFound, ErrHalted, or ctx's error (the waiter is removed; the
// entry may still commit).
func (h *Host) Propose(ctx context.Context, group uint64, data []byte) (any, error) {
	g, err := h.group(group)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	p := &proposal{id: h.nextID.Add(1), class: classFrom(ctx), ch: make(chan result, 1)}
	p.data = frameUser(p.id, data)
	if err := g.enqueueProposal(p); err != nil {
		return nil, err
	}
	h.proposals.Add(1)
	h.signal()
	var r result
	select {
	case r = <-p.ch:
	case <-ctx.Done():
		if g.dropWaiter(p.id) {
			r = result{err: ctx.Err()}
		} else {
			r = <-p.ch // the loop is delivering it
		}
	}
	h.observeProposal(ctx, group, start, r)
	return r.v, r.err
}

// observeProposal reports a finished proposal to Config.Metrics and to the
// ProposeTimes its context carries.
func (h *Host) observeProposal(ctx context.Context, group uint64, start time.Time, r result) {
	var commit, apply time.Duration
	if r.err == nil && !r.committed.IsZero() {
		commit, apply = r.committed.Sub(start), r.applied.Sub(r.committed)
	}
	h.cfg.Metrics.ProposalDone(group, commit, apply, r.err)
	if t := proposeTimesFrom(ctx); t != nil {
		t.Queued, t.Committed, t.Applied = start, r.committed, r.applied
	}
}

// ReadIndex is a linearizable read barrier: it returns once this node's
// applied index has reached the commit index that a quorum confirmed after
// the call began. Only the leader serves it (*NotLeaderError otherwise).
func (h *Host) ReadIndex(ctx context.Context, group uint64) error {
	g, err := h.group(group)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &readReq{id: h.nextID.Add(1), ch: make(chan error, 1)}
	if err := g.enqueueRead(r); err != nil {
		return err
	}
	h.signal()
	select {
	case err := <-r.ch:
		return err
	case <-ctx.Done():
		if g.dropRead(r.id) {
			return ctx.Err()
		}
		return <-r.ch
	}
}

// Step hands an inbound raft message to the group. It does not block: the
// message is queued for the loop (and dropped if the queue is full, which
// raft tolerates). m must not be modified afterwards. A MsgSnap is dropped:
// snapshots arrive with their data through ReceiveSnapshot.
func (h *Host) Step(ctx context.Context, group uint64, m *pb.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g, err := h.group(group)
	if err != nil {
		return err
	}
	if err := g.enqueueMessage(m); err != nil {
		return err
	}
	h.signal()
	return nil
}

// Status returns the group's state as of the last loop round. A halted
// group returns its last status and an error matching ErrHalted.
func (h *Host) Status(group uint64) (GroupStatus, error) {
	g, err := h.lookup(group)
	if err != nil {
		return GroupStatus{}, err
	}
	return g.statusSnapshot()
}

// WaitLeader waits until the group knows a leader and returns its id.
func (h *Host) WaitLeader(ctx context.Context, group uint64) (uint64, error) {
	var id uint64
	err := h.waitStatus(ctx, group, func(st GroupStatus) bool {
		id = st.LeaderID
		return id != 0
	})
	return id, err
}

// TransferLeadership asks the leader (this node) to hand leadership to node
// to, and waits until this node sees to as leader or ctx ends. Best effort:
// raft aborts a transfer that does not finish within an election timeout,
// and the loop skips one while a membership change is under way
// (ErrConfChangeInProgress at once if the configuration is joint).
func (h *Host) TransferLeadership(ctx context.Context, group, to uint64) error {
	g, err := h.lookup(group)
	if err != nil {
		return err
	}
	st, err := g.statusSnapshot()
	if err != nil {
		return err
	}
	if st.LeaderID == to {
		return nil
	}
	if !st.IsLeader {
		return &NotLeaderError{Group: group, LeaderID: st.LeaderID}
	}
	if st.Joint {
		return fmt.Errorf("%w: group %d: joint configuration", ErrConfChangeInProgress, group)
	}
	if err := g.enqueueTransfer(to); err != nil {
		return err
	}
	h.signal()
	return h.waitStatus(ctx, group, func(st GroupStatus) bool { return st.LeaderID == to })
}

// waitStatus waits until cond holds for the group's status.
func (h *Host) waitStatus(ctx context.Context, group uint64, cond func(GroupStatus) bool) error {
	for {
		h.mu.Lock()
		ch, g, stopped := h.changed, h.groups[group], h.stopped
		h.mu.Unlock()
		if stopped {
			return ErrStopped
		}
		if g == nil {
			return fmt.Errorf("%w: %d", ErrGroupNotFound, group)
		}
		st, err := g.statusSnapshot()
		if err != nil {
			return err
		}
		if cond(st) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-h.stopc:
			return ErrStopped
		}
	}
}

func (h *Host) lookup(group uint64) (*group, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.groups[group]
	if g == nil {
		return nil, fmt.Errorf("%w: %d", ErrGroupNotFound, group)
	}
	return g, nil
}

// group is lookup for operations that need a running host.
func (h *Host) group(group uint64) (*group, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return nil, ErrStopped
	}
	g := h.groups[group]
	if g == nil {
		return nil, fmt.Errorf("%w: %d", ErrGroupNotFound, group)
	}
	return g, nil
}

// signal wakes the loop.
func (h *Host) signal() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// broadcast wakes status waiters.
func (h *Host) broadcast() {
	h.mu.Lock()
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

// Payload framing: kind byte, then per kind
//
//	kindUser     id (8 bytes BE) + the proposer's data
//	kindTruncate index (8 bytes BE): truncate the log up to and including it
//
// Kinds only grow. Empty entries (a new leader's) carry no frame.
const (
	kindUser     byte = 1
	kindTruncate byte = 2
)

func frameUser(id uint64, data []byte) []byte {
	b := make([]byte, 0, 9+len(data))
	b = append(b, kindUser)
	b = binary.BigEndian.AppendUint64(b, id)
	return append(b, data...)
}

func frameTruncate(index uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{kindTruncate}, index)
}

// unframe splits a framed payload into kind, id (or index) and data.
func unframe(b []byte) (kind byte, n uint64, data []byte, err error) {
	if len(b) < 9 {
		return 0, 0, nil, fmt.Errorf("short entry payload (%d bytes)", len(b))
	}
	kind, n, data = b[0], binary.BigEndian.Uint64(b[1:9]), b[9:]
	switch kind {
	case kindUser:
	case kindTruncate:
		if len(data) != 0 {
			return 0, 0, nil, errors.New("truncate entry: trailing bytes")
		}
	default:
		return 0, 0, nil, fmt.Errorf("unknown entry kind %d", kind)
	}
	return kind, n, data, nil
}

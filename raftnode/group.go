package raftnode

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// group is one Raft group on a host.
//
// Fields above mu belong to the loop goroutine (and to AddGroup before the
// group is published). Fields below mu are shared with API callers.
type group struct {
	id  uint64
	sm  StateMachine
	st  *storage
	rn  *raft.RawNode
	log *slog.Logger

	halted       error  // set once; the loop skips the group afterwards
	term         uint64 // term and leadership as of the last check
	leader       bool
	lastLeader   uint64 // loop only: the last leader logged (refreshStatus)
	truncPending uint64 // truncation index proposed in truncTerm
	truncWant    uint64 // two-DB mode: highest truncation index applied, done locally up to the durable applied index
	truncTerm    uint64
	snapWarned   bool
	selfElect    bool              // sole voter: campaign once conf changes are applied
	leadTicks    int               // ticks since this node became leader (0 otherwise)
	ticks        uint64            // loop only: ticks since the group started here
	heardAt      map[uint64]uint64 // loop only: member -> g.ticks of its last append or heartbeat answer
	activeTicks  uint64            // a member heard from within this many ticks is active (the election timeout); set before publication
	stepped      []*stagedSnap     // snapshots stepped this round, until installed or dropped
	lostLog      map[uint64]int    // member -> consecutive rejections below its match (loop only)
	membersOf    *pb.ConfState     // the ConfState status.Members was derived from

	maxPropBytes int // bound of each class's propBytes (Config.MaxQueuedProposalBytes); set before publication, read-only

	mu          sync.Mutex
	closed      error                   // non-nil: no more requests (stopped or halted)
	props       [numClasses][]*proposal // by class, each in arrival order
	propBytes   [numClasses]int         // cost of props (payloads + proposalOverhead each)
	msgs        []*pb.Message
	reads       []*readReq
	transfers   []uint64
	confChanges []*ccReq
	snaps       []*stagedSnap        // received snapshots waiting to be stepped
	reports     []snapReport         // outcomes of snapshots sent
	receiving   bool                 // a snapshot is being received
	waiters     map[uint64]*proposal // queued or proposed, by id
	readWait    map[uint64]*readReq
	status      GroupStatus
	heard       time.Time // the last append, heartbeat or snapshot from a leader
}

// stagedSnap is a received snapshot: its MsgSnap and the sstable holding
// its data, ready for ingestion.
type stagedSnap struct {
	msg         *pb.Message
	path        string
	index, term uint64
	consumed    bool // loop only: ingested (the file is gone)
}

type snapReport struct {
	to     uint64
	status raft.SnapshotStatus
}

// inbox is what the loop takes from a group each round.
type inbox struct {
	msgs      []*pb.Message
	props     []*proposal // this round's share (see takeRound)
	propsLeft bool        // proposals wait for the next round
	reads     []*readReq
	transfers []uint64
	ccs       []*ccReq
	snaps     []*stagedSnap
	reports   []snapReport
}

type result struct {
	v   any
	err error
	// committed and applied are when the round applying the entry began
	// and when its result was ready (zero unless applied).
	committed, applied time.Time
}

type proposal struct {
	id    uint64
	data  []byte // framed
	class Class
	term  uint64      // loop only: term it was proposed in, 0 while queued
	ch    chan result // cap 1, receives exactly one result
}

type readReq struct {
	id    uint64
	term  uint64     // loop only: term it was requested in, 0 while queued
	index uint64     // loop only: confirmed read index, 0 until known
	ch    chan error // cap 1
}

func newGroup(id uint64, sm StateMachine, st *storage, rn *raft.RawNode, log *slog.Logger) *group {
	return &group{
		id: id, sm: sm, st: st, rn: rn, log: log,
		waiters:  make(map[uint64]*proposal),
		readWait: make(map[uint64]*readReq),
	}
}

func (g *group) enqueueProposal(p *proposal) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed != nil {
		return g.closed
	}
	cost := len(p.data) + proposalOverhead
	c := p.class
	if len(g.props[c]) > 0 && g.propBytes[c]+cost > g.maxPropBytes {
		return fmt.Errorf("%w: %w: group %d: %d bytes of proposals queued in class %d (limit %d)",
			ErrOverloaded, ErrProposalDropped, g.id, g.propBytes[c], c, g.maxPropBytes)
	}
	g.props[c] = append(g.props[c], p)
	g.propBytes[c] += cost
	g.waiters[p.id] = p
	return nil
}

func (g *group) enqueueRead(r *readReq) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed != nil {
		return g.closed
	}
	g.reads = append(g.reads, r)
	g.readWait[r.id] = r
	return nil
}

func (g *group) enqueueMessage(m *pb.Message) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed != nil {
		return g.closed
	}
	// A MsgSnap without its data must never reach raft: raft would restore
	// state this node does not have. Snapshots come via ReceiveSnapshot.
	if m.GetType() != pb.MsgSnap && len(g.msgs) < maxQueuedMessages {
		g.msgs = append(g.msgs, m)
	}
	if t := m.GetType(); t == pb.MsgApp || t == pb.MsgHeartbeat {
		g.heard = time.Now()
	}
	return nil
}

// enqueueSnapshot queues a received, staged snapshot for the loop.
func (g *group) enqueueSnapshot(s *stagedSnap) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed != nil {
		return g.closed
	}
	g.snaps = append(g.snaps, s)
	g.heard = time.Now()
	return nil
}

// enqueueSnapReport queues the outcome of a snapshot sent to a peer.
func (g *group) enqueueSnapReport(to uint64, st raft.SnapshotStatus) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed == nil {
		g.reports = append(g.reports, snapReport{to: to, status: st})
	}
}

// beginReceive claims the group's single inbound snapshot slot.
func (g *group) beginReceive() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.receiving {
		return false
	}
	g.receiving = true
	return true
}

func (g *group) endReceive() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.receiving = false
}

// takeSnaps removes and returns the snapshots not yet stepped.
func (g *group) takeSnaps() []*stagedSnap {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.snaps
	g.snaps = nil
	return s
}

func (g *group) enqueueTransfer(to uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed != nil {
		return g.closed
	}
	g.transfers = append(g.transfers, to)
	return nil
}

// dropWaiter removes a proposal's waiter; false if a result is already on
// its way.
func (g *group) dropWaiter(id uint64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.waiters[id]
	delete(g.waiters, id)
	return ok
}

func (g *group) dropRead(id uint64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.readWait[id]
	delete(g.readWait, id)
	return ok
}

// takeInbox hands the queued requests to the loop: all but the proposals,
// of which it takes a round's fair share (takeRound). Proposals and reads
// whose callers gave up are left out.
func (g *group) takeInbox() inbox {
	g.mu.Lock()
	defer g.mu.Unlock()
	in := inbox{msgs: g.msgs, transfers: g.transfers, ccs: g.confChanges, snaps: g.snaps, reports: g.reports}
	var cost [numClasses]int
	in.props, cost, in.propsLeft = takeRound(&g.props, roundProposalBytes, func(p *proposal) bool { return g.waiters[p.id] == p })
	for c := range g.propBytes {
		g.propBytes[c] -= cost[c]
		if len(g.props[c]) == 0 {
			g.props[c] = nil // let the backing array go
		}
	}
	for _, r := range g.reads {
		if g.readWait[r.id] == r {
			in.reads = append(in.reads, r)
		}
	}
	g.msgs, g.reads, g.transfers, g.snaps, g.reports, g.confChanges = nil, nil, nil, nil, nil, nil
	return in
}

// finish delivers a proposal's result if its caller still waits.
func (g *group) finish(id uint64, r result) {
	g.mu.Lock()
	p := g.waiters[id]
	delete(g.waiters, id)
	g.mu.Unlock()
	if p != nil {
		p.ch <- r
	}
}

func (g *group) finishRead(id uint64, err error) {
	g.mu.Lock()
	r := g.readWait[id]
	delete(g.readWait, id)
	g.mu.Unlock()
	if r != nil {
		r.ch <- err
	}
}

// failStale fails proposals and reads issued in another term than term, or
// all issued ones if this node is no longer leader: their outcome is unknown.
func (g *group) failStale(term uint64, leader bool) {
	g.mu.Lock()
	var ps []*proposal
	var rs []*readReq
	for id, p := range g.waiters {
		if p.term != 0 && (!leader || p.term != term) {
			ps = append(ps, p)
			delete(g.waiters, id)
		}
	}
	for id, r := range g.readWait {
		if r.term != 0 && (!leader || r.term != term) {
			rs = append(rs, r)
			delete(g.readWait, id)
		}
	}
	g.mu.Unlock()
	for _, p := range ps {
		p.ch <- result{err: fmt.Errorf("%w: group %d", ErrLeadershipLost, g.id)}
	}
	for _, r := range rs {
		r.ch <- fmt.Errorf("%w: group %d", ErrLeadershipLost, g.id)
	}
}

// finishReads completes the reads whose index has been applied.
func (g *group) finishReads(applied uint64) {
	g.mu.Lock()
	var rs []*readReq
	for id, r := range g.readWait {
		if r.index != 0 && r.index <= applied {
			rs = append(rs, r)
			delete(g.readWait, id)
		}
	}
	g.mu.Unlock()
	for _, r := range rs {
		r.ch <- nil
	}
}

// close fails everything waiting and refuses new requests with err.
func (g *group) close(err error) {
	g.mu.Lock()
	g.closeLocked(err)
}

// closeIfQuiet closes the group as close does unless it heard from a
// leader (an append, a heartbeat, a snapshot) within quiet: then it stays
// open and closeIfQuiet reports false. The check and the close are one
// critical section with enqueueMessage, so no message is taken between
// them, and any message still queued or being stepped was heard.
func (g *group) closeIfQuiet(err error, quiet time.Duration) bool {
	g.mu.Lock()
	if quiet > 0 && !g.heard.IsZero() && time.Since(g.heard) < quiet {
		g.mu.Unlock()
		return false
	}
	g.closeLocked(err)
	return true
}

// closeLocked is close with g.mu held; it unlocks it.
func (g *group) closeLocked(err error) {
	if g.closed == nil {
		g.closed = err
	}
	ps, rs, ccs := g.waiters, g.readWait, g.confChanges
	g.waiters, g.readWait = make(map[uint64]*proposal), make(map[uint64]*readReq)
	g.props, g.propBytes = [numClasses][]*proposal{}, [numClasses]int{}
	g.reads, g.msgs, g.transfers, g.reports, g.confChanges = nil, nil, nil, nil, nil
	g.mu.Unlock()
	for _, c := range ccs {
		c.ch <- err
	}
	for _, p := range ps {
		p.ch <- result{err: err}
	}
	for _, r := range rs {
		r.ch <- err
	}
}

// withProgress is RawNode.WithProgress with RecentActive made steady:
// raft clears every member's flag at each CheckQuorum (once an election
// timeout) and sets it again on the member's next message, so for about a
// heartbeat after each check a healthy member looks inactive. Here a
// member is also active if it answered an append or a heartbeat (what
// raft sets the flag on) within the last election timeout, which is what
// the flag is meant to say.
func (g *group) withProgress(fn func(uint64, raft.ProgressType, tracker.Progress)) {
	g.rn.WithProgress(func(id uint64, typ raft.ProgressType, pr tracker.Progress) {
		if !pr.RecentActive {
			if at, ok := g.heardAt[id]; ok && g.ticks-at <= g.activeTicks {
				pr.RecentActive = true
			}
		}
		fn(id, typ, pr)
	})
}

// noteHeard records that member id answered an append or a heartbeat now.
func (g *group) noteHeard(id uint64) {
	if id == 0 {
		return
	}
	if g.heardAt == nil {
		g.heardAt = map[uint64]uint64{}
	}
	g.heardAt[id] = g.ticks
}

// refreshStatus recomputes the shared status from raft and storage (loop
// only). It reports whether the leader, the term or the applied
// configuration changed (status waiters are woken).
func (g *group) refreshStatus() (leaderChanged bool) {
	bs := g.rn.BasicStatus()
	first, last, applied := g.st.bounds()
	var peers []PeerProgress
	if bs.RaftState == raft.StateLeader {
		g.withProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
			peers = append(peers, PeerProgress{
				ID: id, Match: pr.Match, Next: pr.Next, State: pr.State.String(), RecentActive: pr.RecentActive,
			})
		})
		slices.SortFunc(peers, func(a, b PeerProgress) int { return cmp.Compare(a.ID, b.ID) })
	}
	g.mu.Lock()
	old := g.status
	members, voters, learners, joint := old.Members, old.Voters, old.Learners, old.Joint
	confChanged := false
	if cs := g.st.appliedConfStateRef(); cs != g.membersOf || members == nil {
		members, g.membersOf = confMembers(cs), cs
		voters, learners, joint = confSets(cs)
		confChanged = !slices.Equal(members, old.Members) || !slices.Equal(voters, old.Voters) || joint != old.Joint
	}
	g.status = GroupStatus{
		Group:      g.id,
		LeaderID:   bs.Lead,
		Term:       bs.GetTerm(),
		IsLeader:   bs.RaftState == raft.StateLeader,
		Applied:    applied,
		Commit:     bs.GetCommit(),
		FirstIndex: first,
		LastIndex:  last,
		Members:    members,
		Voters:     voters,
		Learners:   learners,
		Joint:      joint,
		Peers:      peers,
	}
	cur := g.status
	g.mu.Unlock()
	if cur.LeaderID != 0 && cur.LeaderID != g.lastLeader {
		// Once per election won by another node than the last known
		// leader (from 0: the first this node knows); the leaderless
		// moments between are not logged, raft's chatter stays at debug.
		g.log.Info("raft leader changed", "from", g.lastLeader, "to", cur.LeaderID, "term", cur.Term)
		g.lastLeader = cur.LeaderID
	}
	return confChanged || old.LeaderID != cur.LeaderID || old.Term != cur.Term || old.IsLeader != cur.IsLeader
}

func (g *group) statusSnapshot() (GroupStatus, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.status
	st.Members = slices.Clone(st.Members)
	st.Voters = slices.Clone(st.Voters)
	st.Learners = slices.Clone(st.Learners)
	st.Peers = slices.Clone(st.Peers)
	st.LeaderContact = g.heard
	if errors.Is(g.closed, ErrHalted) {
		return st, g.closed
	}
	return st, nil
}

func confMembers(cs *pb.ConfState) []uint64 {
	var m []uint64
	for _, ids := range [][]uint64{cs.GetVoters(), cs.GetVotersOutgoing(), cs.GetLearners(), cs.GetLearnersNext()} {
		m = append(m, ids...)
	}
	slices.Sort(m)
	return slices.Compact(m)
}

package raftnode

import (
	"encoding/binary"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
)

// run is the host's loop: the only goroutine that touches RawNodes.
func (h *Host) run() {
	defer close(h.done)
	defer func() {
		for _, b := range []*pebble.Batch{h.logBatch, h.applyBatch} {
			if b != nil {
				_ = b.Close()
			}
		}
	}()
	ticker := time.NewTicker(h.cfg.TickInterval)
	defer ticker.Stop()
	var ticks uint64
	for {
		more := h.round()
		if more {
			select {
			case <-h.stopc:
				return
			case <-ticker.C:
				ticks++
				h.tick(ticks)
			default:
			}
			continue
		}
		select {
		case <-h.stopc:
			return
		case <-ticker.C:
			ticks++
			h.tick(ticks)
		case <-h.wake:
		}
	}
}

// active returns the groups the loop serves (not halted).
func (h *Host) active() []*group {
	h.mu.Lock()
	gs := slices.Clone(h.order)
	h.mu.Unlock()
	return slices.DeleteFunc(gs, func(g *group) bool { return g.halted != nil })
}

func (h *Host) tick(n uint64) {
	for _, g := range h.active() {
		h.guard(g, func() error {
			g.rn.Tick()
			g.ticks++
			if g.rn.BasicStatus().RaftState == raft.StateLeader {
				g.leadTicks++
			} else {
				g.leadTicks = 0
			}
			h.maybeTruncate(g)
			if err := h.truncateLocal(g); err != nil {
				return fmt.Errorf("truncate log: %w", err)
			}
			return nil
		})
	}
}

// readyGroup is one group's share of a round.
type readyGroup struct {
	g        *group
	rd       raft.Ready
	app      appendState
	snapTo   []uint64 // MsgSnap recipients, reported as failed after Advance
	restored bool     // the Ready's snapshot was installed
}

// round runs one pass of the Ready loop over all groups:
//
//  1. step queued inbound messages, proposals, read requests, transfers;
//  2. collect the Ready of every group that has one;
//  3. send the messages that promise nothing about local durable state
//     (a leader's appends and heartbeats, ...: see sendsEarly), so followers
//     write and sync in parallel with us; install received snapshots (one
//     atomic ingestion each), then write every group's entries and
//     HardState in one Pebble batch, committed with Sync if any group needs
//     durability;
//  4. send the other messages (after the sync, so a vote or an append ack
//     never precedes the state it promises); start streaming snapshots;
//  5. per group: apply committed entries in one indexed batch (NoSync),
//     AfterApply, Advance, complete applied reads, publish status, deliver
//     results, then fail what a lost leadership leaves unknown.
//
// It reports whether a group has more to do right away.
func (h *Host) round() (more bool) {
	groups := h.active()
	unreachable := h.takeUnreachable()
	for _, g := range groups {
		h.guard(g, func() error {
			if h.drain(g, unreachable) {
				more = true // proposals beyond this round's share
			}
			return nil
		})
	}
	var rs []*readyGroup
	for _, g := range groups {
		h.guard(g, func() error {
			if g.rn.HasReady() {
				rs = append(rs, &readyGroup{g: g, rd: g.rn.Ready()})
			}
			return nil
		})
	}
	if len(rs) == 0 {
		for _, g := range groups {
			h.dropStepped(g)
		}
		return more
	}

	if h.cfg.Transport != nil {
		var early []Envelope
		for _, r := range rs {
			for _, m := range r.rd.Messages {
				if sendsEarly(m) {
					early = append(early, Envelope{Group: r.g.id, Msg: m})
				}
			}
		}
		if len(early) > 0 {
			h.cfg.Transport.Send(early)
		}
	}

	if h.logBatch == nil {
		h.logBatch = h.db.NewBatch(pebble.WithMaxRetainedSizeBytes(maxReusedBatch))
	}
	b := h.logBatch
	sync := false
	for _, r := range rs {
		if !raft.IsEmptySnap(r.rd.Snapshot) {
			// Before the shared batch: its HardState (commit = snapshot
			// index) and entries after the snapshot build on the new state.
			if err := h.installSnapshot(r.g, r.rd.Snapshot); err != nil {
				h.halt(r.g, fmt.Errorf("install snapshot: %w", err))
				continue
			}
			r.restored = true
			sync = true
			if err := b.Delete(keys.RestoreMarker(r.g.id), nil); err != nil {
				h.halt(r.g, fmt.Errorf("install snapshot: %w", err))
				continue
			}
		}
		app, err := r.g.st.stageAppend(b, r.rd.Entries, r.rd.HardState)
		if err != nil {
			h.halt(r.g, fmt.Errorf("append raft log: %w", err))
			continue
		}
		r.app = app
		sync = sync || r.rd.MustSync
	}
	for _, g := range groups {
		h.dropStepped(g)
	}
	rs = slices.DeleteFunc(rs, func(r *readyGroup) bool { return r.g.halted != nil })
	if !b.Empty() {
		opts := pebble.NoSync
		if sync {
			opts = pebble.Sync
		}
		start := time.Now()
		err := b.Commit(opts)
		h.cfg.Metrics.LogWritten(time.Since(start), sync, b.Len())
		h.wroteLog(b.Len())
		if err != nil {
			_ = b.Close()
			h.logBatch = nil
			for _, r := range rs {
				h.halt(r.g, fmt.Errorf("write raft log: %w", err))
			}
			return false
		}
		if sync {
			h.syncs.Add(1)
		}
	}
	b.Reset()
	for _, r := range rs {
		r.g.st.commitAppend(r.app)
		if r.restored {
			h.snapsApplied.Add(1)
			meta := r.rd.Snapshot.GetMetadata()
			r.g.log.Info("snapshot installed", "index", meta.GetIndex(), "term", meta.GetTerm())
			if rr, ok := r.g.sm.(Restorer); ok {
				rr.Restored()
			}
		}
	}

	var envs []Envelope
	for _, r := range rs {
		for _, m := range r.rd.Messages {
			if m.GetType() == pb.MsgSnap {
				if !h.startSnapshot(r.g, m) {
					r.snapTo = append(r.snapTo, m.GetTo())
				}
				continue
			}
			if sendsEarly(m) && h.cfg.Transport != nil {
				continue // sent before the log write
			}
			envs = append(envs, Envelope{Group: r.g.id, Msg: m})
		}
	}
	if len(envs) > 0 && h.cfg.Transport != nil {
		h.cfg.Transport.Send(envs)
	}

	changed := false
	for _, r := range rs {
		g := r.g
		h.guard(g, func() error {
			for _, s := range r.rd.ReadStates {
				g.setReadIndex(s.RequestCtx, s.Index)
			}
			var committed time.Time
			if len(r.rd.CommittedEntries) > 0 {
				committed = time.Now()
			}
			dones, err := h.apply(g, r.rd.CommittedEntries)
			if err != nil {
				return err
			}
			var appliedAt time.Time
			if !committed.IsZero() {
				appliedAt = time.Now()
				h.cfg.Metrics.Applied(g.id, len(r.rd.CommittedEntries), appliedAt.Sub(committed))
			}
			g.rn.Advance(r.rd)
			for _, to := range r.snapTo {
				g.rn.ReportSnapshot(to, raft.SnapshotFailure)
			}
			_, _, applied := g.st.bounds()
			g.finishReads(applied)
			if g.refreshStatus() {
				changed = true
			}
			// Results go out after the status shows them applied, and
			// before the leadership check: an entry applied in the round
			// that also brought a new term (or a step-down) has a definite
			// result, which ErrLeadershipLost (outcome unknown) would hide
			// (a Receive would then lease messages to nobody). Likewise a
			// read confirmed by a quorum and now applied is served.
			for _, d := range dones {
				g.finish(d.id, result{v: d.v, committed: committed, applied: appliedAt})
			}
			h.checkLeadership(g)
			if g.rn.HasReady() {
				more = true
			}
			return nil
		})
	}
	if changed {
		h.broadcast()
	}
	return more
}

// sendsEarly reports whether a Ready's message may go out before the
// Ready's entries and HardState are durable: all but the answers that vote
// for a candidate or acknowledge an append (and MsgSnap, which needs the
// applied state and is streamed after the write). This is raft's own rule
// for AsyncStorageWrites (raft.send keeps exactly those answers back until
// the write is done). It holds here because the loop steps no message of
// the next round (an append ack, a vote) before this round's write is
// synced, and raft counts the leader's own append and a candidate's own
// vote only at Advance, after the write: a leader sending its appends
// before its own fsync (Raft thesis §10.2.1) still commits an entry only
// once a majority has it on disk.
func sendsEarly(m *pb.Message) bool {
	switch m.GetType() {
	case pb.MsgAppResp, pb.MsgVoteResp, pb.MsgPreVoteResp, pb.MsgSnap:
		return false
	}
	return true
}

// drain steps the group's queued requests into its RawNode: all but the
// proposals, of which it takes one round's share. It reports whether
// proposals are left for the next round.
func (h *Host) drain(g *group, unreachable []uint64) (propsLeft bool) {
	if g.selfElect {
		// A sole voter need not wait for an election timeout; raft refuses
		// to campaign while committed conf changes are unapplied.
		if bs := g.rn.BasicStatus(); bs.RaftState == raft.StateLeader {
			g.selfElect = false
		} else if bs.Applied >= bs.GetCommit() {
			g.selfElect = false
			_ = g.rn.Campaign()
		}
	}
	in := g.takeInbox()
	propsLeft = in.propsLeft
	for _, id := range unreachable {
		g.rn.ReportUnreachable(id)
	}
	for _, rp := range in.reports {
		g.rn.ReportSnapshot(rp.to, rp.status)
	}
	for _, m := range in.msgs {
		lost := h.guardLostLog(g, m)
		if t := m.GetType(); t == pb.MsgAppResp || t == pb.MsgHeartbeatResp {
			g.noteHeard(m.GetFrom()) // what raft sets RecentActive on
		}
		if err := g.rn.Step(m); err != nil {
			g.log.Debug("raft step", "type", m.GetType().String(), "from", m.GetFrom(), "err", err)
		}
		if lost {
			h.handOffLeadership(g, m.GetFrom())
		}
	}
	for _, s := range in.snaps {
		// Raft restores it (and the Ready of this round carries it) or
		// refuses it; the round then installs or drops the file.
		g.stepped = append(g.stepped, s)
		if err := g.rn.Step(s.msg); err != nil {
			g.log.Debug("raft step snapshot", "from", s.msg.GetFrom(), "err", err)
		}
	}
	props, reads, transfers := in.props, in.reads, in.transfers
	ccProposed := false
	if len(in.ccs) > 0 {
		bs := g.rn.BasicStatus()
		ccProposed = h.proposeConfChanges(g, in.ccs, bs.RaftState == raft.StateLeader, bs.Lead)
	}
	if len(transfers) > 0 {
		// No transfer while a membership change is under way: raft drops
		// proposals during a transfer, its automatic leave of a joint
		// configuration included, and the target refuses to campaign with
		// a conf change unapplied, so the transfer and the change both
		// stall (a shard then stays joint until its next entry).
		if err := h.confChangePending(g, false); err != nil || ccProposed {
			g.log.Debug("leadership transfer skipped: membership change under way", "to", transfers, "err", err)
			transfers = nil
		}
	}
	if len(props) == 0 && len(reads) == 0 && len(transfers) == 0 {
		return propsLeft
	}
	bs := g.rn.BasicStatus()
	if bs.RaftState != raft.StateLeader {
		nl := &NotLeaderError{Group: g.id, LeaderID: bs.Lead}
		for _, p := range props {
			g.finish(p.id, result{err: nl})
		}
		for _, r := range reads {
			g.finishRead(r.id, nl)
		}
		return propsLeft
	}
	h.propose(g, props, bs.GetTerm())
	for _, r := range reads {
		r.term = bs.GetTerm()
		g.rn.ReadIndex(binary.BigEndian.AppendUint64(nil, r.id))
	}
	for _, to := range transfers {
		g.rn.TransferLeader(to)
	}
	return propsLeft
}

// propose steps the round's proposals into the leader's RawNode: as one
// MsgProp per maxPropChunkBytes of payload, so raft appends them at once
// and sends each follower one append for them all (one proposal at a time,
// it sends one per proposal, each acknowledged separately). Raft takes or
// drops a MsgProp as a whole; once it drops one, the rest of the round's
// proposals fail with the same error (none overtakes an earlier one).
func (h *Host) propose(g *group, props []*proposal, term uint64) {
	var dropped error
	for len(props) > 0 {
		n, size := 0, 0
		for n < len(props) && (n == 0 || size+len(props[n].data) <= maxPropChunkBytes) {
			size += len(props[n].data)
			n++
		}
		chunk := props[:n]
		props = props[n:]
		if dropped == nil {
			stamper, _ := g.sm.(Stamper)
			ents := make([]*pb.Entry, len(chunk))
			for i, p := range chunk {
				p.term = term
				if stamper != nil && len(p.data) > 9 {
					stamper.Stamp(p.data[9:]) // past the frame (frameUser)
				}
				ents[i] = &pb.Entry{Data: p.data}
			}
			prop := &pb.Message{Type: pb.MsgProp.Enum(), From: proto.Uint64(h.cfg.NodeID), Entries: ents}
			if err := g.rn.Step(prop); err != nil {
				dropped = h.dropReason(g, err)
			}
		}
		if dropped != nil {
			for _, p := range chunk {
				g.finish(p.id, result{err: dropped})
			}
		}
	}
}

// dropReason explains why the leader's raft refused a MsgProp: a leadership
// transfer in progress, this node removed from the group, or else the
// uncommitted tail of the log at Config.MaxUncommittedBytes (overload).
func (h *Host) dropReason(g *group, err error) error {
	if g.rn.BasicStatus().LeadTransferee != 0 {
		return fmt.Errorf("%w: group %d: leadership transfer in progress: %v", ErrProposalDropped, g.id, err)
	}
	if _, member := g.rn.Status().Progress[h.cfg.NodeID]; !member {
		return fmt.Errorf("%w: group %d: not a member: %v", ErrProposalDropped, g.id, err)
	}
	return fmt.Errorf("%w: %w: group %d: uncommitted log tail at its limit (%d bytes): %v",
		ErrOverloaded, ErrProposalDropped, g.id, h.cfg.MaxUncommittedBytes, err)
}

// guardLostLog handles a member that lost its disk and came back with the
// same id (see DESIGN.md, "Wiped members"). Raft assumes a member's log
// never shrinks:
//
//   - a follower gets heartbeats whose commit index is the leader's view of
//     its match index, past its (now short) log, and raft panics; the commit
//     is clamped to the local last index instead (commit only ever rises,
//     so a lower value is harmless);
//   - a leader ignores rejections that go below the member's match index,
//     so it would probe the member forever; guardLostLog reports such a
//     rejection (true), and the caller hands leadership to another member,
//     whose fresh view of every member's progress leads to a snapshot.
func (h *Host) guardLostLog(g *group, m *pb.Message) bool {
	switch m.GetType() {
	case pb.MsgHeartbeat:
		if _, last, _ := g.st.bounds(); m.GetCommit() > last {
			m.Commit = proto.Uint64(last)
		}
	case pb.MsgAppResp:
		if g.rn.BasicStatus().RaftState != raft.StateLeader {
			return false
		}
		if !m.GetReject() {
			delete(g.lostLog, m.GetFrom()) // the member appends again
			return false
		}
		pr, ok := g.rn.Status().Progress[m.GetFrom()]
		// A rejection of an append below the match index is stale (raft
		// ignores it too); one at or above it whose hint is below it says
		// the log shrank. A late, reordered rejection can still look like
		// that once, so only several in a row, with no accepted append in
		// between, count as a lost log.
		if !ok || m.GetIndex() < pr.Match || m.GetRejectHint() >= pr.Match {
			return false
		}
		if g.lostLog == nil {
			g.lostLog = map[uint64]int{}
		}
		g.lostLog[m.GetFrom()]++
		if g.lostLog[m.GetFrom()] < lostLogRejections {
			return false
		}
		delete(g.lostLog, m.GetFrom())
		return true
	}
	return false
}

// lostLogRejections is how many consecutive rejections below a member's
// match index make the leader conclude that the member lost its log.
const lostLogRejections = 3

// handOffLeadership transfers leadership away from this node because member
// lost lost its log: to the most up-to-date other active member.
func (h *Host) handOffLeadership(g *group, lost uint64) {
	bs := g.rn.BasicStatus()
	if bs.RaftState != raft.StateLeader || bs.LeadTransferee != 0 {
		return
	}
	var to, match uint64
	g.withProgress(func(id uint64, typ raft.ProgressType, pr tracker.Progress) {
		if id == h.cfg.NodeID || id == lost || typ != raft.ProgressTypePeer || !pr.RecentActive ||
			pr.State != tracker.StateReplicate || pr.IsLearner {
			return
		}
		if to == 0 || pr.Match > match {
			to, match = id, pr.Match
		}
	})
	g.log.Warn("member lost its raft log (wiped disk?); handing leadership over so it gets a snapshot",
		"member", lost, "to", to)
	if to != 0 {
		g.rn.TransferLeader(to)
	}
}

// setReadIndex records the read index raft confirmed for a read request.
func (g *group) setReadIndex(rctx []byte, index uint64) {
	if len(rctx) != 8 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if r := g.readWait[binary.BigEndian.Uint64(rctx)]; r != nil {
		r.index = max(index, 1)
	}
}

// checkLeadership fails the requests issued under a leadership this node no
// longer holds.
func (h *Host) checkLeadership(g *group) {
	bs := g.rn.BasicStatus()
	leader := bs.RaftState == raft.StateLeader
	if bs.GetTerm() == g.term && leader == g.leader {
		return
	}
	g.term, g.leader = bs.GetTerm(), leader
	g.failStale(g.term, leader)
}

// apply applies committed entries in one indexed batch, with the applied
// index (and the ConfState after a conf change) in the same batch, and
// commits it without sync: the synced log is the truth, and Pebble's single
// WAL makes a later synced write carry this one.
// It returns the results for local waiters, which the caller delivers.
func (h *Host) apply(g *group, ents []*pb.Entry) ([]applyDone, error) {
	if len(ents) == 0 {
		return nil, nil
	}
	if h.applyBatch == nil || h.applyMax > indexedBatchRetained {
		// Rounds outgrow what Reset keeps: start each with room for half
		// again the largest recent round rather than growing by doubling.
		if h.applyBatch != nil {
			_ = h.applyBatch.Close()
		}
		h.applyBatch = h.sdb.NewIndexedBatchWithSize(min(h.applyMax+h.applyMax/2, maxReusedBatch))
	}
	b := h.applyBatch
	defer func() {
		h.applyMax = max(h.applyMax-h.applyMax/16, b.Len())
		b.Reset()
	}()
	var (
		results              []any
		dones                []applyDone
		cs                   *pb.ConfState
		truncIndex, truncTrm uint64
	)
	for _, e := range ents {
		switch e.GetType() {
		case pb.EntryNormal:
			if len(e.GetData()) == 0 {
				continue // a new leader's empty entry
			}
			kind, n, data, err := unframe(e.GetData())
			if err != nil {
				return nil, fmt.Errorf("entry %d: %w", e.GetIndex(), err)
			}
			switch kind {
			case kindUser:
				v, err := g.sm.Apply(b, e.GetIndex(), data)
				if err != nil {
					return nil, fmt.Errorf("apply entry %d: %w", e.GetIndex(), err)
				}
				results = append(results, v)
				dones = append(dones, applyDone{id: n, v: v})
			case kindTruncate:
				if n >= e.GetIndex() || n <= truncIndex {
					continue
				}
				if h.split {
					// The log is in another DB: truncated on the loop's
					// ticks once the state up to n is durable.
					g.truncWant = max(g.truncWant, n)
					continue
				}
				term, ok, err := g.st.stageTruncate(b, n)
				if err != nil {
					return nil, fmt.Errorf("truncate log to %d: %w", n, err)
				}
				if ok {
					truncIndex, truncTrm = n, term
				}
			}
		case pb.EntryConfChange:
			var cc pb.ConfChange
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				return nil, fmt.Errorf("entry %d: decode conf change: %w", e.GetIndex(), err)
			}
			cs = g.rn.ApplyConfChange(&cc)
		case pb.EntryConfChangeV2:
			var cc pb.ConfChangeV2
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				return nil, fmt.Errorf("entry %d: decode conf change: %w", e.GetIndex(), err)
			}
			cs = g.rn.ApplyConfChange(&cc)
		}
	}
	applied := ents[len(ents)-1].GetIndex()
	if err := g.st.stageApplied(b, applied, cs); err != nil {
		return nil, fmt.Errorf("write applied index: %w", err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, fmt.Errorf("commit apply batch: %w", err)
	}
	g.st.commitApply(applied, cs, truncIndex, truncTrm)
	if len(results) > 0 {
		g.sm.AfterApply(results)
	}
	return dones, nil
}

// applyDone is one applied entry's result for a local waiter.
type applyDone struct {
	id uint64
	v  any
}

// maybeTruncate proposes a log truncation on a leader, every tick, so that
// log entries are deleted while still in Pebble's memtable (a flush then
// drops them: they are written once, to the WAL). The target is LogRetain
// entries behind the applied index, and it does not pass:
//
//   - the match index of a member that is active and at most LogLagLimit
//     entries behind (it catches up from the log);
//   - the index of the snapshot an active member is being sent (after
//     installing it, the member catches up from the log instead of needing
//     another snapshot).
//
// A member that is down or far behind does not hold truncation back: it
// will get a snapshot. A proposal needs at least LogRetain/4 entries to
// go, so an idle group does not truncate its own truncation entries. Raft's
// RecentActive is only meaningful after an election timeout of leadership
// (CheckQuorum refreshes it), so a new leader waits two. Every replica
// applies the entry, so followers' logs shrink too.
func (h *Host) maybeTruncate(g *group) {
	bs := g.rn.BasicStatus()
	if bs.RaftState != raft.StateLeader || g.leadTicks < 2*h.cfg.ElectionTicks {
		return
	}
	first, _, applied := g.st.bounds()
	if applied <= h.cfg.LogRetain {
		return
	}
	target := truncateTarget(h.cfg.NodeID, applied, h.cfg.LogRetain, h.cfg.LogLagLimit, g.withProgress)
	if g.truncTerm == bs.GetTerm() {
		// Counted from the target already proposed, not only from the
		// first index: with a state DB the local truncation waits for a
		// flush, and an idle group must not keep proposing.
		first = max(first, g.truncPending+1)
	}
	if target+1 < first+max(h.cfg.LogRetain/4, 1) {
		return
	}
	if err := g.rn.Propose(frameTruncate(target)); err != nil {
		return
	}
	g.truncPending, g.truncTerm = target, bs.GetTerm()
}

// truncateTarget is the highest index a leader may truncate its log to
// (see maybeTruncate); applied > retain.
func truncateTarget(self, applied, retain, lagLimit uint64, progress func(func(uint64, raft.ProgressType, tracker.Progress))) uint64 {
	target := applied - retain
	progress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if id == self || !pr.RecentActive {
			return
		}
		need := pr.Match
		if pr.State == tracker.StateSnapshot {
			need = pr.PendingSnapshot
		}
		if need+lagLimit < applied {
			return
		}
		target = min(target, need)
	})
	return target
}

// guard runs fn on a live group; an error or a panic (raft panics on
// storage errors and invariant violations) halts the group, not the node.
func (h *Host) guard(g *group, fn func() error) {
	if g.halted != nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			g.log.Error("raft group panicked", "panic", r, "stack", string(debug.Stack()))
			h.halt(g, fmt.Errorf("panic: %v", r))
		}
	}()
	if err := fn(); err != nil {
		h.halt(g, err)
	}
}

// halt stops serving the group after a storage failure: its waiters fail
// with an error matching ErrHalted, and Status reports it.
func (h *Host) halt(g *group, err error) {
	if g.halted != nil {
		return
	}
	g.halted = fmt.Errorf("%w: group %d: %w", ErrHalted, g.id, err)
	g.log.Error("raft group halted", "err", err)
	g.close(g.halted)
	h.broadcast()
}

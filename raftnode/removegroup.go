package raftnode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumq/quorumq/internal/keys"
)

// RemoveGroup stops the group's replica on this host and deletes its raft
// state (HardState, log, truncation point) and its replicated state
// (applied index, configuration, the state machine's keys) with range
// deletes in one synced batch (with a StateDB: the log's range and a
// removal marker, synced, then the state's range, flushed, then the
// marker; see removeSplit), so a node no longer a member of a group
// stops ticking it and gives its storage back. Calls waiting on the group
// fail with ErrGroupRemoved; its messages are dropped from then on, and
// the members RecordMembers gave for it are forgotten. A StateMachine that
// implements Restorer is told its state is gone (Restored), off the loop:
// the group no longer runs. A later AddGroup or JoinGroup of the same id
// starts from nothing.
//
// Safety is the caller's: the node must be neither a voter nor a learner
// of the group (raft assumes a member's log never shrinks). quiet > 0
// refuses, leaving the group as it was, when the replica heard from a
// leader (an append, a heartbeat, a snapshot) within quiet, checked
// atomically with stopping it: a leader that added it back meanwhile may
// already count an acknowledged append, which the replica must then keep.
// It returns once the loop is done with the group (the round under way
// ends) and the keys are deleted. If ctx ends first, the group is stopped
// and RemoveGroup returns ctx's error while the host finishes the removal
// in the background (AddGroup of the id fails until then); if the host
// stops first, the keys are kept (a later AddGroup loads them).
func (h *Host) RemoveGroup(ctx context.Context, id uint64, quiet time.Duration) error {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return ErrStopped
	}
	g := h.groups[id]
	if g == nil || h.removing[id] {
		h.mu.Unlock()
		return fmt.Errorf("%w: %d", ErrGroupNotFound, id)
	}
	h.removing[id] = true
	h.mu.Unlock()
	if !g.closeIfQuiet(fmt.Errorf("%w: %d", ErrGroupRemoved, id), quiet) {
		h.mu.Lock()
		delete(h.removing, id)
		h.mu.Unlock()
		return fmt.Errorf("raftnode: id %d heard from a leader within %v: not removed", id, quiet)
	}
	h.mu.Lock()
	if h.stopped { // Stop closes the group too; its keys stay
		delete(h.removing, id)
		h.mu.Unlock()
		return ErrStopped
	}
	delete(h.groups, id)
	h.order = slices.DeleteFunc(h.order, func(o *group) bool { return o == g })
	since, started := h.rounds, h.started
	h.bg.Add(1) // under mu with stopped false: Stop's bg.Wait sees it
	h.mu.Unlock()
	h.recorded.Delete(id)
	h.broadcast() // status waiters learn the group is gone
	done := make(chan error, 1)
	go func() {
		defer h.bg.Done()
		err := h.finishRemove(g, since, started)
		h.mu.Lock()
		delete(h.removing, id)
		h.mu.Unlock()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// finishRemove waits until the loop is done with g, stopped at round
// since, then deletes its keys (RemoveGroup).
func (h *Host) finishRemove(g *group, since uint64, started bool) error {
	id := g.id
	if started {
		// The round under way may hold the group (it took the groups just
		// before it counted itself): wait until the one after it began,
		// which neither it nor the ticks between see. Not cut short by the
		// caller's context: keys deleted under a round still writing them
		// would mix two replicas' state.
		if err := h.waitRounds(since + 2); err != nil {
			return err
		}
	}
	h.dropStaged(g)
	if r, ok := g.sm.(Restoring); ok {
		r.Restoring()
	}
	if h.split {
		if err := h.removeSplit(id); err != nil {
			return fmt.Errorf("raftnode: id %d: remove: %w", id, err)
		}
		if r, ok := g.sm.(Restorer); ok {
			r.Restored()
		}
		g.log.Info("raft id removed from this node")
		return nil
	}
	b := h.db.NewBatch()
	defer b.Close()
	if err := errors.Join(
		b.DeleteRange(keys.RaftPrefix(id), keys.RaftEnd(id), nil),
		b.DeleteRange(keys.StatePrefix(id), keys.StateEnd(id), nil),
	); err != nil {
		return fmt.Errorf("raftnode: id %d: remove: %w", id, err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("raftnode: id %d: remove: %w", id, err)
	}
	if r, ok := g.sm.(Restorer); ok {
		r.Restored()
	}
	g.log.Info("raft id removed from this node")
	return nil
}

// waitRounds waits until the loop has begun round n (counted by
// takeUnreachable), waking it meanwhile.
func (h *Host) waitRounds(n uint64) error {
	for {
		h.mu.Lock()
		if h.stopped {
			h.mu.Unlock()
			return ErrStopped
		}
		if h.rounds >= n {
			h.mu.Unlock()
			return nil
		}
		h.roundWait = true
		ch := h.roundc
		h.mu.Unlock()
		h.signal()
		select {
		case <-ch:
		case <-h.stopc:
			return ErrStopped
		}
	}
}

// HasStoredGroup reports whether this host's storage holds anything of
// group id (its raft state or its replicated state), hosted or not. A node
// that restarts before dropping a replica it was removed from still holds
// its keys; it hosts such a group again so that the removal can finish.
func (h *Host) HasStoredGroup(id uint64) (bool, error) {
	for _, r := range []struct {
		db     *pebble.DB
		lo, hi []byte
	}{{h.db, keys.RaftPrefix(id), keys.RaftEnd(id)}, {h.sdb, keys.StatePrefix(id), keys.StateEnd(id)}} {
		it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: r.lo, UpperBound: r.hi})
		if err != nil {
			return false, fmt.Errorf("raftnode: group %d: %w", id, err)
		}
		found := it.First()
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return false, fmt.Errorf("raftnode: group %d: %w", id, err)
		}
		if found {
			return true, nil
		}
	}
	return false, nil
}

// removeSplit deletes a group's keys in two-DB mode: first, synced, the
// whole raft range of the log DB and a removal marker in its place; then
// the state range, flushed; then the marker. A crash in between leaves a
// group with no log, whose state AddGroup deletes before anything else
// (recoverRemove): it can never serve a state without its log, nor a log
// whose state is half gone.
func (h *Host) removeSplit(id uint64) error {
	b := h.db.NewBatch()
	defer b.Close()
	if err := errors.Join(
		b.DeleteRange(keys.RaftPrefix(id), keys.RaftEnd(id), nil),
		b.Set(keys.RemoveMarker(id), nil, nil),
	); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	h.hook("remove-logged")
	if err := h.clearState(id); err != nil {
		return err
	}
	h.hook("remove-cleared")
	return h.db.Delete(keys.RemoveMarker(id), pebble.Sync)
}

package server

import (
	"context"
	"sync"
	"time"

	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// pollRegistry lets long polls sleep until their queue changes. A waiter
// takes the queue's current channel; a wake closes it (waking every waiter)
// and the next waiter gets a fresh one.
type pollRegistry struct {
	mu sync.Mutex
	ch map[pollKey]chan struct{}
}

type pollKey struct{ tenant, queue string }

func newPollRegistry() *pollRegistry { return &pollRegistry{ch: map[pollKey]chan struct{}{}} }

// watch returns a channel closed at the next wake of the queue.
func (r *pollRegistry) watch(tenant, queue string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := pollKey{tenant, queue}
	c, ok := r.ch[k]
	if !ok {
		c = make(chan struct{})
		r.ch[k] = c
	}
	return c
}

// wake releases every waiter of the queue. Called from the Raft apply loop:
// it never blocks.
func (r *pollRegistry) wake(tenant, queue string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := pollKey{tenant, queue}
	if c, ok := r.ch[k]; ok {
		close(c)
		delete(r.ch, k)
	}
}

// wakeAll releases every waiter (after a snapshot replaced the state).
func (r *pollRegistry) wakeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, c := range r.ch {
		close(c)
		delete(r.ch, k)
	}
}

// receive proposes a receive; when it leases nothing and waitMs > 0 it
// waits without proposing until the store says a matching message is
// visible (woken by sends and visibility changes, or by a timer at the next
// visible_at), then proposes again. It answers empty when the wait ends.
// replayed is true when the store answered a retried receive attempt with
// what it returned before.
//
// The caller's context bounds the wait, not a proposal once made: a receive
// cut off while it commits would still lease its messages, to nobody. So
// the proposal runs to its outcome (within the propose timeout) whatever
// the caller does, and if the caller is gone by then, its fresh leases are
// handed back at once (visibility 0). Their receive counts stay counted, as
// for any receive whose answer was lost.
func (s *Server) receive(ctx context.Context, cmd *storepb.Receive, waitMs int64) (msgs []store.Received, replayed bool, err error) {
	deadline := s.cfg.Now().Add(time.Duration(waitMs) * time.Millisecond)
	if d, ok := ctx.Deadline(); ok {
		// End the wait in time to answer empty rather than fail with the
		// caller's deadline.
		if d = d.Add(-waitMargin); d.Before(deadline) {
			deadline = d
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		s.receivesProposed.Add(1)
		res, err := s.propose(context.WithoutCancel(ctx), &storepb.Command{Op: &storepb.Command_Receive{Receive: cmd}})
		if err != nil {
			return nil, false, err
		}
		if ctx.Err() != nil && len(res.Received) > 0 && !res.Replayed {
			s.release(context.WithoutCancel(ctx), cmd, res.Received)
			return nil, false, ctx.Err()
		}
		if len(res.Received) > 0 || !s.cfg.Now().Before(deadline) {
			return res.Received, res.Replayed, nil
		}
		if ok, err := s.waitVisible(ctx, cmd, deadline); err != nil || !ok {
			return nil, false, err
		}
	}
}

// waitMargin is how long before the caller's deadline a long poll stops
// waiting, to answer (empty) in time.
const waitMargin = 200 * time.Millisecond

// release hands back the leases of a receive whose caller left before it
// got them (best effort: if it fails, the leases end with their timeout).
func (s *Server) release(ctx context.Context, cmd *storepb.Receive, got []store.Received) {
	changes := make([]*storepb.VisibilityChange, 0, len(got))
	for _, m := range got {
		changes = append(changes, &storepb.VisibilityChange{ReceiptHandle: m.ReceiptHandle, VisibilityTimeoutMs: 0})
	}
	_, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_ChangeVisibility{ChangeVisibility: &storepb.ChangeVisibility{
		Tenant: cmd.GetTenant(), Queue: cmd.GetQueue(), Changes: changes,
	}}})
	if err != nil {
		s.cfg.Logger.Warn("receive: could not hand back the leases of a caller that left", "queue", cmd.GetQueue(), "messages", len(got), "err", err)
	}
}

// waitOnly serves a wait-only receive (see waitOnlyHeader): it waits up
// to waitMs for a message matching cmd to be visible and proposes nothing,
// so the router may cancel it at no cost. It returns nil both when a
// message is ready and when the wait ends: the caller tells them apart by
// the time. A wait cut short by this server stopping is an error, lest it
// read as "ready".
func (s *Server) waitOnly(ctx context.Context, cmd *storepb.Receive, waitMs int64) error {
	deadline := s.cfg.Now().Add(time.Duration(waitMs) * time.Millisecond)
	ok, err := s.waitVisible(ctx, cmd, deadline)
	if err == nil && !ok && s.cfg.Now().Before(deadline) {
		return raftnode.ErrStopped
	}
	return err
}

// waitVisible blocks until a matching message is visible (true) or the
// deadline passes (false). It reads only local state.
func (s *Server) waitVisible(ctx context.Context, cmd *storepb.Receive, deadline time.Time) (_ bool, err error) {
	ctx, span := s.tracer.Start(ctx, spanLongPoll)
	defer func() { endSpan(span, err) }()
	for {
		// Watch before peeking, so a send applied between the two still wakes us.
		woken := s.polls.watch(cmd.GetTenant(), cmd.GetQueue())
		now := s.cfg.Now()
		ready, next, err := s.store.Peek(cmd.GetTenant(), cmd.GetQueue(), cmd.GetFilter(), now.UnixMilli())
		if err != nil {
			return false, withQueue(err, cmd.GetQueue())
		}
		if ready {
			return true, nil
		}
		until := deadline
		if next > 0 {
			if due := time.UnixMilli(next); due.Before(until) {
				until = due
			}
		}
		wait := until.Sub(now)
		if wait <= 0 {
			if !now.Before(deadline) {
				return false, nil
			}
			continue
		}
		timer := time.NewTimer(wait)
		select {
		case <-woken:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return false, ctx.Err()
		case <-s.stop:
			timer.Stop()
			return false, nil
		}
		timer.Stop()
		if !s.cfg.Now().Before(deadline) {
			return false, nil
		}
	}
}

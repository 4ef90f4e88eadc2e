package shardserver

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// pollRegistry lets long polls sleep until their queue changes. Each
// waiter registers (watch) and unregisters (leave). A wake for n messages
// made visible releases the n waiters that wait longest, not all of them:
// every released waiter peeks and proposes a receive, so releasing all for
// one message cost one Raft entry per idle consumer. Waiters with a tag
// filter are all released, since a message may match none of the first n.
type pollRegistry struct {
	mu      sync.Mutex
	waiters map[pollKey][]*pollWaiter // per queue, oldest first
}

type pollKey struct{ tenant, queue string }

// pollWaiter is one sleeping long poll: ch is closed when it is released.
type pollWaiter struct {
	ch       chan struct{}
	filtered bool
	woken    bool
}

func newPollRegistry() *pollRegistry { return &pollRegistry{waiters: map[pollKey][]*pollWaiter{}} }

// watch registers a waiter of the queue; release it with leave.
func (r *pollRegistry) watch(tenant, queue string, filtered bool) *pollWaiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := pollKey{tenant, queue}
	w := &pollWaiter{ch: make(chan struct{}), filtered: filtered}
	r.waiters[k] = append(r.waiters[k], w)
	return w
}

// leave unregisters w and reports whether it had been released.
func (r *pollRegistry) leave(tenant, queue string, w *pollWaiter) (woken bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w.woken {
		return true
	}
	k := pollKey{tenant, queue}
	ws := r.waiters[k]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(r.waiters, k)
	} else {
		r.waiters[k] = ws
	}
	return false
}

// wake releases every waiter of the queue (it was deleted, or how many
// messages became visible is unknown). Called from the Raft apply loop: it
// never blocks.
func (r *pollRegistry) wake(tenant, queue string) { r.wakeN(tenant, queue, -1) }

// wakeN releases the n longest waiting unfiltered waiters of the queue
// (n < 0: all) and every filtered one. It never blocks.
func (r *pollRegistry) wakeN(tenant, queue string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := pollKey{tenant, queue}
	var keep []*pollWaiter
	for _, w := range r.waiters[k] {
		if !w.filtered && n == 0 {
			keep = append(keep, w)
			continue
		}
		if !w.filtered && n > 0 {
			n--
		}
		w.woken = true
		close(w.ch)
	}
	if len(keep) == 0 {
		delete(r.waiters, k)
	} else {
		r.waiters[k] = keep
	}
}

// wakeAll releases every waiter (after a snapshot replaced the state).
func (r *pollRegistry) wakeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, ws := range r.waiters {
		for _, w := range ws {
			w.woken = true
			close(w.ch)
		}
		delete(r.waiters, k)
	}
}

// count is the number of waiters of every queue.
func (r *pollRegistry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ws := range r.waiters {
		n += len(ws)
	}
	return n
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
// handed back at once (a nack as released: no failed delivery, no retry
// backoff, not counted toward the delivery limit). Their receive counts
// stay counted, as for any receive whose answer was lost. Not so for a
// receive with a receive_attempt_id: its caller retries with the id and
// the store answers with these very leases, so a hand-back could end
// them after a retry returned them (the retry's replay may apply before
// it), and another consumer would get the messages during a lease its
// caller holds. Those leases run out their timeout unless retried.
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
		if ctx.Err() != nil && len(res.Received) > 0 {
			if !res.Replayed && cmd.GetReceiveAttemptId() == "" {
				s.release(context.WithoutCancel(ctx), cmd, res.Received)
			}
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
	entries := make([]*storepb.NackEntry, 0, len(got))
	for _, m := range got {
		entries = append(entries, &storepb.NackEntry{ReceiptHandle: m.ReceiptHandle, Kind: storepb.NackKind_NACK_KIND_RELEASED, DelayMs: -1})
	}
	_, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_Nack{Nack: &storepb.Nack{
		Tenant: cmd.GetTenant(), Queue: cmd.GetQueue(), Entries: entries,
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
	defer func() { EndSpan(span, err) }()
	tenant, queue := cmd.GetTenant(), cmd.GetQueue()
	filtered := len(cmd.GetFilter().GetAll())+len(cmd.GetFilter().GetAny())+len(cmd.GetFilter().GetNone()) > 0
	for {
		// Watch before peeking, so a send applied between the two still wakes us.
		w := s.polls.watch(tenant, queue, filtered)
		now := s.cfg.Now()
		// Look no further ahead than peekHorizon (see store.Peek for the
		// cost of looking far): with nothing due by then, next says when
		// to look again.
		horizon := min(deadline.UnixMilli(), now.Add(peekHorizon).UnixMilli())
		ready, next, err := s.store.Peek(tenant, queue, cmd.GetFilter(), now.UnixMilli(), horizon)
		if err != nil || ready {
			s.polls.leave(tenant, queue, w)
			if err != nil {
				return false, withQueue(err, queue)
			}
			return true, nil
		}
		until := deadline
		timed := false // for a message coming due (not a look again past the horizon)
		if next > 0 {
			if due := time.UnixMilli(next); due.Before(until) {
				until, timed = due, next <= horizon
			}
		}
		wait := until.Sub(now)
		if wait <= 0 {
			s.polls.leave(tenant, queue, w)
			if !now.Before(deadline) {
				return false, nil
			}
			continue
		}
		timer := time.NewTimer(wait)
		var gone error
		select {
		case <-w.ch:
		case <-timer.C:
		case <-ctx.Done():
			gone = ctx.Err()
		case <-s.stop:
			gone = errStopped
		}
		timer.Stop()
		woken := s.polls.leave(tenant, queue, w)
		if gone != nil && (woken || timed) {
			// Released for a message (or timed for a delayed one) that this
			// poll will not take: pass it on, or the message waits for
			// another wake while other polls sleep.
			s.polls.wakeN(tenant, queue, 1)
		}
		if gone == errStopped {
			return false, nil
		}
		if gone != nil {
			return false, gone
		}
		if !s.cfg.Now().Before(deadline) {
			return false, nil
		}
	}
}

// peekHorizon is how far ahead a long poll's peek looks for a message
// coming due (a lease ending, a delayed message): a poll on a queue that
// holds messages, none of them due, looks again this often, and a peek
// passes over at most this long's worth of the
// tombstones consumed messages leave at their leases' ends.
const peekHorizon = time.Second

// errStopped marks a wait ended by the server stopping.
var errStopped = errors.New("server stopped")

// wakeFor releases the long polls an applied command may serve: at most
// one message per entry became visible, so that many waiters (all when
// the count is unknown).
func (r *pollRegistry) wakeFor(res *store.Result) {
	if !res.Woken {
		return
	}
	n := len(res.Sent) + len(res.Received) + len(res.Entries)
	if n == 0 {
		n = -1
	}
	r.wakeN(res.Tenant, res.Queue, n)
	for _, q := range res.Touched {
		r.wakeN(q.Tenant, q.Name, n)
	}
}

// PollWaiters is the number of long polls waiting on this shard.
func (s *Server) PollWaiters() int { return s.polls.count() }

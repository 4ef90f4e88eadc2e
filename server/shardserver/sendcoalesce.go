package shardserver

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Sends to one queue that arrive together share a command: a producer with
// hundreds of unconfirmed single-message sends would otherwise cost one
// Raft entry and one apply (queue, meta, shard meta reads and writes) per
// message on every replica. Each queue (tenant, catalog name) has a lane
// with at most laneProposals commands in flight; a send that finds them
// all busy waits in the lane, and the next command takes the waiting sends
// in arrival order, up to coalesceEntries entries and coalesceBytes
// bytes. An idle lane proposes at once, so a lone send waits for nothing.
// No goroutine of its own: the caller whose command finishes hands its
// slot to the first waiting send, whose caller proposes next.
//
// The store answers every entry of a Send on its own (SendOutcome), in
// order, and a later entry sees an earlier one's writes (idempotency keys,
// deduplication ids), so merging changes no outcome; a whole-command
// outcome (the queue does not exist, not the leader) is every entry's.
const (
	laneProposals   = 4
	coalesceEntries = 256
	coalesceBytes   = 1 << 20
)

// sendLanes holds the lanes of the queues with sends in flight.
type sendLanes struct {
	mu    sync.Mutex
	lanes map[laneKey]*sendLane
}

type laneKey struct{ tenant, queue string }

type sendLane struct {
	waiting []*pendingSend // not yet in a command, arrival order
	busy    int            // commands in flight (slots taken)
}

// pendingSend is one call's entries. Fields below mu are guarded by
// sendLanes.mu; out and err are written before done is closed.
type pendingSend struct {
	entries []*storepb.SendEntry
	bytes   int

	lead chan struct{} // closed when the call is handed a slot
	done chan struct{} // closed when out / err are set

	// guarded by sendLanes.mu
	led   bool // holds a slot
	taken bool // in a command

	out []store.SendOutcome
	err error
}

// sendEntries stores entries in the queue (of this shard) through a shared
// command and returns one outcome per entry, in order; the error is the
// whole command's. ctx ending returns its error; entries already in a
// command may still be stored.
func (s *Server) sendEntries(ctx context.Context, tenant, queue string, entries []*storepb.SendEntry) ([]store.SendOutcome, error) {
	p := &pendingSend{entries: entries, lead: make(chan struct{}), done: make(chan struct{})}
	for _, e := range entries {
		p.bytes += len(e.GetBody()) + len(e.GetIdempotencyKey()) + len(e.GetDeduplicationId()) + len(e.GetGroupId())
		for k, v := range e.GetAttributes() {
			p.bytes += len(k) + len(v)
		}
		for _, t := range e.GetTags() {
			p.bytes += len(t)
		}
	}
	k := laneKey{tenant, queue}
	c := &s.sends
	c.mu.Lock()
	if c.lanes == nil {
		c.lanes = make(map[laneKey]*sendLane)
	}
	l := c.lanes[k]
	if l == nil {
		l = &sendLane{}
		c.lanes[k] = l
	}
	l.waiting = append(l.waiting, p)
	if l.busy < laneProposals {
		l.busy++
		p.led = true
	}
	led := p.led
	c.mu.Unlock()

	if !led {
		select {
		case <-p.done:
		case <-p.lead:
		case <-ctx.Done():
		}
		// A slot may have been handed to this call even if another
		// command has answered it meanwhile: it must be used or passed on.
		c.mu.Lock()
		led = p.led
		taken := p.taken
		if !led && !taken { // ctx ended while waiting
			l.waiting = slices.DeleteFunc(l.waiting, func(w *pendingSend) bool { return w == p })
		}
		c.mu.Unlock()
		if !led {
			if !taken {
				return nil, ctx.Err()
			}
			select {
			case <-p.done:
				return p.out, p.err
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	// This call holds a slot: propose what waits (its own entries first
	// unless another command took them) until its own are answered.
	for {
		c.mu.Lock()
		batch := l.take()
		c.mu.Unlock()
		if len(batch) == 0 {
			break
		}
		s.proposeSends(ctx, tenant, queue, batch)
		select {
		case <-p.done:
		default:
			continue
		}
		break
	}
	c.mu.Lock()
	l.release(k, c)
	c.mu.Unlock()
	select {
	case <-p.done:
		return p.out, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// release passes a finished slot to the first waiting send without one,
// or frees it (and drops an idle lane). Callers hold c.mu.
func (l *sendLane) release(k laneKey, c *sendLanes) {
	for _, w := range l.waiting {
		if !w.led {
			w.led = true
			close(w.lead)
			return
		}
	}
	if l.busy--; l.busy == 0 {
		delete(c.lanes, k)
	}
}

// take removes the sends of the lane's next command from the front of
// waiting: at least one, whatever its size (a command never waits to fill
// up). Callers hold sendLanes.mu.
func (l *sendLane) take() []*pendingSend {
	n, entries, bytes := 0, 0, 0
	for _, w := range l.waiting {
		if n > 0 && (entries+len(w.entries) > coalesceEntries || bytes+w.bytes > coalesceBytes) {
			break
		}
		n++
		entries += len(w.entries)
		bytes += w.bytes
		w.taken = true
	}
	batch := slices.Clone(l.waiting[:n])
	clear(l.waiting[:n])
	l.waiting = l.waiting[n:]
	return batch
}

// proposeSends proposes one Send command with the entries of batch and
// answers each call. The command outlives the proposing call's
// cancellation (it carries other calls' entries); Propose's own timeout
// bounds it.
func (s *Server) proposeSends(ctx context.Context, tenant, queue string, batch []*pendingSend) {
	cmd := &storepb.Send{Tenant: tenant, Queue: queue}
	if len(batch) == 1 {
		cmd.Entries = batch[0].entries
	} else {
		for _, p := range batch {
			cmd.Entries = append(cmd.Entries, p.entries...)
		}
	}
	res, err := s.propose(context.WithoutCancel(ctx), &storepb.Command{Op: &storepb.Command_Send{Send: cmd}})
	if err == nil && len(res.Sent) != len(cmd.Entries) {
		err = fmt.Errorf("send: %d outcomes for %d entries", len(res.Sent), len(cmd.Entries))
	}
	i := 0
	for _, p := range batch {
		if err != nil {
			p.err = err
		} else {
			p.out = res.Sent[i : i+len(p.entries) : i+len(p.entries)]
		}
		i += len(p.entries)
		close(p.done)
	}
}

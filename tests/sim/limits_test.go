package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Issue 18 items 3–6 in the simulation tier: nacks (failed, released, with
// a redelivery time) on the main queue, checked against the history (no
// receive before a nack's redelivery time), and a side load on queues with
// a time to live and a max length (drop_oldest into a dead-letter queue),
// whose messages expire and overflow while nodes crash and partitions
// come and go: every replica must still converge to the same state.

const (
	ttlQ     = "ttl"       // message ttl 200 ms, retry backoff
	boundQ   = "bound"     // max length 5, drop_oldest into boundDLQ
	boundDLQ = "bound-dlq" // where overflow, expiry and exhausted deliveries go
)

// nack ends the leases of evs with one Nack (failed or released, now and
// then with a redelivery delay), retrying unknown outcomes.
func (w *workload) nack(ctx context.Context, rng *rand.Rand, queue string, evs []recvEvent) {
	kind := storepb.NackKind_NACK_KIND_FAILED
	if rng.IntN(3) == 0 {
		kind = storepb.NackKind_NACK_KIND_RELEASED
	}
	delay := int64(-1)
	if rng.IntN(4) == 0 {
		delay = int64(rng.IntN(200))
	}
	for try := 0; try < 3; try++ {
		invoked := time.Now()
		r, o := w.c.propose(ctx, rng, func(ts int64) []byte {
			var es []*storepb.NackEntry
			for _, e := range evs {
				es = append(es, &storepb.NackEntry{ReceiptHandle: e.handle, Kind: kind, DelayMs: delay})
			}
			return marshal(&storepb.Command{Op: &storepb.Command_Nack{Nack: &storepb.Nack{Tenant: tenant, Queue: queue, Entries: es}}}, ts)
		})
		done := time.Now()
		w.h.mu.Lock()
		w.h.ops["nack "+kind.String()+" "+o.String()]++
		for k, e := range evs {
			he := handleEvent{id: e.id, queue: queue, count: e.count, nack: true, outcome: o, invoked: invoked, done: done}
			if o == ok {
				if r.Err != nil {
					he.outcome, he.err = failed, r.Err
				} else if he.err = r.Entries[k]; he.err == nil {
					he.nackUntil = r.VisibleAt[k]
				}
			}
			w.h.handles = append(w.h.handles, he)
		}
		w.h.mu.Unlock()
		if o != unknown {
			return
		}
	}
}

// setupLimits creates the side load's queues.
func (w *workload) setupLimits(ctx context.Context, rng *rand.Rand) error {
	retry := &storepb.RetryPolicy{BaseMs: 20, FactorMilli: 2000, MaxMs: 300, JitterMilli: 500}
	attrs := map[string]func(*storepb.QueueAttributes){
		boundDLQ: func(*storepb.QueueAttributes) {},
		ttlQ: func(a *storepb.QueueAttributes) {
			a.MessageTtlMs, a.RetryPolicy = 200, retry
		},
		boundQ: func(a *storepb.QueueAttributes) {
			a.MaxLength, a.Overflow = 5, storepb.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST
			a.DeadLetterQueue, a.MaxReceiveCount, a.RetryPolicy = boundDLQ, 2, retry
		},
	}
	for _, name := range []string{boundDLQ, ttlQ, boundQ} {
		a := store.DefaultAttributes()
		a.VisibilityTimeoutMs = 100
		attrs[name](a)
		key := make([]byte, 32)
		for i := range key {
			key[i] = byte(rng.IntN(256))
		}
		for {
			if ctx.Err() != nil {
				return fmt.Errorf("create %s: %w", name, ctx.Err())
			}
			r, o := w.c.propose(ctx, rng, func(ts int64) []byte {
				return marshal(&storepb.Command{Op: &storepb.Command_CreateQueue{CreateQueue: &storepb.CreateQueue{
					Tenant: tenant, Name: name, Attributes: a, HandleKey: key}}}, ts)
			})
			if o == ok {
				if r.Err != nil {
					return fmt.Errorf("create %s: %v", name, r.Err)
				}
				break
			}
		}
	}
	return nil
}

// limits is the side load: sends with and without a ttl, receives, and
// nacks, deletes or abandons what it receives. Its outcomes only count in
// the summary: the history checks the main queues.
func (w *workload) limits(ctx context.Context) {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(w.seed, 500))
	for n := 0; !w.stopped(); n++ {
		queue := []string{ttlQ, boundQ}[rng.IntN(2)]
		var es []*storepb.SendEntry
		for k := range 1 + rng.IntN(3) {
			e := &storepb.SendEntry{Body: fmt.Sprintf("l%d-%d", n, k), DelayMs: -1}
			if rng.IntN(2) == 0 {
				e.TtlMs = 50 + int64(rng.IntN(300))
			}
			es = append(es, e)
		}
		r, o := w.c.propose(ctx, rng, func(ts int64) []byte {
			return marshal(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: tenant, Queue: queue, Entries: es}}}, ts)
		})
		if o == ok {
			w.h.count("limits: dropped", r.Dropped)
		}
		if n%10 == 9 {
			// Tick expires what nobody received in time.
			if r, o := w.c.propose(ctx, rng, func(ts int64) []byte {
				return marshal(&storepb.Command{Op: &storepb.Command_Tick{Tick: &storepb.Tick{Limit: 100}}}, ts)
			}); o == ok {
				w.h.count("limits: removed by tick", r.Removed)
			}
		}
		queue = []string{ttlQ, boundQ, boundDLQ}[rng.IntN(3)]
		r, o = w.c.propose(ctx, rng, func(ts int64) []byte {
			return marshal(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: tenant, Queue: queue,
				MaxMessages: 3, VisibilityTimeoutMs: -1}}}, ts)
		})
		if o != ok || len(r.Received) == 0 {
			time.Sleep(time.Duration(2+rng.IntN(8)) * time.Millisecond)
			continue
		}
		w.h.count("limits: received", len(r.Received))
		w.h.count("limits: dead-lettered", r.DeadLettered)
		w.h.count("limits: dropped", r.Dropped)
		var hs [][]byte
		var es2 []*storepb.NackEntry
		for _, m := range r.Received {
			if m.Message.FailedCount > 0 {
				w.h.count("limits: received after a failure", 1)
			}
			switch rng.IntN(4) {
			case 0:
				hs = append(hs, m.ReceiptHandle)
			case 1, 2:
				es2 = append(es2, &storepb.NackEntry{ReceiptHandle: m.ReceiptHandle, Kind: storepb.NackKind(rng.IntN(3)), DelayMs: -1})
			default: // abandoned: the lease runs out (a failed delivery)
			}
		}
		if len(hs) > 0 {
			w.c.propose(ctx, rng, func(ts int64) []byte {
				return marshal(&storepb.Command{Op: &storepb.Command_Delete{Delete: &storepb.Delete{Tenant: tenant, Queue: queue, ReceiptHandles: hs}}}, ts)
			})
		}
		if len(es2) > 0 {
			if _, o := w.c.propose(ctx, rng, func(ts int64) []byte {
				return marshal(&storepb.Command{Op: &storepb.Command_Nack{Nack: &storepb.Nack{Tenant: tenant, Queue: queue, Entries: es2}}}, ts)
			}); o == ok {
				w.h.count("limits: nacked", len(es2))
			}
		}
	}
}

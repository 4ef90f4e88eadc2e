package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

const (
	tenant = "t"
	mainQ  = "q"
	deadQ  = "dlq"
	slowQ  = "slow" // the superseder's queue
	// drainVis (ms) is the drain's lease: long enough that the drain
	// deletes what it receives before the lease ends, short enough that a
	// message whose receive reply or delete the drain lost (an unknown
	// outcome under load) comes back well within the seed's 60 s budget.
	// At 60 s one lost reply could hold the drain past the budget (seed 11
	// once ran out of it in the drain on a loaded machine).
	drainVis = 10_000
)

func marshal(c *storepb.Command, timeMs int64) []byte {
	c.Version, c.TimeMs = store.CommandVersion, timeMs
	b, err := proto.Marshal(c)
	if err != nil {
		panic(err)
	}
	return b
}

// recvEvent is one message returned by a receive whose outcome is known.
type recvEvent struct {
	id, body, queue string
	count           int32
	visibleAt       int64 // lease end (server time)
	serverNow       int64 // the receive's apply time: visibleAt - lease
	sentAt          int64
	handle          []byte
	invoked, done   time.Time
	drain           bool
}

// handleEvent is one delete or visibility change of one handle.
type handleEvent struct {
	id, queue string
	count     int32
	nack      bool // a visibility change (mostly to 0) or a nack, else a delete
	// nackUntil: a Nack accepted: the message is not received again before
	// this server time.
	nackUntil     int64
	outcome       outcome
	err           error // per-entry result when outcome is ok
	invoked, done time.Time
}

// history is everything the workload saw.
type history struct {
	mu       sync.Mutex
	attempts map[string]outcome // body -> best send outcome (ok > unknown > fail)
	delays   map[string]int64   // body -> per-message delay asked
	ids      map[string]string  // body -> message id of an acknowledged send
	dupIDs   []string           // violations: a body answered with two ids
	recvs    []recvEvent
	handles  []handleEvent
	ops      map[string]int
}

func newHistory() *history {
	return &history{attempts: map[string]outcome{}, delays: map[string]int64{}, ids: map[string]string{}, ops: map[string]int{}}
}

func (h *history) count(op string, n int) {
	h.mu.Lock()
	h.ops[op] += n
	h.mu.Unlock()
}

// workload runs producers, consumers and the outbox relay until stop.
type workload struct {
	c        *cluster
	h        *history
	seed     uint64
	vis      int64 // the queue's visibility timeout, ms
	maxRecv  int32
	retry    *storepb.RetryPolicy // the main queue's retry backoff (nil: none)
	stopLoad chan struct{}
	wg       sync.WaitGroup
	relayWG  sync.WaitGroup
	stopRly  chan struct{}
}

func (w *workload) stopped() bool {
	select {
	case <-w.stopLoad:
		return true
	default:
		return false
	}
}

// setup creates the queues (retrying until the cluster answers).
func (w *workload) setup(ctx context.Context, rng *rand.Rand) error {
	for _, name := range []string{deadQ, mainQ, slowQ} {
		a := store.DefaultAttributes()
		a.VisibilityTimeoutMs = w.vis
		if name == mainQ && w.maxRecv > 0 {
			a.DeadLetterQueue, a.MaxReceiveCount = deadQ, w.maxRecv
		}
		if name == mainQ {
			a.RetryPolicy = w.retry
			// Issue 18's receive orders: priorities (strict or weighted)
			// and fair groups, by seed (no draw: the schedule stays).
			if w.seed%2 == 0 {
				a.PriorityMode, a.PriorityWeight = store.PriorityWeighted, 2
			}
			if w.seed%3 == 0 {
				a.Fairness = store.FairnessGroup
			}
		}
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

func (w *workload) producer(ctx context.Context, p int) {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(w.seed, uint64(100+p)))
	for n := 0; !w.stopped(); n++ {
		var es []*storepb.SendEntry
		for k := range 1 + rng.IntN(3) {
			body := fmt.Sprintf("p%d-%d-%d", p, n, k)
			e := &storepb.SendEntry{Body: body, IdempotencyKey: body}
			if rng.IntN(5) == 0 {
				e.DelayMs = 50 + int64(rng.IntN(250))
			}
			if rng.IntN(3) == 0 {
				e.Priority = proto.Int32(int32(rng.IntN(store.MaxPriority + 1)))
			}
			if rng.IntN(2) == 0 {
				e.GroupId = fmt.Sprint("g", rng.IntN(3)) // fair queues' groups
			}
			es = append(es, e)
		}
		w.send(ctx, rng, mainQ, es)
		time.Sleep(time.Duration(1+rng.IntN(3)) * time.Millisecond)
	}
}

// send proposes es; a send whose outcome is unknown is retried with the
// same idempotency keys (the retry answers the first message's id).
func (w *workload) send(ctx context.Context, rng *rand.Rand, queue string, es []*storepb.SendEntry) {
	for _, e := range es {
		w.h.mu.Lock()
		w.h.delays[e.Body] = e.DelayMs
		w.h.attempts[e.Body] = failed
		w.h.mu.Unlock()
	}
	for try := 0; try < 6; try++ {
		r, o := w.c.propose(ctx, rng, func(ts int64) []byte {
			return marshal(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: tenant, Queue: queue, Entries: es}}}, ts)
		})
		w.h.mu.Lock()
		w.h.ops["send "+o.String()]++
		for _, e := range es {
			if o == unknown && w.h.attempts[e.Body] == failed {
				w.h.attempts[e.Body] = unknown
			}
		}
		if o == ok {
			for k, e := range es {
				s := r.Sent[k]
				if r.Err != nil || s.Err != nil {
					continue
				}
				w.h.attempts[e.Body] = ok
				if prev, seen := w.h.ids[e.Body]; seen && prev != s.MessageID {
					w.h.dupIDs = append(w.h.dupIDs, fmt.Sprintf("%s: %s and %s", e.Body, prev, s.MessageID))
				}
				w.h.ids[e.Body] = s.MessageID
				w.h.ops["message sent"]++
				if s.Duplicate {
					w.h.ops["send answered as duplicate"]++
				}
			}
		}
		w.h.mu.Unlock()
		if o == ok || o == failed && w.stopped() {
			break
		}
	}
}

// superseder exercises superseded handles on a queue of its own: it sends
// one message, receives it with a short lease, lets the lease run out,
// receives it again, and deletes with the old handle first (STALE while
// the message exists), then with the new one.
func (w *workload) superseder(ctx context.Context) {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(w.seed, 400))
	for n := 0; !w.stopped(); n++ {
		body := fmt.Sprintf("x-%d", n)
		w.send(ctx, rng, slowQ, []*storepb.SendEntry{{Body: body, IdempotencyKey: body}})
		first, _ := w.receive(ctx, rng, slowQ, 1, 30, false)
		time.Sleep(40 * time.Millisecond)
		again, _ := w.receive(ctx, rng, slowQ, 1, 1000, false)
		w.settle(ctx, rng, slowQ, first, false)
		// A visibility change is accepted only while the message exists:
		// evidence for the checker that the stale delete removed nothing.
		w.settle(ctx, rng, slowQ, again, true, 1000)
		w.settle(ctx, rng, slowQ, again, false)
	}
}

func (w *workload) receive(ctx context.Context, rng *rand.Rand, queue string, max int32, vis int64, drain bool) ([]recvEvent, outcome) {
	invoked := time.Now()
	r, o := w.c.propose(ctx, rng, func(ts int64) []byte {
		return marshal(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: tenant, Queue: queue,
			MaxMessages: max, VisibilityTimeoutMs: vis}}}, ts)
	})
	if o != ok || r.Err != nil {
		w.h.count("receive "+o.String(), 1)
		return nil, o
	}
	done := time.Now()
	var evs []recvEvent
	for _, m := range r.Received {
		// As the leader's reply does: the receive left the body encoded.
		// A record that does not decode shows as a wrong body.
		if _, err := m.Whole(); err != nil {
			m.Message.Body = "undecodable: " + err.Error()
		}
		evs = append(evs, recvEvent{id: m.Message.Id, body: m.Message.Body, queue: queue, count: m.Message.ReceiveCount,
			visibleAt: m.Message.VisibleAtMs, serverNow: m.Message.VisibleAtMs - vis, sentAt: m.Message.SentAtMs,
			handle: m.ReceiptHandle, invoked: invoked, done: done, drain: drain})
	}
	w.h.mu.Lock()
	w.h.recvs = append(w.h.recvs, evs...)
	w.h.ops["received"] += len(evs)
	w.h.ops["dead-lettered"] += r.DeadLettered
	w.h.mu.Unlock()
	return evs, o
}

// settle deletes (or nacks) the handles of evs, retrying unknown outcomes.
func (w *workload) settle(ctx context.Context, rng *rand.Rand, queue string, evs []recvEvent, nack bool, timeoutMs ...int64) {
	if len(evs) == 0 {
		return
	}
	for try := 0; try < 3; try++ {
		invoked := time.Now()
		r, o := w.c.propose(ctx, rng, func(ts int64) []byte {
			if nack {
				var cs []*storepb.VisibilityChange
				for _, e := range evs {
					vc := &storepb.VisibilityChange{ReceiptHandle: e.handle}
					if len(timeoutMs) > 0 {
						vc.VisibilityTimeoutMs = timeoutMs[0]
					}
					cs = append(cs, vc)
				}
				return marshal(&storepb.Command{Op: &storepb.Command_ChangeVisibility{ChangeVisibility: &storepb.ChangeVisibility{
					Tenant: tenant, Queue: queue, Changes: cs}}}, ts)
			}
			var hs [][]byte
			for _, e := range evs {
				hs = append(hs, e.handle)
			}
			return marshal(&storepb.Command{Op: &storepb.Command_Delete{Delete: &storepb.Delete{Tenant: tenant, Queue: queue, ReceiptHandles: hs}}}, ts)
		})
		done := time.Now()
		w.h.mu.Lock()
		for k, e := range evs {
			he := handleEvent{id: e.id, queue: queue, count: e.count, nack: nack, outcome: o, invoked: invoked, done: done}
			if o == ok {
				if r.Err != nil {
					he.outcome, he.err = failed, r.Err
				} else {
					he.err = r.Entries[k]
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

func (w *workload) consumer(ctx context.Context, k int) {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(w.seed, uint64(200+k)))
	for !w.stopped() {
		queue := mainQ
		if w.maxRecv > 0 && rng.IntN(5) == 0 {
			queue = deadQ
		}
		vis := 100 + int64(rng.IntN(400))
		evs, _ := w.receive(ctx, rng, queue, int32(1+rng.IntN(4)), vis, false)
		if len(evs) == 0 {
			time.Sleep(time.Duration(2+rng.IntN(10)) * time.Millisecond)
			continue
		}
		switch n := rng.IntN(20); {
		case n < 12:
			w.settle(ctx, rng, queue, evs, false)
		case n < 14:
			w.settle(ctx, rng, queue, evs, true)
		case n < 16:
			w.nack(ctx, rng, queue, evs)
		case n < 18:
			// A slow consumer: its lease may have ended, and the message been
			// received again, when it deletes.
			// Here it receives again first (often the same messages, with
			// the old handles superseded) and deletes with the old handles.
			time.Sleep(time.Duration(vis+int64(rng.IntN(int(vis)))) * time.Millisecond)
			again, _ := w.receive(ctx, rng, queue, 4, vis, false)
			w.h.count("slow deletes", len(evs))
			w.settle(ctx, rng, queue, evs, false)
			w.settle(ctx, rng, queue, again, false)
		default:
			// Crashed consumer: the lease runs out.
		}
	}
}

// relay moves dead-letter outbox entries to their target as server/'s
// relay does: deliver, then ack what was delivered.
func (w *workload) relay(ctx context.Context) {
	defer w.relayWG.Done()
	rng := rand.New(rand.NewPCG(w.seed, 300))
	for {
		select {
		case <-w.stopRly:
			return
		case <-time.After(3 * w.c.tick):
		}
		l := w.c.leader()
		if l == 0 {
			continue
		}
		var es []*storepb.OutboxEntry
		if err := w.c.withStore(l, func(s *store.Store, _ *pebble.DB) error {
			var err error
			es, err = s.PendingOutbox(16)
			return err
		}); err != nil || len(es) == 0 {
			continue
		}
		r, o := w.c.propose(ctx, rng, func(ts int64) []byte {
			return marshal(&storepb.Command{Op: &storepb.Command_DeliverOutbox{DeliverOutbox: &storepb.DeliverOutbox{Entries: es}}}, ts)
		})
		if o != ok {
			continue
		}
		var ids []uint64
		for i, e := range es {
			if r.Entries[i] == nil {
				ids = append(ids, e.Id)
			}
		}
		w.h.count("outbox delivered", len(ids))
		w.c.propose(ctx, rng, func(ts int64) []byte {
			return marshal(&storepb.Command{Op: &storepb.Command_AckOutbox{AckOutbox: &storepb.AckOutbox{Ids: ids}}}, ts)
		})
	}
}

// pending reads, on node id, the message ids stored in the queues and in
// the outbox, and the queues' message counters.
func (w *workload) pending(id uint64) (ids map[string]string, messages int64, outbox int, err error) {
	ids = map[string]string{}
	err = w.c.withStore(id, func(s *store.Store, db *pebble.DB) error {
		for _, name := range []string{mainQ, deadQ, slowQ} {
			qi, err := s.GetQueue(tenant, name, time.Now().UnixMilli())
			if err != nil {
				return err
			}
			messages += qi.Stats.Messages
			p := keys.MessagePrefix(shard, qi.Record.Id)
			if err := scan(db, p, func(v []byte) error {
				m := &storepb.MessageRecord{}
				if err := proto.Unmarshal(v, m); err != nil {
					return err
				}
				ids[m.Id] = name
				return nil
			}); err != nil {
				return err
			}
		}
		return scan(db, keys.OutboxPrefix(shard), func(v []byte) error {
			e := &storepb.OutboxEntry{}
			if err := proto.Unmarshal(v, e); err != nil {
				return err
			}
			outbox++
			if _, in := ids[e.Message.GetId()]; !in {
				ids[e.Message.GetId()] = "outbox"
			}
			return nil
		})
	})
	return ids, messages, outbox, err
}

func scan(db *pebble.DB, prefix []byte, f func(v []byte) error) error {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: keys.PrefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if err := f(it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// drain receives everything left (long leases) and deletes it, until the
// leader holds no message and no outbox entry and a receive finds nothing.
func (w *workload) drain(ctx context.Context, rng *rand.Rand) error {
	quiet := 0
	for quiet < 2 {
		if ctx.Err() != nil {
			return fmt.Errorf("drain: %w", ctx.Err())
		}
		got := 0
		for _, q := range []string{mainQ, deadQ, slowQ} {
			evs, _ := w.receive(ctx, rng, q, 10, drainVis, true)
			got += len(evs)
			w.settle(ctx, rng, q, evs, false)
		}
		l := w.c.leader()
		if got > 0 || l == 0 {
			quiet = 0
			continue
		}
		_, msgs, outbox, err := w.pending(l)
		if err != nil || msgs > 0 || outbox > 0 {
			quiet = 0
			time.Sleep(w.c.tick)
			continue
		}
		quiet++
	}
	return nil
}

// check reads the history and returns its violations and a summary.
func (h *history) check(possiblyPresent func(id string) bool) (violations []string, summary map[string]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	summary = map[string]int{}
	for k, v := range h.ops {
		summary[k] = v
	}
	violations = append(violations, h.dupIDs...)
	bodyOf := map[string]string{} // id -> body
	for b, id := range h.ids {
		bodyOf[id] = b
	}
	// No phantom: every received message was sent (its body was attempted)
	// and a body always comes back under one message id.
	idOfBody := map[string]string{}
	for _, r := range h.recvs {
		if _, sent := h.attempts[r.body]; !sent {
			violations = append(violations, fmt.Sprintf("phantom: received %s body %q that was never sent", r.id, r.body))
		}
		if prev, ok := idOfBody[r.body]; ok && prev != r.id {
			violations = append(violations, fmt.Sprintf("body %q stored twice: messages %s and %s", r.body, prev, r.id))
		}
		idOfBody[r.body] = r.id
		if id, ok := h.ids[r.body]; ok && id != r.id {
			violations = append(violations, fmt.Sprintf("body %q acknowledged as %s but received as %s", r.body, id, r.id))
		}
	}
	// Per message and queue: receives by count.
	type mq struct{ id, queue string }
	byMsg := map[mq][]recvEvent{}
	received := map[string]bool{}
	drained := map[string]bool{}
	for _, r := range h.recvs {
		byMsg[mq{r.id, r.queue}] = append(byMsg[mq{r.id, r.queue}], r)
		received[r.id] = true
		if r.drain {
			drained[r.id] = true
		}
	}
	nacked := map[mq]map[int32]bool{}     // visibility changes that may have applied
	changes := map[mq][]handleEvent{}     // visibility changes certainly accepted
	nackUntil := map[mq]map[int32]int64{} // accepted nacks: count -> redelivery time
	deletes := map[string][]handleEvent{}
	for _, e := range h.handles {
		if e.nack && e.outcome != failed && (e.outcome == unknown || e.err == nil) {
			if nacked[mq{e.id, e.queue}] == nil {
				nacked[mq{e.id, e.queue}] = map[int32]bool{}
			}
			nacked[mq{e.id, e.queue}][e.count] = true
		}
		if e.nack && e.outcome == ok && e.err == nil {
			changes[mq{e.id, e.queue}] = append(changes[mq{e.id, e.queue}], e)
			if e.nackUntil > 0 {
				if nackUntil[mq{e.id, e.queue}] == nil {
					nackUntil[mq{e.id, e.queue}] = map[int32]int64{}
				}
				nackUntil[mq{e.id, e.queue}][e.count] = e.nackUntil
			}
		}
		if !e.nack {
			deletes[e.id] = append(deletes[e.id], e)
			summary["delete "+e.outcome.String()]++
		}
		switch {
		case e.outcome == ok && e.err == nil && !e.nack:
			summary["delete accepted"]++
		case e.outcome == ok && e.err != nil && !e.nack:
			summary["delete refused ("+e.err.Error()+")"]++
		}
	}
	for k, evs := range byMsg {
		sort.Slice(evs, func(i, j int) bool { return evs[i].count < evs[j].count })
		for i, r := range evs {
			if i > 0 && evs[i-1].count == r.count {
				violations = append(violations, fmt.Sprintf("%s: received twice with receive count %d", k.id, r.count))
			}
			// Never before its delay (server time).
			if k.queue == mainQ && r.count == 1 {
				if d := h.delays[r.body]; d > 0 && r.serverNow < r.sentAt+d {
					violations = append(violations, fmt.Sprintf("%s: received at %d, before its delay ended (sent %d + %d ms)", k.id, r.serverNow, r.sentAt, d))
				}
			}
			// Never before a nack's redelivery time (its retry backoff).
			if until := nackUntil[k][r.count-1]; until > 0 && r.serverNow < until {
				violations = append(violations, fmt.Sprintf("%s: receive %d at server time %d, before the nack's redelivery at %d", k.id, r.count, r.serverNow, until))
			}
			// Never while the previous lease was valid, unless it was nacked.
			if i > 0 {
				p := evs[i-1]
				if p.count == r.count-1 && r.serverNow < p.visibleAt && !nacked[k][p.count] {
					violations = append(violations, fmt.Sprintf("%s: receive %d at server time %d while lease %d ran until %d", k.id, r.count, r.serverNow, p.count, p.visibleAt))
				}
			}
			if r.count > 1 {
				summary["redeliveries"]++
			}
		}
	}
	// No delete accepted with a superseded handle: a delete of (id, c),
	// accepted, invoked after a receive of (id, c' > c) completed, while the
	// message still existed afterwards (received from the same queue by a
	// receive, or its visibility changed, invoked after the delete
	// completed).
	for id, ds := range deletes {
		for _, d := range ds {
			if d.outcome != ok || d.err != nil {
				continue
			}
			evs := byMsg[mq{id, d.queue}]
			superseded, after := false, false
			for _, r := range evs {
				if r.count > d.count && r.done.Before(d.invoked) {
					superseded = true
				}
				if r.invoked.After(d.done) {
					after = true
				}
			}
			for _, e := range changes[mq{id, d.queue}] {
				if e.invoked.After(d.done) {
					after = true // an accepted visibility change: it existed
				}
			}
			if superseded && after {
				violations = append(violations, fmt.Sprintf("%s: delete with superseded handle (count %d) accepted while the message still existed", id, d.count))
			}
		}
	}
	// No acknowledged send lost: each was deleted (possibly) during the
	// run, or is received by the drain.
	for body, o := range h.attempts {
		switch o {
		case ok:
			summary["sends acknowledged"]++
		case unknown:
			summary["sends unknown"]++
			continue
		default:
			summary["sends failed"]++
			continue
		}
		id := h.ids[body]
		maybeDeleted := false
		for _, d := range deletes[id] {
			if d.outcome == unknown || d.outcome == ok && d.err == nil {
				maybeDeleted = true
			}
		}
		if !maybeDeleted && !drained[id] {
			violations = append(violations, fmt.Sprintf("lost: acknowledged send %s (%s) never deleted and not found by the drain (received before: %v, present somewhere now: %v)",
				id, body, received[id], possiblyPresent(id)))
		}
	}
	if len(violations) > 20 {
		violations = append(violations[:20], fmt.Sprintf("... and %d more", len(violations)-20))
	}
	return violations, summary
}

// undeleted returns the acknowledged message ids no delete may have
// removed.
func (h *history) undeleted() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	maybe := map[string]bool{}
	for _, e := range h.handles {
		if !e.nack && (e.outcome == unknown || e.outcome == ok && e.err == nil) {
			maybe[e.id] = true
		}
	}
	var out []string
	for body, o := range h.attempts {
		if id := h.ids[body]; o == ok && !maybe[id] {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func fmtSummary(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	for _, k := range ks {
		fmt.Fprintf(&b, "%s=%d ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}

package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// TestDeterministicReplay generates one command log of a few thousand random
// commands (every op, invalid commands, leader clocks that jump backwards)
// and applies it to three fresh stores, each in apply rounds of different
// random sizes (one indexed batch per round, committed NoSync as the Raft
// host does). Every replica must end with byte-identical state over
// [StatePrefix, StateEnd) and must have returned identical outcomes.
func TestDeterministicReplay(t *testing.T) {
	const shard = 4
	// The seed gives the coverage checked at the end (a FIFO run cut by a
	// message in flight is rare: one in 4,000 commands, or none, by seed).
	g := newGenerator(t, shard, 2)
	log, want := g.generate(4000)

	checkInvariants(t, g.s)
	wantState := dumpState(t, g.db, shard)
	if len(wantState) < 50 {
		t.Fatalf("generated log left only %d keys: too little coverage", len(wantState))
	}
	for replica := range 3 {
		db := openMem(t)
		s := New(db, shard)
		if replica == 0 {
			// The dedup filter and the hot-key cache are caches: without
			// them every lookup goes to Pebble, and the outcomes and state
			// must be the same.
			s.dedup, s.hot = nil, nil
		}
		rng := rand.New(rand.NewPCG(uint64(replica), 99))
		var got []string
		for i := 0; i < len(log); {
			n := min(1+rng.IntN(20), len(log)-i)
			b := db.NewIndexedBatch()
			for j := i; j < i+n; j++ {
				r, err := s.Apply(b, uint64(j+1), log[j])
				if err != nil {
					t.Fatalf("replica %d entry %d: %v", replica, j, err)
				}
				got = append(got, summarize(r.(*Result)))
			}
			if err := b.Commit(pebble.NoSync); err != nil {
				t.Fatal(err)
			}
			i += n
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("replica %d entry %d: outcome %s, generator had %s", replica, i, got[i], want[i])
			}
		}
		state := dumpState(t, db, shard)
		if len(state) != len(wantState) {
			t.Fatalf("replica %d: %d keys, generator %d", replica, len(state), len(wantState))
		}
		for i := range state {
			if state[i] != wantState[i] {
				t.Fatalf("replica %d: key %d differs:\n%q\n%q", replica, i, state[i], wantState[i])
			}
		}
	}
	t.Logf("%d commands, %d state keys, outcomes: %s", len(log), len(wantState), g.coverage())
	if g.fifo.delivered < 50 || g.fifo.redelivered < 5 || g.fifo.cut == 0 || g.errs["replayed"] < 5 || g.errs["moved to target"] == 0 || g.errs["moved"] == g.errs["moved to target"] {
		t.Errorf("too little FIFO / attempt / redrive coverage: %s", g.coverage())
	}
}

// dumpState lists the shard's state as key=value strings, in key order.
func dumpState(t *testing.T, db *pebble.DB, shard uint64) []string {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: keys.StatePrefix(shard), UpperBound: keys.StateEnd(shard)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []string
	for ok := it.First(); ok; ok = it.Next() {
		out = append(out, fmt.Sprintf("%s=%x", it.Key(), it.Value()))
	}
	return out
}

// summarize renders a Result for comparison across replicas.
func summarize(r *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v|%s|%s|%v|%d|%d|%v|%v|%v|%v|%v|%d|%d", r.Err, r.Tenant, r.Queue, r.Entries, r.Moved, r.Removed, r.Woken, r.OutboxAdded, r.Touched, r.Replayed,
		r.VisibleAt, r.Dropped, r.DeadLettered)
	for _, s := range r.Sent {
		fmt.Fprintf(&b, "|s:%s/%d/%v/%v", s.MessageID, s.Seq, s.Duplicate, s.Err)
	}
	for _, m := range r.Received {
		fmt.Fprintf(&b, "|r:%s/%d/%d/%d/%v/%x", m.Message.Id, m.Message.ReceiveCount, m.Message.FailedCount, m.Message.ReleasedCount,
			m.Message.DeadLetterReason, m.ReceiptHandle)
	}
	if r.QueueInfo != nil {
		fmt.Fprintf(&b, "|q:%v", r.QueueInfo.Record)
	}
	return b.String()
}

// generator builds a random command log by applying it to its own store, so
// later commands can use real receipt handles and outbox entries.
type generator struct {
	t       *testing.T
	db      *pebble.DB
	s       *Store
	rng     *rand.Rand
	now     int64
	handles []genHandle
	ops     map[string]int
	errs    map[string]int
	// fifo checks receives on FIFO queues (fifoChecker).
	fifo fifoChecker
	// lastAttempt is the last Receive with a receive_attempt_id: a client
	// retries it now and then.
	lastAttempt *storepb.Receive
	// lastReceived are the handles of the last receive that returned any.
	lastReceived []genHandle
	// comeBack: the next receive goes to this handle's queue (after a nack).
	comeBack *genHandle
	// dlqs are the queues dead-letter moves were delivered to: redrives
	// mostly pick one.
	dlqs []QueueRef
}

func newGenerator(t *testing.T, shard, seed uint64) *generator {
	db := openMem(t)
	return &generator{t: t, db: db, s: New(db, shard), rng: rand.New(rand.NewPCG(seed, 7)), now: 1_700_000_000_000,
		ops: map[string]int{}, errs: map[string]int{}}
}

func (g *generator) pick(xs ...string) string { return xs[g.rng.IntN(len(xs))] }

func (g *generator) tags() []string {
	var out []string
	for range g.rng.IntN(3) {
		out = append(out, g.pick("red", "blue", "green"))
	}
	return out
}

// queueName picks one of the generator's queues, FIFO ones half the time.
func (g *generator) queueName() string {
	return g.pick("q0", "q1", "q2", "q3", "f0.fifo", "f1.fifo", "f0.fifo", "f1.fifo")
}

func (g *generator) attrs(name string) *storepb.QueueAttributes {
	a := DefaultAttributes()
	a.Fifo = strings.HasSuffix(name, fifoSuffix)
	a.ContentBasedDeduplication = a.Fifo && g.rng.IntN(2) == 0
	a.VisibilityTimeoutMs = int64(g.rng.IntN(20_000))
	a.MessageRetentionMs = MinRetentionMs + int64(g.rng.IntN(120_000))
	if g.rng.IntN(3) == 0 {
		a.DeliveryDelayMs = 3000
	}
	if g.rng.IntN(2) == 0 {
		// Mostly a DLQ of the same kind; sometimes another (refused).
		dlq := g.pick("q0", "q1", "q2", "q3")
		if a.Fifo != (g.rng.IntN(8) == 0) {
			dlq = g.pick("f0.fifo", "f1.fifo")
		}
		a.DeadLetterQueue, a.MaxReceiveCount = dlq, int32(1+g.rng.IntN(3))
	}
	a.Partitions = int32(1 + g.rng.IntN(3))
	// Retry backoff, time to live and max length (issue 18).
	if g.rng.IntN(3) == 0 {
		a.RetryPolicy = &storepb.RetryPolicy{BaseMs: int64(500 + g.rng.IntN(2500)), FactorMilli: int64(1000 + g.rng.IntN(2000)),
			MaxMs: 20_000, JitterMilli: int64(g.rng.IntN(2) * g.rng.IntN(1001))}
	}
	if g.rng.IntN(8) == 0 {
		a.MessageTtlMs = int64(5000 + g.rng.IntN(50_000))
	}
	if g.rng.IntN(12) == 0 {
		a.MaxLength = int64(5 + g.rng.IntN(20))
		a.Overflow = storepb.OverflowPolicy(g.rng.IntN(2))
	}
	if g.rng.IntN(12) == 0 {
		a.MaxBytes = int64(20 + g.rng.IntN(60))
	}
	if !a.Fifo {
		if g.rng.IntN(2) == 0 {
			a.PriorityMode, a.PriorityWeight = PriorityWeighted, int32(g.rng.IntN(4))
		}
		// q3 is fair (fixed at creation: now and then an update is refused).
		if (name == "q3") != (g.rng.IntN(10) == 0) {
			a.Fairness = FairnessGroup
		}
	}
	return a
}

func (g *generator) command() *storepb.Command {
	tenant, q := g.pick("t0", "t1"), g.queueName()
	fifo := strings.HasSuffix(q, fifoSuffix)
	c := &storepb.Command{}
	switch n := g.rng.IntN(100); {
	case n < 6:
		c.Op = &storepb.Command_CreateQueue{CreateQueue: &storepb.CreateQueue{Tenant: tenant, Name: q, Attributes: g.attrs(q),
			HandleKey: bytes.Repeat([]byte{byte(g.rng.IntN(256))}, 32)}}
	case n < 8:
		c.Op = &storepb.Command_UpdateQueue{UpdateQueue: &storepb.UpdateQueue{Tenant: tenant, Name: q, Attributes: g.attrs(q)}}
	case n < 9:
		c.Op = &storepb.Command_DeleteQueue{DeleteQueue: &storepb.DeleteQueue{Tenant: tenant, Name: q}}
	case n < 10:
		c.Op = &storepb.Command_PurgeQueue{PurgeQueue: &storepb.PurgeQueue{Tenant: tenant, Name: q}}
	case n < 40:
		var es []*storepb.SendEntry
		for range 1 + g.rng.IntN(4) {
			e := &storepb.SendEntry{Body: g.pick("a", "bb", "ccc"), Tags: g.tags(), DelayMs: int64(g.rng.IntN(6000)) - 1,
				Attributes: map[string]string{g.pick("k1", "k2"): "v", g.pick("k3", "k4"): "w"}}
			if g.rng.IntN(5) == 0 {
				e.IdempotencyKey = g.pick("i1", "i2", "i3")
			}
			if g.rng.IntN(8) == 0 {
				e.DeliverAtMs = g.now + int64(g.rng.IntN(10_000))
			}
			if g.rng.IntN(10) == 0 {
				e.TtlMs = int64(g.rng.IntN(20_000))
			}
			if g.rng.IntN(2) == 0 {
				e.DeduplicationId = g.pick("d1", "d2", "d3", "d4")
			}
			if g.rng.IntN(2) == 0 && (!fifo || g.rng.IntN(10) == 0) {
				e.Priority = proto.Int32(int32(g.rng.IntN(12) - 1)) // -1 and 10 are refused
			}
			if !fifo && g.rng.IntN(2) == 0 {
				e.GroupId = g.pick("g1", "g2", "g3") // fair queues' groups
			}
			if fifo {
				// Mostly valid FIFO sends: a group, no per-message delay.
				if g.rng.IntN(15) > 0 {
					e.GroupId = g.pick("g1", "g2", "g3")
				}
				if g.rng.IntN(10) > 0 {
					e.DelayMs, e.DeliverAtMs = -1, 0
				}
				if g.rng.IntN(4) > 0 {
					// Mostly fresh ids: a duplicate now and then.
					e.DeduplicationId = fmt.Sprintf("d%d", g.rng.IntN(60))
				}
			}
			es = append(es, e)
		}
		c.Op = &storepb.Command_Send{Send: &storepb.Send{Tenant: tenant, Queue: q, Entries: es}}
	case n < 60:
		var f *storepb.TagFilter
		if g.rng.IntN(2) == 0 {
			f = &storepb.TagFilter{All: g.tags(), Any: g.tags(), None: g.tags()}
		}
		if g.lastAttempt != nil && g.rng.IntN(4) == 0 {
			c.Op = &storepb.Command_Receive{Receive: proto.Clone(g.lastAttempt).(*storepb.Receive)}
			break
		}
		if h := g.comeBack; h != nil {
			// The consumer that nacked comes back for more.
			g.comeBack = nil
			c.Op = &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: h.tenant, Queue: h.queue, MaxMessages: 5, VisibilityTimeoutMs: -1}}
			break
		}
		if len(g.handles) > 0 && g.rng.IntN(2) == 0 {
			// Consumers come back to a queue they just received from, while
			// leases and nacks of the last receives are still in play.
			h := g.handles[len(g.handles)-1]
			tenant, q = h.tenant, h.queue
		}
		rc := &storepb.Receive{Tenant: tenant, Queue: q, MaxMessages: int32(1 + g.rng.IntN(5)),
			VisibilityTimeoutMs: int64(g.rng.IntN(8000)) - 1, Filter: f}
		if g.rng.IntN(3) == 0 {
			rc.VisibilityTimeoutMs = int64(g.rng.IntN(90_000)) // outlives a few receives
		}
		if g.rng.IntN(4) == 0 {
			rc.ReceiveAttemptId = g.pick("a1", "a2")
			g.lastAttempt = rc
		}
		c.Op = &storepb.Command_Receive{Receive: rc}
	case n < 70:
		tenant, q, hs := g.someHandles(tenant, q)
		c.Op = &storepb.Command_Delete{Delete: &storepb.Delete{Tenant: tenant, Queue: q, ReceiptHandles: hs}}
	case n < 78:
		var cs []*storepb.VisibilityChange
		tenant, q, hs := g.someHandles(tenant, q)
		for _, h := range hs {
			cs = append(cs, &storepb.VisibilityChange{ReceiptHandle: h, VisibilityTimeoutMs: int64(g.rng.IntN(3)) * 2000})
		}
		if r := g.lastReceived; len(r) > 1 && g.rng.IntN(2) == 0 {
			// Nack the first message of the last receive, keep the rest.
			tenant, q = r[0].tenant, r[0].queue
			cs = []*storepb.VisibilityChange{{ReceiptHandle: r[0].h}}
			g.comeBack = &r[0]
		}
		c.Op = &storepb.Command_ChangeVisibility{ChangeVisibility: &storepb.ChangeVisibility{Tenant: tenant, Queue: q, Changes: cs}}
		if g.rng.IntN(2) == 0 {
			// The same handles nacked instead: failed or released, now and
			// then with an explicit redelivery time.
			var es []*storepb.NackEntry
			for _, ch := range cs {
				e := &storepb.NackEntry{ReceiptHandle: ch.ReceiptHandle, Kind: storepb.NackKind(g.rng.IntN(3)), DelayMs: -1}
				switch g.rng.IntN(5) {
				case 0:
					e.DelayMs = int64(g.rng.IntN(5000))
				case 1:
					e.DeliverAtMs = g.now + int64(g.rng.IntN(5000))
				}
				es = append(es, e)
			}
			c.Op = &storepb.Command_Nack{Nack: &storepb.Nack{Tenant: tenant, Queue: q, Entries: es}}
		}
	case n < 85:
		c.Op = &storepb.Command_Tick{Tick: &storepb.Tick{Limit: int32(g.rng.IntN(20))}}
	case n < 92:
		es, err := g.s.PendingOutbox(1 + g.rng.IntN(4))
		if err != nil {
			g.t.Fatal(err)
		}
		if g.rng.IntN(2) == 0 {
			for _, e := range es {
				if d := (QueueRef{e.TargetTenant, e.TargetQueue}); !e.Redrive && !slices.Contains(g.dlqs, d) {
					g.dlqs = append(g.dlqs, d)
				}
			}
			c.Op = &storepb.Command_DeliverOutbox{DeliverOutbox: &storepb.DeliverOutbox{Entries: es}}
		} else {
			var ids []uint64
			for _, e := range es {
				ids = append(ids, e.Id)
			}
			c.Op = &storepb.Command_AckOutbox{AckOutbox: &storepb.AckOutbox{Ids: ids}}
		}
	case n < 96:
		var target string
		if g.rng.IntN(2) == 0 {
			target = g.queueName()
		}
		if len(g.dlqs) > 0 && g.rng.IntN(4) > 0 {
			d := g.dlqs[g.rng.IntN(len(g.dlqs))]
			tenant, q = d.Tenant, d.Name
		}
		c.Op = &storepb.Command_Redrive{Redrive: &storepb.Redrive{Tenant: tenant, Queue: q, MaxMessages: int32(g.rng.IntN(4)),
			TargetQueue: target}}
	default:
		return nil // an undecodable entry
	}
	return c
}

type genHandle struct {
	tenant, queue string
	h             []byte
}

// someHandles returns recent receipt handles, mostly of one queue (whose
// tenant and name it returns), with some garbage mixed in.
func (g *generator) someHandles(tenant, queue string) (string, string, [][]byte) {
	var out [][]byte
	for i := range 1 + g.rng.IntN(3) {
		switch {
		case len(g.handles) == 0 || g.rng.IntN(10) == 0:
			out = append(out, []byte("garbage"))
		default:
			h := g.handles[len(g.handles)-1-g.rng.IntN(min(len(g.handles), 20))]
			if i == 0 && g.rng.IntN(5) > 0 {
				tenant, queue = h.tenant, h.queue
			}
			out = append(out, h.h)
		}
	}
	return tenant, queue, out
}

// generate returns the log and the generator's outcome for each entry.
func (g *generator) generate(n int) (log [][]byte, outcomes []string) {
	for i := range n {
		// The leader's clock mostly advances; one command in ten comes from a
		// leader whose clock is behind.
		g.now += int64(g.rng.IntN(4000))
		stamp := g.now
		if g.rng.IntN(10) == 0 {
			stamp -= int64(g.rng.IntN(60_000))
		}
		var data []byte
		var before *fifoSnapshot
		if c := g.command(); c != nil {
			if rc := c.GetReceive(); rc != nil {
				before = g.fifo.snapshot(g.t, g.s, rc.Tenant, rc.Queue)
			}
			c.Version, c.TimeMs = CommandVersion, stamp
			var err error
			if data, err = proto.Marshal(c); err != nil {
				g.t.Fatal(err)
			}
		} else {
			data = []byte{0x0a, byte(g.rng.IntN(256)), 0xff}
		}
		b := g.db.NewIndexedBatch()
		r, err := g.s.Apply(b, uint64(i+1), data)
		if err != nil {
			g.t.Fatalf("entry %d: %v", i, err)
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			g.t.Fatal(err)
		}
		res := r.(*Result)
		if before != nil {
			g.fifo.check(g.t, g.s, before, res)
		}
		checkPriorityOrder(g.t, g.s, data, res)
		if len(res.Received) > 0 {
			g.lastReceived = nil
		}
		for _, m := range res.Received {
			h := genHandle{res.Tenant, res.Queue, m.ReceiptHandle}
			g.handles = append(g.handles, h)
			g.lastReceived = append(g.lastReceived, h)
		}
		g.record(data, res)
		if i%500 == 499 {
			checkInvariants(g.t, g.s)
		}
		log = append(log, data)
		outcomes = append(outcomes, summarize(res))
	}
	return log, outcomes
}

func (g *generator) record(data []byte, r *Result) {
	var c storepb.Command
	name := "invalid"
	if proto.Unmarshal(data, &c) == nil && c.Op != nil {
		name = fmt.Sprintf("%T", c.Op)
		name = strings.TrimPrefix(name, "*storepb.Command_")
	}
	g.ops[name]++
	if r.Err != nil {
		g.errs[errName(r.Err)]++
	}
	for _, s := range r.Sent {
		if s.Duplicate {
			g.errs["duplicate"]++
		}
	}
	g.errs["received"] += len(r.Received)
	if r.Replayed {
		g.errs["replayed"]++
	}
	if c.GetRedrive().GetTargetQueue() != "" {
		g.errs["moved to target"] += int(r.Moved)
	}
	for _, s := range r.Sent {
		if s.Err != nil {
			g.errs["send "+errName(s.Err)]++
		}
	}
	g.errs["removed"] += r.Removed
	g.errs["dropped"] += r.Dropped
	g.errs["dead-lettered"] += r.DeadLettered
	g.errs["nacked"] += len(r.VisibleAt)
	for _, m := range r.Received {
		if m.Message.FailedCount > 0 {
			g.errs["received after a failure"]++
		}
	}
	g.errs["moved"] += int(r.Moved)
	for _, e := range r.Entries {
		if e != nil {
			g.errs[errName(e)]++
		}
	}
	if r.OutboxAdded {
		g.errs["outbox"]++
	}
}

func (g *generator) coverage() string {
	return fmt.Sprintf("ops %v outcomes %v fifo: %d receives checked, %d messages, %d head redeliveries, %d runs cut by a message in flight",
		g.ops, g.errs, g.fifo.receives, g.fifo.delivered, g.fifo.redelivered, g.fifo.cut)
}

// checkInvariants verifies the bookkeeping the generated log exercised: per
// queue, the message and byte counters match the records, and the visibility
// and tag indexes hold exactly one entry per record (and tag) at its
// visible_at (the lease record's, if it has one), with the right flag and,
// with a lease record, its count and first receive time; every lease record
// belongs to a message.
func checkInvariants(t *testing.T, s *Store) {
	t.Helper()
	r := s.reader(0)
	qs, err := r.queues()
	if err != nil {
		t.Fatal(err)
	}
	all := func(lo []byte) map[string][]byte {
		it, err := r.iter(lo, keys.PrefixEnd(lo))
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		out := map[string][]byte{}
		for ok := it.First(); ok; ok = it.Next() {
			v, _ := it.Value()
			out[string(it.Key())] = bytes.Clone(v)
		}
		return out
	}
	total := 0
	defer func() { t.Logf("invariants checked over %d queues, %d messages", len(qs), total) }()
	for _, q := range qs {
		meta, err := r.queueMeta(q.Id)
		if err != nil {
			t.Fatal(err)
		}
		msgs := all(keys.MessagePrefix(s.shard, q.Id))
		leases := all(keys.LeasePrefix(s.shard, q.Id))
		vis := all(keys.VisiblePrefix(s.shard, q.Id))
		maps.Copy(vis, all(keys.PrioritiesPrefix(s.shard, q.Id)))
		tags := all(keys.TagsPrefix(s.shard, q.Id))
		expiry := all(keys.ExpiryPrefix(s.shard, q.Id))
		total += len(msgs)
		var bytesSum int64
		nTags, nLeases, nExpiry := 0, 0, 0
		for _, v := range msgs {
			m := &storepb.MessageRecord{}
			if err := proto.Unmarshal(v, m); err != nil {
				t.Fatal(err)
			}
			bytesSum += m.Size
			if m.Seq < meta.LowSeq || m.Seq >= meta.NextSeq {
				t.Errorf("%s: seq %d outside [%d, %d)", q.Name, m.Seq, meta.LowSeq, meta.NextSeq)
			}
			want := []byte{entryFlag(m)}
			if lv, ok := leases[string(keys.Lease(s.shard, q.Id, m.Seq))]; ok {
				nLeases++
				if err := applyLease(m, lv); err != nil {
					t.Fatal(err)
				}
				want = []byte{entryFlag(m)}
				want = binary.BigEndian.AppendUint32(want, uint32(m.ReceiveCount))
				want = binary.BigEndian.AppendUint64(want, uint64(m.FirstReceivedAtMs))
				if hasCounts(m) {
					want = binary.BigEndian.AppendUint32(want, uint32(m.FailedCount))
					want = binary.BigEndian.AppendUint32(want, uint32(m.ReleasedCount))
				}
			}
			if m.ExpiresAtMs > 0 {
				nExpiry++
				if _, ok := expiry[string(keys.Expiry(s.shard, q.Id, m.ExpiresAtMs, m.Seq))]; !ok {
					t.Errorf("%s: seq %d: no expiry entry at %d", q.Name, m.Seq, m.ExpiresAtMs)
				}
			}
			vkey := keys.Visible(s.shard, q.Id, m.VisibleAtMs, m.Seq)
			if r := rankOf(m); r != defaultRank {
				vkey = keys.AppendPriority(nil, s.shard, q.Id, r, m.VisibleAtMs, m.Seq)
			}
			if f, ok := vis[string(vkey)]; !ok || !bytes.Equal(f, want) {
				t.Errorf("%s: seq %d: visibility entry %v %x, want %x", q.Name, m.Seq, ok, f, want)
			}
			for _, tag := range m.Tags {
				nTags++
				if f, ok := tags[string(keys.Tag(s.shard, q.Id, tag, m.VisibleAtMs, m.Seq))]; !ok || !bytes.Equal(f, want) {
					t.Errorf("%s: seq %d: tag entry %s %v %x, want %x", q.Name, m.Seq, tag, ok, f, want)
				}
			}
		}
		checkGroups(t, s, q, msgs, leases, all(keys.GroupsPrefix(s.shard, q.Id)), all(keys.GroupHeadPrefix(s.shard, q.Id)))
		if nExpiry != len(expiry) {
			t.Errorf("%s: %d expiry entries, %d messages with a ttl", q.Name, len(expiry), nExpiry)
		}
		checkOrder(t, s, q, msgs, leases, all)
		if nLeases != len(leases) {
			t.Errorf("%s: %d lease records, %d of them of a message", q.Name, len(leases), nLeases)
		}
		if int64(len(msgs)) != meta.Messages || bytesSum != meta.Bytes || len(vis) != len(msgs) || len(tags) != nTags {
			t.Errorf("%s: meta %v; %d records of %d bytes, %d visibility and %d tag entries (want %d)",
				q.Name, meta, len(msgs), bytesSum, len(vis), len(tags), nTags)
		}
	}
}

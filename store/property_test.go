package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Property tests of the pure state machine.
//
// TestStoreProperties generates many short random command logs (send,
// receive, delete, change visibility, tick, purge, redrive, outbox delivery
// and ack by a well-behaved relay, queue updates; standard and FIFO queues
// with dead-letter queues; the command clock mostly advancing, sometimes
// jumping, sometimes lagging behind). After every command it compares the
// whole message population before and after (every message record of every
// queue, every outbox entry) and requires every appearance, disappearance
// and change to be explained by the command and its Result:
//
//   - a send stores exactly its non-duplicate entries; a duplicate answers
//     the message its idempotency key / deduplication id named while live,
//     and a live key is always answered as a duplicate;
//   - a receive leases only messages that were visible (visible_at <= now),
//     bumps the count by one and sets visible_at = now + lease; what it
//     removes went to the outbox as dead-lettered, with an exhausted count;
//     an unfiltered standard receive that returns less than asked left no
//     visible message behind;
//   - a delete or visibility change is accepted exactly when its handle's
//     receive count matches the record (a superseded handle is STALE, never
//     accepted while the message exists);
//   - a tick removes only messages past retention, and all of them unless
//     it hit its limit; purge removes exactly the queue's messages; a
//     redrive moves only messages not in flight; an outbox delivery inserts
//     each entry once (a retried delivery adds nothing); an ack removes only
//     the acked entries;
//   - no message id is ever present in two queues, and nothing else changes.
//
// At the end of each log every acknowledged send is present (in a queue or
// the outbox), or was deleted, expired or purged; the counters (QueueMeta,
// GetQueue stats) and indexes match the records; and a copy of the state
// key range taken at a random point of the log (as a Raft snapshot would
// carry it, without range tombstones), with the rest of the log replayed on
// it in random apply rounds, is byte-identical to the full run and gave the
// same outcomes.
//
// Seeds are deterministic: log i uses seed propertyBaseSeed+i. A failure
// names its seed; replay one with
//
//	QUORUMQ_PROPERTY_SEED=<seed> go test ./store -run TestStoreProperties -v
//
// QUORUMQ_PROPERTY_LOGS=<n> changes the number of logs (default 500).
func TestStoreProperties(t *testing.T) {
	const propertyBaseSeed = 1_000
	n := 500
	if v := os.Getenv("QUORUMQ_PROPERTY_LOGS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatalf("QUORUMQ_PROPERTY_LOGS: %v", err)
		}
	}
	seeds := make([]uint64, 0, n)
	for i := range n {
		seeds = append(seeds, uint64(propertyBaseSeed+i))
	}
	if v := os.Getenv("QUORUMQ_PROPERTY_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("QUORUMQ_PROPERTY_SEED: %v", err)
		}
		seeds = []uint64{s}
	}
	total := propCoverage{}
	commands := 0
	for _, seed := range seeds {
		var cov propCoverage
		ok := t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			cov = runPropertyLog(t, seed)
		})
		if !ok {
			t.Fatalf("property log with seed %d failed; replay: QUORUMQ_PROPERTY_SEED=%d go test ./store -run TestStoreProperties -v", seed, seed)
		}
		total.add(cov)
		commands += cov["commands"]
	}
	t.Logf("%d logs, %d commands; coverage %v", len(seeds), commands, total)
	if len(seeds) >= 100 {
		for _, k := range []string{"send", "duplicate", "received", "dead-lettered", "delivered", "redelivery ignored",
			"redriven", "expired", "purged", "deleted", "stale delete", "stale visibility", "nack", "fifo received"} {
			if total[k] == 0 {
				t.Errorf("no %q in %d logs: the generator lost coverage", k, len(seeds))
			}
		}
	}
}

type propCoverage map[string]int

func (c propCoverage) add(o propCoverage) {
	for k, v := range o {
		c[k] += v
	}
}

const propShard = 0
const propTenant = "t"

// propMsg is one message record and the queue holding it.
type propMsg struct {
	q   *storepb.QueueRecord
	rec *storepb.MessageRecord
	raw []byte // the record's bytes: unchanged bytes reuse the decoded rec
}

// propView is the whole message population of the shard at one point.
type propView struct {
	now    int64
	stamp  int64                           // the last command's own stamp
	queues map[string]*storepb.QueueRecord // by name (one tenant)
	byID   map[uint64]*storepb.QueueRecord
	msgs   map[string]*propMsg    // by message id
	bySeq  map[[2]uint64]*propMsg // by (queue id, seq)
	outbox map[uint64]*storepb.OutboxEntry
}

// readPropView reads the shard's messages and outbox; records whose bytes
// are those of prev are not decoded again.
func readPropView(t *testing.T, s *Store, prev *propView) *propView {
	t.Helper()
	v := &propView{queues: map[string]*storepb.QueueRecord{}, byID: map[uint64]*storepb.QueueRecord{},
		msgs: map[string]*propMsg{}, bySeq: map[[2]uint64]*propMsg{}, outbox: map[uint64]*storepb.OutboxEntry{}}
	// One iterator over the state range, seeking from part to part: the
	// view is read after every command.
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: keys.StatePrefix(s.shard), UpperBound: keys.StateEnd(s.shard)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	each := func(prefix []byte, visit func(k, raw []byte)) {
		for ok := it.SeekGE(prefix); ok && bytes.HasPrefix(it.Key(), prefix); ok = it.Next() {
			raw, err := it.ValueAndErr()
			if err != nil {
				t.Fatal(err)
			}
			visit(it.Key(), raw)
		}
	}
	decode := func(raw []byte, m proto.Message) {
		if err := proto.Unmarshal(raw, m); err != nil {
			t.Fatal(err)
		}
	}
	each(keys.ShardMeta(s.shard), func(k, raw []byte) {
		if bytes.Equal(k, keys.ShardMeta(s.shard)) {
			sm := &storepb.ShardMeta{}
			decode(raw, sm)
			v.now, v.stamp = sm.LastTimeMs, sm.LastStampMs
		}
	})
	var qs []*storepb.QueueRecord
	each(keys.CatalogPrefix(s.shard), func(_, raw []byte) {
		q := &storepb.QueueRecord{}
		decode(raw, q)
		qs = append(qs, q)
		v.queues[q.Name], v.byID[q.Id] = q, q
	})
	for _, q := range qs {
		// A message is its record and, once its lease changed, its lease
		// record: raw is both (and the lease's length) for the cache.
		leases := map[uint64][]byte{}
		each(keys.LeasePrefix(s.shard, q.Id), func(k, raw []byte) {
			_, _, seq, err := keys.DecodeLease(k)
			if err != nil {
				t.Fatal(err)
			}
			leases[seq] = slices.Clone(raw)
		})
		each(keys.MessagePrefix(s.shard, q.Id), func(k, rec []byte) {
			_, _, seq, err := keys.DecodeMessage(k)
			if err != nil {
				t.Fatal(err)
			}
			lease := leases[seq]
			raw := append(append(slices.Clone(rec), lease...), byte(len(lease)))
			var m *storepb.MessageRecord
			if prev != nil {
				if p := prev.bySeq[[2]uint64{q.Id, seq}]; p != nil && string(p.raw) == string(raw) {
					m, raw = p.rec, p.raw
				}
			}
			if m == nil {
				m = &storepb.MessageRecord{}
				decode(rec, m)
				if lease != nil {
					if err := applyLease(m, lease); err != nil {
						t.Fatal(err)
					}
				}
			}
			if m.Seq != seq {
				t.Fatalf("message %s of queue %s has seq %d under key seq %d", m.Id, q.Name, m.Seq, seq)
			}
			if other, dup := v.msgs[m.Id]; dup {
				t.Fatalf("message %s is in queue %s (seq %d) and in queue %s (seq %d)", m.Id, other.q.Name, other.rec.Seq, q.Name, m.Seq)
			}
			pm := &propMsg{q: q, rec: m, raw: raw}
			v.msgs[m.Id], v.bySeq[[2]uint64{q.Id, m.Seq}] = pm, pm
		})
	}
	each(keys.OutboxPrefix(s.shard), func(_, raw []byte) {
		e := &storepb.OutboxEntry{}
		decode(raw, e)
		v.outbox[e.Id] = e
	})
	return v
}

func (v *propView) inFlight(m *storepb.MessageRecord) bool {
	return inFlight(m) && m.VisibleAtMs > v.now
}

type propHandle struct {
	queue string // queue received from
	qid   uint64
	raw   []byte
}

type propKey struct {
	qid uint64
	key string
}

type propKeyRec struct {
	id      string
	expires int64
}

// propGen generates one log by applying it, checking every step.
type propGen struct {
	t    *testing.T
	seed uint64
	rng  *rand.Rand
	db   *pebble.DB
	s    *Store
	now  int64 // the leader clock; commands may be stamped behind it

	log      [][]byte
	outcomes []string
	view     *propView

	handles   []propHandle
	delivered map[uint64]bool // outbox ids delivered (the relay may ack them)
	keys      map[propKey]propKeyRec
	fate      map[string]string // acked message id -> live / deleted / expired / purged / queue deleted
	acked     []string
	cov       propCoverage
}

var propQueues = []string{"s1", "s2", "f1.fifo", "dlq", "dlq.fifo"}

func (g *propGen) attrs(name string) *storepb.QueueAttributes {
	a := DefaultAttributes()
	a.Fifo = strings.HasSuffix(name, fifoSuffix)
	a.VisibilityTimeoutMs = 500 + int64(g.rng.IntN(8000))
	a.MessageRetentionMs = MinRetentionMs + int64(g.rng.IntN(90_000))
	if g.rng.IntN(4) == 0 {
		a.DeliveryDelayMs = int64(g.rng.IntN(3000))
	}
	switch name {
	case "s1":
		a.DeadLetterQueue, a.MaxReceiveCount = "dlq", int32(1+g.rng.IntN(3))
	case "s2":
		if g.rng.IntN(2) == 0 {
			a.DeadLetterQueue, a.MaxReceiveCount = "dlq", int32(1+g.rng.IntN(3))
		}
	case "f1.fifo":
		a.DeadLetterQueue, a.MaxReceiveCount = "dlq.fifo", int32(1+g.rng.IntN(3))
		a.ContentBasedDeduplication = g.rng.IntN(2) == 0
	case "dlq.fifo":
		a.ContentBasedDeduplication = true
	}
	return a
}

func (g *propGen) handleKey() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(g.rng.IntN(256))
	}
	return k
}

func (g *propGen) sendQueue() string {
	return []string{"s1", "s1", "s2", "f1.fifo", "f1.fifo", "dlq"}[g.rng.IntN(6)]
}

// pickHandles returns 1-3 handles: mostly recent ones (of one queue), some
// older (often superseded), now and then garbage or another queue's.
func (g *propGen) pickHandles() (string, [][]byte) {
	queue := g.sendQueue()
	var out [][]byte
	for i := range 1 + g.rng.IntN(3) {
		switch n := g.rng.IntN(20); {
		case len(g.handles) == 0 || n == 0:
			out = append(out, []byte("garbage"))
		default:
			var h propHandle
			if n < 12 {
				h = g.handles[len(g.handles)-1-g.rng.IntN(min(len(g.handles), 4))]
			} else {
				h = g.handles[g.rng.IntN(len(g.handles))]
			}
			if i == 0 && n != 1 {
				queue = h.queue
			}
			out = append(out, h.raw)
		}
	}
	return queue, out
}

func (g *propGen) command(i int) *storepb.Command {
	setup := []string{"dlq", "dlq.fifo", "s1", "s2", "f1.fifo"}
	if i < len(setup) {
		name := setup[i]
		return &storepb.Command{Op: &storepb.Command_CreateQueue{CreateQueue: &storepb.CreateQueue{
			Tenant: propTenant, Name: name, Attributes: g.attrs(name), HandleKey: g.handleKey()}}}
	}
	c := &storepb.Command{}
	switch n := g.rng.IntN(100); {
	case n < 30:
		q := g.sendQueue()
		var es []*storepb.SendEntry
		for range 1 + g.rng.IntN(3) {
			e := &storepb.SendEntry{Body: fmt.Sprintf("b%d", g.rng.IntN(40)), DelayMs: -1}
			if g.rng.IntN(3) == 0 {
				e.Tags = []string{[]string{"red", "blue"}[g.rng.IntN(2)]}
			}
			if g.rng.IntN(3) == 0 {
				e.IdempotencyKey = fmt.Sprintf("i%d", g.rng.IntN(8))
			}
			if strings.HasSuffix(q, fifoSuffix) {
				e.GroupId = fmt.Sprintf("g%d", g.rng.IntN(3))
				if g.rng.IntN(3) > 0 {
					e.DeduplicationId = fmt.Sprintf("d%d", g.rng.IntN(30))
				}
				if g.rng.IntN(20) == 0 {
					e.GroupId = "" // refused
				}
			} else if k := g.rng.IntN(6); k == 0 {
				e.DelayMs = int64(g.rng.IntN(8000))
			} else if k == 1 {
				e.DeliverAtMs = g.now + int64(g.rng.IntN(8000))
			}
			es = append(es, e)
		}
		c.Op = &storepb.Command_Send{Send: &storepb.Send{Tenant: propTenant, Queue: q, Entries: es}}
	case n < 52:
		q := g.sendQueue()
		switch k := g.rng.IntN(10); {
		case k == 0:
			q = "dlq.fifo"
		case k < 3 && len(g.handles) > 0:
			q = g.handles[len(g.handles)-1].queue
		}
		rc := &storepb.Receive{Tenant: propTenant, Queue: q, MaxMessages: int32(1 + g.rng.IntN(5))}
		switch k := g.rng.IntN(10); {
		case k < 2:
			rc.VisibilityTimeoutMs = -1
		case k < 3:
			rc.VisibilityTimeoutMs = 0
		default:
			rc.VisibilityTimeoutMs = 500 + int64(g.rng.IntN(10_000))
		}
		if g.rng.IntN(6) == 0 {
			rc.Filter = &storepb.TagFilter{Any: []string{"red"}}
		}
		c.Op = &storepb.Command_Receive{Receive: rc}
	case n < 64:
		q, hs := g.pickHandles()
		c.Op = &storepb.Command_Delete{Delete: &storepb.Delete{Tenant: propTenant, Queue: q, ReceiptHandles: hs}}
	case n < 72:
		q, hs := g.pickHandles()
		var cs []*storepb.VisibilityChange
		for _, h := range hs {
			cs = append(cs, &storepb.VisibilityChange{ReceiptHandle: h, VisibilityTimeoutMs: int64(g.rng.IntN(3)) * 3000})
		}
		c.Op = &storepb.Command_ChangeVisibility{ChangeVisibility: &storepb.ChangeVisibility{Tenant: propTenant, Queue: q, Changes: cs}}
	case n < 77:
		c.Op = &storepb.Command_Tick{Tick: &storepb.Tick{Limit: int32(g.rng.IntN(12))}}
	case n < 80:
		g.scheduleOp(c)
	case n < 82:
		c.Op = &storepb.Command_PurgeQueue{PurgeQueue: &storepb.PurgeQueue{Tenant: propTenant, Name: propQueues[g.rng.IntN(len(propQueues))]}}
	case n < 90:
		// The relay delivers pending entries in id order; entries already
		// delivered but not yet acked come again (a retry).
		es, err := g.s.PendingOutbox(1 + g.rng.IntN(4))
		if err != nil {
			g.t.Fatal(err)
		}
		if len(es) > 1 && g.rng.IntN(4) == 0 {
			es = append(es, es[0]) // the same entry twice in one command
		}
		c.Op = &storepb.Command_DeliverOutbox{DeliverOutbox: &storepb.DeliverOutbox{Entries: es}}
	case n < 95:
		// The relay acks only what it delivered (acking an undelivered
		// entry would drop its message: that is the relay's contract).
		var ids []uint64
		for id := range g.view.outbox {
			if g.delivered[id] && g.rng.IntN(3) > 0 {
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
		if g.rng.IntN(5) == 0 {
			ids = append(ids, 999_999) // unknown ids are ignored
		}
		c.Op = &storepb.Command_AckOutbox{AckOutbox: &storepb.AckOutbox{Ids: ids}}
	case n < 99:
		rd := &storepb.Redrive{Tenant: propTenant, Queue: "dlq", MaxMessages: int32(g.rng.IntN(4))}
		if g.rng.IntN(2) == 0 {
			rd.Queue = "dlq.fifo"
		}
		if g.rng.IntN(3) == 0 {
			rd.TargetQueue = []string{"s1", "s2", "f1.fifo"}[g.rng.IntN(3)]
		}
		c.Op = &storepb.Command_Redrive{Redrive: rd}
	default:
		name := []string{"s1", "s2", "f1.fifo"}[g.rng.IntN(3)]
		c.Op = &storepb.Command_UpdateQueue{UpdateQueue: &storepb.UpdateQueue{Tenant: propTenant, Name: name, Attributes: g.attrs(name)}}
	}
	return c
}

func runPropertyLog(t *testing.T, seed uint64) propCoverage {
	db := openPropDB(t)
	g := &propGen{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 0x5eed)), db: db, s: New(db, propShard),
		now: 1_700_000_000_000, delivered: map[uint64]bool{}, keys: map[propKey]propKeyRec{},
		fate: map[string]string{}, cov: propCoverage{}}
	g.view = readPropView(t, g.s, nil)
	n := 60 + g.rng.IntN(51)
	snapAt := 1 + g.rng.IntN(n-1)
	var snapDB *pebble.DB
	for i := range n {
		switch k := g.rng.IntN(20); {
		case k < 14:
			g.now += int64(g.rng.IntN(3000))
		case k < 16:
			g.now += 20_000 + int64(g.rng.IntN(60_000))
		}
		stamp := g.now
		if g.rng.IntN(10) == 0 {
			stamp -= int64(g.rng.IntN(30_000)) // a leader whose clock lags
		}
		c := g.command(i)
		c.Version, c.TimeMs = CommandVersion, stamp
		data, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		b := db.NewIndexedBatch()
		r, err := g.s.Apply(b, uint64(i+1), data)
		if err != nil {
			t.Fatalf("seed %d entry %d: apply: %v", seed, i, err)
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		res := r.(*Result)
		before := g.view
		g.view = readPropView(t, g.s, before)
		g.check(i, c, res, before, g.view)
		g.log = append(g.log, data)
		g.outcomes = append(g.outcomes, summarize(res))
		if i%25 == 24 {
			g.checkCounters(i)
		}
		if i+1 == snapAt {
			snapDB = copyState(t, db, propShard)
		}
	}
	g.cov["commands"] = n
	g.checkCounters(n)
	checkInvariants(t, g.s)
	for _, id := range g.acked {
		switch f := g.fate[id]; f {
		case "deleted", "expired", "purged", "queue deleted":
		case "live":
			if g.view.msgs[id] == nil && !slices.ContainsFunc(mapValues(g.view.outbox), func(e *storepb.OutboxEntry) bool { return e.Message.GetId() == id }) {
				t.Fatalf("seed %d: acknowledged send %s lost: in no queue and not in the outbox", seed, id)
			}
		default:
			t.Fatalf("seed %d: acknowledged send %s has fate %q", seed, id, f)
		}
	}
	// The snapshot copy, with the rest of the log replayed in random apply
	// rounds, must equal the full run byte for byte.
	s2 := New(snapDB, propShard)
	rng := rand.New(rand.NewPCG(seed, 0xc0b1))
	for i := snapAt; i < n; {
		k := min(1+rng.IntN(6), n-i)
		b := snapDB.NewIndexedBatch()
		for j := i; j < i+k; j++ {
			r, err := s2.Apply(b, uint64(j+1), g.log[j])
			if err != nil {
				t.Fatalf("seed %d: replay entry %d: %v", seed, j, err)
			}
			if got := summarize(r.(*Result)); got != g.outcomes[j] {
				t.Fatalf("seed %d: snapshot at %d, replayed entry %d: outcome %s, full run %s", seed, snapAt, j, got, g.outcomes[j])
			}
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		i += k
	}
	want, got := dumpState(t, db, propShard), dumpState(t, snapDB, propShard)
	if !slices.Equal(want, got) {
		for i := range max(len(want), len(got)) {
			var w, g string
			if i < len(want) {
				w = want[i]
			}
			if i < len(got) {
				g = got[i]
			}
			if w != g {
				t.Fatalf("seed %d: snapshot at entry %d + replay differs from the full run at key %d:\nfull   %q\nreplay %q", seed, snapAt, i, w, g)
			}
		}
	}
	return g.cov
}

// openPropDB is a small in-memory Pebble: the default 4 MiB memtable arena
// per DB dominates a short log's cost under the race detector.
// It fails the test on any misuse report (openWatched).
func openPropDB(t *testing.T) *pebble.DB {
	db, _ := openWatched(t, &pebble.Options{MemTableSize: 256 << 10})
	return db
}

func mapValues[K comparable, V any](m map[K]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// copyState copies every key of the shard's state range into a fresh DB, as
// a Raft snapshot carries it (live keys only, no range tombstones).
func copyState(t *testing.T, src *pebble.DB, shard uint64) *pebble.DB {
	t.Helper()
	dst := openPropDB(t)
	snap := src.NewSnapshot()
	defer snap.Close()
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: keys.StatePrefix(shard), UpperBound: keys.StateEnd(shard)})
	if err != nil {
		t.Fatal(err)
	}
	b := dst.NewBatch()
	for ok := it.First(); ok; ok = it.Next() {
		if err := b.Set(it.Key(), it.Value(), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	return dst
}

func (g *propGen) fail(i int, c *storepb.Command, format string, args ...any) {
	g.t.Helper()
	g.t.Fatalf("seed %d entry %d (%s at %d): %s", g.seed, i, opName(c), c.TimeMs, fmt.Sprintf(format, args...))
}

func opName(c *storepb.Command) string {
	return strings.TrimPrefix(fmt.Sprintf("%T", c.Op), "*storepb.Command_")
}

// check explains the difference between before and after by the command.
func (g *propGen) check(i int, c *storepb.Command, res *Result, b, a *propView) {
	g.t.Helper()
	now := a.now
	// The clock rule (DESIGN.md, "Time"): never backwards; a stamp ahead
	// moves time to it (at most a day); a stamp behind moves time by half
	// the proposer's elapsed time since the previous stamp (capped).
	want := b.now
	switch {
	case b.now == 0 || c.TimeMs >= b.now:
		want = min(c.TimeMs, b.now+MaxClockJumpMs)
		if b.now == 0 {
			want = c.TimeMs
		}
	case b.stamp != 0 && c.TimeMs > b.stamp:
		want = b.now + (min(c.TimeMs-b.stamp, 10_000)+1)/2
	}
	if now != want || now < b.now || a.stamp != c.TimeMs {
		g.fail(i, c, "shard time %d (stamp %d), want %d from (last %d, stamp %d, command %d)", now, a.stamp, want, b.now, b.stamp, c.TimeMs)
	}
	var gone, added []string
	for id := range b.msgs {
		if a.msgs[id] == nil {
			gone = append(gone, id)
		}
	}
	for id, m := range a.msgs {
		if p := b.msgs[id]; p == nil {
			added = append(added, id)
		} else if p.q.Id != m.q.Id || p.rec.Seq != m.rec.Seq {
			g.fail(i, c, "message %s moved from %s/%d to %s/%d in place", id, p.q.Name, p.rec.Seq, m.q.Name, m.rec.Seq)
		}
	}
	var outGone, outAdded []uint64
	for id, e := range b.outbox {
		if ae := a.outbox[id]; ae == nil {
			outGone = append(outGone, id)
		} else if !proto.Equal(e, ae) {
			g.fail(i, c, "outbox entry %d changed", id)
		}
	}
	for id := range a.outbox {
		if b.outbox[id] == nil {
			outAdded = append(outAdded, id)
		}
	}
	slices.Sort(gone)
	slices.Sort(added)
	slices.Sort(outGone)
	slices.Sort(outAdded)
	changed := map[string]bool{} // messages the command may rewrite
	expectGone, expectAdded := []string{}, []string{}
	expectOutGone := []uint64{}
	var fate string // of what is gone for good

	switch op := c.Op.(type) {
	case *storepb.Command_CreateQueue, *storepb.Command_UpdateQueue:
		if res.Err != nil && i < 5 {
			g.fail(i, c, "setup failed: %v", res.Err)
		}
	case *storepb.Command_Send:
		q := b.queues[op.Send.Queue]
		if q == nil {
			if !errors.Is(res.Err, ErrQueueNotFound) {
				g.fail(i, c, "send to a missing queue: %v", res.Err)
			}
			break
		}
		if len(res.Sent) != len(op.Send.Entries) {
			g.fail(i, c, "%d outcomes for %d entries", len(res.Sent), len(op.Send.Entries))
		}
		for k, e := range op.Send.Entries {
			out := res.Sent[k]
			if out.Err != nil {
				g.cov["send refused"]++
				continue
			}
			keysOf := []string{prefixed(idempotencyPrefix, e.IdempotencyKey)}
			if q.Attributes.Fifo {
				d := e.DeduplicationId
				if d == "" && q.Attributes.ContentBasedDeduplication {
					sum := sha256.Sum256([]byte(e.Body))
					d = hex.EncodeToString(sum[:])
				}
				keysOf = append(keysOf, prefixed(deduplicationPrefix, d))
			}
			var live *propKeyRec
			for _, key := range keysOf {
				if r, ok := g.keys[propKey{q.Id, key}]; key != "" && ok && r.expires > now {
					live = &r
					break
				}
			}
			switch {
			case live != nil && !out.Duplicate:
				g.fail(i, c, "entry %d: a live idempotency/deduplication record (message %s) did not make a duplicate", k, live.id)
			case live == nil && out.Duplicate:
				g.fail(i, c, "entry %d: duplicate of %s without a live record", k, out.MessageID)
			case out.Duplicate:
				if out.MessageID != live.id {
					g.fail(i, c, "entry %d: duplicate answered %s, the record names %s", k, out.MessageID, live.id)
				}
				g.cov["duplicate"]++
			default:
				g.cov["send"]++
				expectAdded = append(expectAdded, out.MessageID)
				g.acked = append(g.acked, out.MessageID)
				g.fate[out.MessageID] = "live"
				for _, key := range keysOf {
					if key != "" {
						g.keys[propKey{q.Id, key}] = propKeyRec{out.MessageID, now + IdempotencyWindowMs}
					}
				}
				m := a.msgs[out.MessageID]
				if m == nil || m.q.Id != q.Id || m.rec.Body != e.Body || m.rec.EnqueuedAtMs != now || m.rec.VisibleAtMs < now || m.rec.ReceiveCount != 0 {
					g.fail(i, c, "entry %d: stored message %v", k, m)
				}
			}
		}
	case *storepb.Command_Receive:
		q := b.queues[op.Receive.Queue]
		if q == nil || res.Err != nil {
			break
		}
		vis := op.Receive.VisibilityTimeoutMs
		if vis == -1 {
			vis = q.Attributes.VisibilityTimeoutMs
		}
		for _, r := range res.Received {
			id := r.Message.Id
			p, m := b.msgs[id], a.msgs[id]
			switch {
			case p == nil || m == nil || p.q.Id != q.Id:
				g.fail(i, c, "received %s, which was not in the queue (before %v, after %v)", id, p, m)
			case p.rec.VisibleAtMs > now:
				g.fail(i, c, "received %s before its visible_at %d (now %d)", id, p.rec.VisibleAtMs, now)
			case m.rec.ReceiveCount != p.rec.ReceiveCount+1 || m.rec.VisibleAtMs != now+vis:
				g.fail(i, c, "received %s: count %d -> %d, visible_at %d, want %d", id, p.rec.ReceiveCount, m.rec.ReceiveCount, m.rec.VisibleAtMs, now+vis)
			case q.Attributes.DeadLetterQueue != "" && p.rec.ReceiveCount >= q.Attributes.MaxReceiveCount:
				g.fail(i, c, "received %s with exhausted count %d (max %d) instead of dead-lettering it", id, p.rec.ReceiveCount, q.Attributes.MaxReceiveCount)
			}
			h, err := DecodeHandle(r.ReceiptHandle, q.HandleKey)
			if err != nil || h.Queue != q.Id || h.Seq != p.rec.Seq || h.ReceiveCount != m.rec.ReceiveCount || h.Shard != propShard {
				g.fail(i, c, "received %s with handle %+v (%v)", id, h, err)
			}
			changed[id] = true
			g.handles = append(g.handles, propHandle{queue: q.Name, qid: q.Id, raw: r.ReceiptHandle})
			g.cov["received"]++
			if q.Attributes.Fifo {
				g.cov["fifo received"]++
			}
		}
		// What left the queue went to the outbox, dead-lettered.
		if len(gone) != res.DeadLettered || len(outAdded) != res.DeadLettered {
			g.fail(i, c, "dead-lettered %d, but %d messages left the queue and %d outbox entries appeared", res.DeadLettered, len(gone), len(outAdded))
		}
		expectGone = gone
		for _, oid := range outAdded {
			e := a.outbox[oid]
			p := b.msgs[e.Message.GetId()]
			switch {
			case p == nil || p.q.Id != q.Id || !slices.Contains(gone, e.Message.Id):
				g.fail(i, c, "outbox entry %d holds %s, not a message that left %s", oid, e.Message.GetId(), q.Name)
			case e.Redrive || e.TargetQueue != q.Attributes.DeadLetterQueue || e.TargetTenant != q.Tenant || e.Message.DeadLetterSource != q.Name:
				g.fail(i, c, "dead-letter entry %v", e)
			case q.Attributes.DeadLetterQueue == "" || p.rec.ReceiveCount < q.Attributes.MaxReceiveCount || p.rec.VisibleAtMs > now:
				g.fail(i, c, "dead-lettered %s with count %d (max %d, dlq %q), visible_at %d (now %d)", p.rec.Id, p.rec.ReceiveCount,
					q.Attributes.MaxReceiveCount, q.Attributes.DeadLetterQueue, p.rec.VisibleAtMs, now)
			}
			g.cov["dead-lettered"]++
		}
		// An unfiltered receive from a standard queue that returned less
		// than asked (and did not hit the dead-letter bound) left nothing
		// visible.
		if !q.Attributes.Fifo && op.Receive.Filter == nil && len(res.Received) < int(op.Receive.MaxMessages) && res.DeadLettered < maxDeadPerReceive {
			for id, m := range a.msgs {
				if m.q.Id == q.Id && m.rec.VisibleAtMs <= now && !changed[id] {
					g.fail(i, c, "returned %d of %d, but %s (visible_at %d) was visible at %d", len(res.Received), op.Receive.MaxMessages, id, m.rec.VisibleAtMs, now)
				}
			}
		}
	case *storepb.Command_Delete:
		q := b.queues[op.Delete.Queue]
		if q == nil {
			break
		}
		removed := map[[2]uint64]bool{}
		for k, raw := range op.Delete.ReceiptHandles {
			pm, want := g.expectHandle(q, raw, b, removed)
			if !errors.Is(res.Entries[k], want) || (want == nil && res.Entries[k] != nil) {
				g.fail(i, c, "handle %d: outcome %v, want %v", k, res.Entries[k], want)
			}
			if errors.Is(want, ErrStaleReceipt) {
				g.cov["stale delete"]++
			}
			if want == nil && pm != nil {
				removed[[2]uint64{q.Id, pm.rec.Seq}] = true
				expectGone = append(expectGone, pm.rec.Id)
				g.cov["deleted"]++
			}
		}
		fate = "deleted"
	case *storepb.Command_ChangeVisibility:
		q := b.queues[op.ChangeVisibility.Queue]
		if q == nil {
			break
		}
		last := map[string]int64{}
		for k, ch := range op.ChangeVisibility.Changes {
			pm, want := g.expectHandle(q, ch.ReceiptHandle, b, nil)
			if want == nil && pm == nil {
				want = ErrMessageNotFound
			}
			if !errors.Is(res.Entries[k], want) || (want == nil && res.Entries[k] != nil) {
				g.fail(i, c, "change %d: outcome %v, want %v", k, res.Entries[k], want)
			}
			if errors.Is(want, ErrStaleReceipt) {
				g.cov["stale visibility"]++
			}
			if want == nil {
				changed[pm.rec.Id] = true
				last[pm.rec.Id] = now + ch.VisibilityTimeoutMs
				if ch.VisibilityTimeoutMs == 0 {
					g.cov["nack"]++
				}
			}
		}
		for id, at := range last {
			if m := a.msgs[id]; m == nil || m.rec.VisibleAtMs != at {
				g.fail(i, c, "%s: visible_at after the change %v, want %d", id, m, at)
			}
		}
	case *storepb.Command_CancelMessage, *storepb.Command_RescheduleMessage:
		expectGone = append(expectGone, g.checkSchedule(i, c, res, b, a, changed)...)
		fate = "deleted"
	case *storepb.Command_Tick:
		limit := int(op.Tick.Limit)
		if limit <= 0 {
			limit = defaultTickLimit
		}
		for _, id := range gone {
			p := b.msgs[id]
			if p.rec.EnqueuedAtMs+p.q.Attributes.MessageRetentionMs > now {
				g.fail(i, c, "tick removed %s of %s enqueued at %d (retention %d, now %d)", id, p.q.Name, p.rec.EnqueuedAtMs, p.q.Attributes.MessageRetentionMs, now)
			}
			g.cov["expired"]++
		}
		if res.Removed < len(gone) || res.Removed > limit {
			g.fail(i, c, "removed %d (limit %d), %d messages gone", res.Removed, limit, len(gone))
		}
		if res.Removed < limit {
			for id, m := range a.msgs {
				if m.rec.EnqueuedAtMs+m.q.Attributes.MessageRetentionMs <= now {
					g.fail(i, c, "tick removed %d < limit %d but left %s of %s past retention", res.Removed, limit, id, m.q.Name)
				}
			}
		}
		expectGone, fate = gone, "expired"
	case *storepb.Command_PurgeQueue:
		if q := b.queues[op.PurgeQueue.Name]; q != nil {
			for id, m := range b.msgs {
				if m.q.Id == q.Id {
					expectGone = append(expectGone, id)
					g.cov["purged"]++
				}
			}
		}
		fate = "purged"
	case *storepb.Command_Redrive:
		q := b.queues[op.Redrive.Queue]
		if q == nil || res.Err != nil {
			break
		}
		if int(res.Moved) != len(gone) || len(outAdded) != len(gone) {
			g.fail(i, c, "moved %d, %d messages gone, %d outbox entries added", res.Moved, len(gone), len(outAdded))
		}
		expectGone = gone
		for _, oid := range outAdded {
			e := a.outbox[oid]
			p := b.msgs[e.Message.GetId()]
			target := op.Redrive.TargetQueue
			if target == "" && p != nil {
				target = p.rec.DeadLetterSource
			}
			switch {
			case p == nil || p.q.Id != q.Id:
				g.fail(i, c, "redrive entry %d holds %s, not a message of %s", oid, e.Message.GetId(), q.Name)
			case a.inFlight(p.rec):
				g.fail(i, c, "redrove %s while in flight", p.rec.Id)
			case !e.Redrive || target == "" || e.TargetQueue != target:
				g.fail(i, c, "redrive entry %v, want target %q", e, target)
			}
			g.cov["redriven"]++
		}
		limit := int(op.Redrive.MaxMessages)
		if limit <= 0 {
			limit = defaultRedriveMax
		}
		if int(res.Moved) < limit && !q.Attributes.Fifo {
			for id, m := range a.msgs {
				if m.q.Id == q.Id && !a.inFlight(m.rec) && (op.Redrive.TargetQueue != "" || m.rec.DeadLetterSource != "") {
					g.fail(i, c, "moved %d < %d, but left %s redrivable", res.Moved, limit, id)
				}
			}
		}
	case *storepb.Command_DeliverOutbox:
		done := map[uint64]bool{}
		for k, e := range op.DeliverOutbox.Entries {
			var want error
			switch tq := b.queues[e.TargetQueue]; {
			case g.delivered[e.Id] || done[e.Id]:
				g.cov["redelivery ignored"]++
			case tq == nil:
				want = ErrQueueNotFound
			default:
				done[e.Id] = true
				expectAdded = append(expectAdded, e.Message.Id)
				m := a.msgs[e.Message.Id]
				wantCount := e.Message.ReceiveCount
				if e.Redrive {
					wantCount = 0
				}
				if m == nil || m.q.Id != tq.Id || m.rec.ReceiveCount != wantCount || m.rec.VisibleAtMs != now || m.rec.EnqueuedAtMs != now ||
					(e.Redrive && m.rec.DeadLetterSource != "") || m.rec.Body != e.Message.Body || m.rec.GroupId != e.Message.GroupId {
					g.fail(i, c, "delivered entry %d into %s as %v", e.Id, tq.Name, m)
				}
				g.cov["delivered"]++
			}
			if !errors.Is(res.Entries[k], want) || (want == nil && res.Entries[k] != nil) {
				g.fail(i, c, "entry %d (outbox %d to %s): outcome %v, want %v", k, e.Id, e.TargetQueue, res.Entries[k], want)
			}
		}
		for id := range done {
			g.delivered[id] = true
		}
	case *storepb.Command_AckOutbox:
		for _, id := range op.AckOutbox.Ids {
			if b.outbox[id] != nil {
				expectOutGone = append(expectOutGone, id)
			}
		}
	default:
		g.fail(i, c, "unexpected op")
	}

	slices.Sort(expectGone)
	expectGone = slices.Compact(expectGone)
	slices.Sort(expectAdded)
	slices.Sort(expectOutGone)
	if !slices.Equal(gone, expectGone) {
		g.fail(i, c, "messages gone %v, want %v (result %s)", gone, expectGone, summarize(res))
	}
	if !slices.Equal(added, expectAdded) {
		g.fail(i, c, "messages added %v, want %v (result %s)", added, expectAdded, summarize(res))
	}
	if _, ok := c.Op.(*storepb.Command_Receive); !ok {
		if _, ok := c.Op.(*storepb.Command_Redrive); !ok && len(outAdded) > 0 {
			g.fail(i, c, "outbox entries %v appeared", outAdded)
		}
	}
	if !slices.Equal(outGone, expectOutGone) {
		g.fail(i, c, "outbox entries gone %v, want %v", outGone, expectOutGone)
	}
	for id, m := range a.msgs {
		if p := b.msgs[id]; p != nil && !changed[id] && string(p.raw) != string(m.raw) {
			g.fail(i, c, "message %s changed:\n%v\n%v", id, p.rec, m.rec)
		}
	}
	if fate != "" {
		for _, id := range gone {
			if g.fate[id] == "live" {
				g.fate[id] = fate
			}
		}
	}
}

// expectHandle is the outcome a delete or visibility change must have for
// raw on queue q in state b: ErrInvalidReceipt for garbage or another
// queue's handle; nil with a nil message for a message already gone
// (removed: gone earlier in the same command); ErrStaleReceipt when the
// record's receive count differs (a superseded handle); else nil and the
// message.
func (g *propGen) expectHandle(q *storepb.QueueRecord, raw []byte, b *propView, removed map[[2]uint64]bool) (*propMsg, error) {
	idx := slices.IndexFunc(g.handles, func(h propHandle) bool { return string(h.raw) == string(raw) })
	if idx < 0 || g.handles[idx].qid != q.Id {
		return nil, ErrInvalidReceipt
	}
	h, err := ParseHandle(raw)
	if err != nil {
		g.t.Fatal(err)
	}
	pm := b.bySeq[[2]uint64{q.Id, h.Seq}]
	if pm == nil || removed[[2]uint64{q.Id, h.Seq}] {
		return nil, nil
	}
	if pm.rec.ReceiveCount != h.ReceiveCount {
		return nil, ErrStaleReceipt
	}
	return pm, nil
}

// checkCounters compares QueueMeta and GetQueue stats with the records.
func (g *propGen) checkCounters(i int) {
	g.t.Helper()
	v := g.view
	r := g.s.reader(0)
	for _, q := range v.byID {
		var st Stats
		for _, m := range v.msgs {
			if m.q.Id != q.Id {
				continue
			}
			st.Messages++
			st.Bytes += m.rec.Size
			switch {
			case m.rec.VisibleAtMs <= v.now:
				st.Visible++
			case inFlight(m.rec):
				st.InFlight++
			default:
				st.Delayed++
			}
		}
		meta, err := r.queueMeta(q.Id)
		if err != nil {
			g.t.Fatal(err)
		}
		if meta.Messages != st.Messages || meta.Bytes != st.Bytes {
			g.t.Fatalf("seed %d after entry %d: %s: meta says %d messages / %d bytes, records %d / %d", g.seed, i, q.Name, meta.Messages, meta.Bytes, st.Messages, st.Bytes)
		}
		g.checkDue(i, r, q, meta)
		info, err := g.s.GetQueue(q.Tenant, q.Name, v.now)
		if err != nil {
			g.t.Fatal(err)
		}
		if info.Stats != st {
			g.t.Fatalf("seed %d after entry %d: %s: stats %+v, records give %+v", g.seed, i, q.Name, info.Stats, st)
		}
	}
}

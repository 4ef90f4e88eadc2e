package store

import (
	"fmt"
	"math"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// checkDue checks a queue's kept counters and due entry against its
// records: in_flight / delayed count the records after settled_ms, low_seq
// is the lowest stored seq (next_seq when empty), and the due entry exists
// no later than the queue's first retention end, record expiry or
// visibility entry coming due after settled_ms (or is due already).
func (g *propGen) checkDue(i int, r *txn, q *storepb.QueueRecord, meta *storepb.QueueMeta) {
	g.t.Helper()
	fail := func(format string, args ...any) {
		g.t.Helper()
		g.t.Fatalf("seed %d after entry %d: %s: %s", g.seed, i, q.Name, fmt.Sprintf(format, args...))
	}
	var leased, delayed int64
	low, due := meta.NextSeq, int64(math.MaxInt64)
	for _, m := range g.view.msgs {
		if m.q.Id != q.Id {
			continue
		}
		if m.rec.Seq < low {
			low = m.rec.Seq
			due = min(due, m.rec.EnqueuedAtMs+q.Attributes.GetMessageRetentionMs())
		}
		if m.rec.VisibleAtMs > meta.SettledMs {
			due = min(due, m.rec.VisibleAtMs)
			if inFlight(m.rec) {
				leased++
			} else {
				delayed++
			}
		}
	}
	if !meta.Counted || meta.InFlight != leased || meta.Delayed != delayed {
		fail("meta counts %d in flight / %d delayed after %d (counted %v), records %d / %d", meta.InFlight, meta.Delayed, meta.SettledMs, meta.Counted, leased, delayed)
	}
	if meta.LowSeq != low {
		fail("low_seq %d, lowest stored seq %d", meta.LowSeq, low)
	}
	it, err := r.iter(keys.DedupOrderPrefix(r.s.shard, q.Id), keys.PrefixEnd(keys.DedupOrderPrefix(r.s.shard, q.Id)))
	if err != nil {
		g.t.Fatal(err)
	}
	if it.First() {
		_, _, exp, _, err := keys.DecodeDedupOrder(it.Key())
		if err != nil {
			g.t.Fatal(err)
		}
		due = min(due, exp)
	}
	if err := it.Close(); err != nil {
		g.t.Fatal(err)
	}
	// The first bucket of idempotency keys is dropped once all of it expired.
	if at, err := r.nextIdemDue(q.Id); err != nil {
		g.t.Fatal(err)
	} else if at > 0 {
		due = min(due, at)
	}
	if due == math.MaxInt64 {
		return
	}
	// An entry already due (at or before now) is never late: the next
	// Tick visits the queue. (A Tick cut short by its limit leaves the
	// queue due at its own time, while older work waits.)
	if meta.DueAtMs == 0 || (meta.DueAtMs > max(due, 1) && meta.DueAtMs > g.view.now) {
		fail("due at %d, but work is due at %d (settled %d, now %d, meta %v)", meta.DueAtMs, due, meta.SettledMs, g.view.now, meta)
	}
	if ok, err := r.get(keys.Due(r.s.shard, meta.DueAtMs, q.Id), nil); err != nil || !ok {
		fail("no due entry at %d: %v", meta.DueAtMs, err)
	}
}

package store

import (
	"bytes"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Due work and depth counters (see DESIGN.md, "Tick and depth").
//
// Every queue with something Tick must do later has exactly one entry in
// the shard's due index (keys.Due, at its meta's due_at_ms): a message's
// retention end, a short-lived record's expiry, or a visibility entry
// coming due (its in-flight / delayed counter must drop). Apply moves the
// entry earlier whenever it adds such work (schedule); it is never late,
// and may be early (the work went away: a delete), which costs one
// harmless visit. Tick and NeedsTick read the index from its low-water
// mark up to now, so their cost follows the queues with due work, not the
// shard's queues or the messages deleted since a queue was created.
//
// Counters: meta.in_flight / meta.delayed count the visibility entries
// after meta.settled_ms (flag received / new). Before any index change of
// a queue, apply settles it to now: the entries in (settled_ms, now] came
// due and leave the counters. The walk is amortised over the entries (each
// crosses once).

// walkVisible calls fn with the flag of every visibility entry of queue
// qid with lo < visible_at <= hi, at every priority in use. The priority
// levels other than the default share one iterator (a seek per level).
func (t *txn) walkVisible(qid uint64, lo, hi int64, fn func(flag byte)) (err error) {
	levels, err := t.levels(qid)
	if err != nil {
		return err
	}
	var it *iter
	defer func() {
		if it != nil {
			closeInto(it, &err)
		}
	}()
	vp := keys.VisiblePrefix(t.s.shard, qid)
	for _, p := range levels {
		if bytes.Equal(p, vp) {
			if err := t.walkRange(nil, untilKey(p, lo), untilKey(p, hi), fn); err != nil {
				return err
			}
			continue
		}
		if it == nil {
			pp := keys.PrioritiesPrefix(t.s.shard, qid)
			if it, err = t.iter(pp, keys.PrefixEnd(pp)); err != nil {
				return err
			}
		}
		if err := t.walkRange(it, untilKey(p, lo), untilKey(p, hi), fn); err != nil {
			return err
		}
	}
	return nil
}

// walkRange calls fn with the flag of every entry in [from, to): with it
// (an iterator whose bounds hold the range) by seeking it, else with an
// iterator of its own.
func (t *txn) walkRange(it *iter, from, to []byte, fn func(flag byte)) (err error) {
	ok := false
	if it == nil {
		if it, err = t.iter(from, to); err != nil {
			return err
		}
		defer closeInto(it, &err)
		ok = it.First()
	} else {
		ok = it.SeekGE(from)
	}
	for ; ok && bytes.Compare(it.Key(), to) < 0; ok = it.Next() {
		v, err := it.Value()
		if err != nil {
			return err
		}
		flag := flagNew
		if len(v) > 0 {
			flag = v[0]
		}
		fn(flag)
	}
	return nil
}

// settled returns queue qid's meta with its counters settled at t.now.
// Outside Apply it is the stored meta.
func (t *txn) settled(qid uint64) (*storepb.QueueMeta, error) {
	meta, err := t.queueMeta(qid)
	if err != nil || t.b == nil || (meta.Counted && meta.SettledMs >= t.now) {
		return meta, err
	}
	lo, hi, sign := meta.SettledMs, t.now, int64(-1)
	if !meta.Counted {
		// A queue from before the counters: count once.
		meta.InFlight, meta.Delayed, meta.Counted = 0, 0, true
		lo, hi, sign = t.now, math.MaxInt64, 1
	}
	err = t.walkVisible(qid, lo, hi, func(flag byte) {
		if flag == flagReceived {
			meta.InFlight += sign
		} else {
			meta.Delayed += sign
		}
	})
	if err != nil {
		return nil, err
	}
	meta.SettledMs = t.now
	return meta, t.putQueueMeta(qid, meta)
}

// countEntry keeps the counters in step when m's visibility entry is
// written (sign 1) or deleted (-1): an entry after now is in flight or
// delayed, and coming due later is work for Tick.
func (t *txn) countEntry(q *storepb.QueueRecord, m *storepb.MessageRecord, sign int64) error {
	if t.b == nil {
		return nil
	}
	meta, err := t.settled(q.Id)
	if err != nil || m.VisibleAtMs <= meta.SettledMs {
		return err
	}
	if inFlight(m) {
		meta.InFlight += sign
	} else {
		meta.Delayed += sign
	}
	if sign > 0 {
		if err := t.schedule(q, meta, m.VisibleAtMs); err != nil {
			return err
		}
	}
	return t.putQueueMeta(q.Id, meta)
}

// schedule makes sure Tick visits queue q at or before at: the queue's due
// entry moves earlier, never later.
func (t *txn) schedule(q *storepb.QueueRecord, meta *storepb.QueueMeta, at int64) error {
	if t.b == nil {
		return nil
	}
	at = max(at, 1) // 0 means "no entry"
	if meta.DueAtMs != 0 && meta.DueAtMs <= at {
		return nil
	}
	sh := t.s.shard
	if meta.DueAtMs != 0 {
		if err := t.del(keys.Due(sh, meta.DueAtMs, q.Id)); err != nil {
			return err
		}
	}
	if err := t.setRaw(keys.Due(sh, at, q.Id), keys.AppendString(keys.AppendString(nil, q.Tenant), q.Name)); err != nil {
		return err
	}
	if err := t.lowerMark(keys.DueLow(sh), position{at, q.Id}); err != nil {
		return err
	}
	meta.DueAtMs = at
	return t.putQueueMeta(q.Id, meta)
}

// scheduleNow has the next Tick visit q (its attributes changed).
func (t *txn) scheduleNow(q *storepb.QueueRecord) error {
	meta, err := t.queueMeta(q.Id)
	if err != nil {
		return err
	}
	return t.schedule(q, meta, t.now)
}

// maxTickVisits bounds the queues one Tick visits (the rest stay due for
// the next), besides its limit on removed records: a visit may remove
// nothing (an early due entry, counters to settle).
const maxTickVisits = 1000

// dueEntry is one entry of the due index.
type dueEntry struct {
	at           int64
	qid          uint64
	tenant, name string
}

// dueFrom opens the due index from its low-water mark up to until.
func (t *txn) dueFrom(until int64) (*iter, error) {
	sh := t.s.shard
	low, err := t.mark(keys.DueLow(sh))
	if err != nil {
		return nil, err
	}
	lo := keys.DuePrefix(sh)
	if low != lowest {
		lo = keys.Due(sh, low.at, low.seq)
	}
	return t.iter(lo, untilKey(keys.DuePrefix(sh), until))
}

func decodeDue(it *iter) (dueEntry, error) {
	_, at, qid, err := keys.DecodeDue(it.Key())
	if err != nil {
		return dueEntry{}, fmt.Errorf("store: bad due key %s: %w", keys.Pretty(it.Key()), err)
	}
	v, err := it.Value()
	if err != nil {
		return dueEntry{}, err
	}
	tenant, rest, err := keys.ReadString(v)
	if err != nil {
		return dueEntry{}, fmt.Errorf("store: bad due entry %s: %w", keys.Pretty(it.Key()), err)
	}
	name, _, err := keys.ReadString(rest)
	if err != nil {
		return dueEntry{}, fmt.Errorf("store: bad due entry %s: %w", keys.Pretty(it.Key()), err)
	}
	return dueEntry{at: at, qid: qid, tenant: tenant, name: name}, nil
}

// tick removes, at most limit records in all: for each queue whose due time
// has come, in due order (due time, queue id), its messages past retention
// (oldest first) and its expired short-lived records (idempotency keys,
// FIFO deduplication ids, receive attempts; by expiry), settling its
// counters; then delivered-outbox markers older than DeliveredMarkerTTLMs.
// A queue it leaves with work still due stays due.
func (t *txn) tick(op *storepb.Tick, res *Result) (err error) {
	limit := int(op.Limit)
	if limit <= 0 {
		limit = defaultTickLimit
	}
	sh := t.s.shard
	if !t.sm.DueIndex {
		// A shard from before the due index: every queue is due once.
		qs, err := t.queues()
		if err != nil {
			return err
		}
		for _, q := range qs {
			if err := t.scheduleNow(q); err != nil {
				return err
			}
		}
		t.sm.DueIndex, t.smDirty = true, true
	}
	it, err := t.dueFrom(t.now)
	if err != nil {
		return err
	}
	var (
		todo []dueEntry
		next *position // the first due entry not collected
	)
	for ok := it.First(); ok; ok = it.Next() {
		d, err := decodeDue(it)
		if err != nil {
			closeInto(it, &err)
			return err
		}
		if len(todo) >= maxTickVisits {
			next = &position{d.at, d.qid}
			break
		}
		todo = append(todo, d)
	}
	if err := it.Close(); err != nil {
		return err
	}
	// Raise the mark first: the visits below lower it again for what they
	// schedule (at or after now) and for what they leave undone.
	switch {
	case next != nil:
		err = t.raiseMark(keys.DueLow(sh), *next)
	case t.now < math.MaxInt64:
		err = t.raiseMark(keys.DueLow(sh), position{t.now + 1, 0})
	}
	if err != nil {
		return err
	}
	for _, d := range todo {
		if res.Removed >= limit {
			if err := t.lowerMark(keys.DueLow(sh), position{d.at, d.qid}); err != nil {
				return err
			}
			break
		}
		if err := t.tickQueue(d, limit, res); err != nil {
			return err
		}
	}
	if res.Removed < limit {
		return t.expireMarkers(limit, res)
	}
	return nil
}

// tickQueue does the due work of one queue and schedules its next.
func (t *txn) tickQueue(d dueEntry, limit int, res *Result) error {
	if err := t.del(keys.Due(t.s.shard, d.at, d.qid)); err != nil {
		return err
	}
	q, err := t.queue(d.tenant, d.name)
	if err != nil || q == nil || q.Id != d.qid {
		return err // the queue is gone
	}
	meta, err := t.settled(q.Id)
	if err != nil || meta.DueAtMs != d.at {
		return err
	}
	meta.DueAtMs = 0
	if err := t.putQueueMeta(q.Id, meta); err != nil {
		return err
	}
	if err := t.expireMessages(q, limit, res); err != nil {
		return err
	}
	if err := t.expireTTL(q, limit, res); err != nil {
		return err
	}
	if err := t.expireDedup(q.Id, limit, res); err != nil {
		return err
	}
	if err := t.expireIdem(q.Id, limit, res); err != nil {
		return err
	}
	at, err := t.nextDue(q, meta, limit, res)
	if err != nil || at == 0 {
		return err
	}
	return t.schedule(q, meta, at)
}

// nextDue is when queue q next has work for Tick (0: none): its oldest
// message's retention end, its first short-lived record's expiry, or, while
// it has in-flight or delayed messages, the next one coming due. Work left
// undone by the limit is due now.
func (t *txn) nextDue(q *storepb.QueueRecord, meta *storepb.QueueMeta, limit int, res *Result) (at int64, err error) {
	if res.Removed >= limit {
		return t.now, nil
	}
	sh := t.s.shard
	next := int64(math.MaxInt64)
	first := func(lo, hi []byte, fn func(it *iter) error) (err error) {
		it, err := t.iter(lo, hi)
		if err != nil {
			return err
		}
		defer closeInto(it, &err)
		if it.First() {
			return fn(it)
		}
		return nil
	}
	if meta.Messages > 0 {
		err := first(keys.Message(sh, q.Id, meta.LowSeq), keys.PrefixEnd(keys.MessagePrefix(sh, q.Id)), func(it *iter) error {
			v, err := it.Value()
			if err != nil {
				return err
			}
			m := &storepb.MessageRecord{}
			if err := proto.Unmarshal(v, m); err != nil {
				return fmt.Errorf("store: decode %s: %w", keys.Pretty(it.Key()), err)
			}
			next = min(next, m.EnqueuedAtMs+q.Attributes.GetMessageRetentionMs())
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	// Expired messages and records are gone (the limit was not reached):
	// the next comes after now.
	exp, err := t.nextExpiry(q.Id)
	if err != nil {
		return 0, err
	}
	if exp > 0 {
		next = min(next, exp)
	}
	dp := keys.DedupOrderPrefix(sh, q.Id)
	err = first(untilKey(dp, t.now), keys.PrefixEnd(dp), func(it *iter) error {
		_, _, exp, _, err := keys.DecodeDedupOrder(it.Key())
		if err != nil {
			return fmt.Errorf("store: bad key %s: %w", keys.Pretty(it.Key()), err)
		}
		next = min(next, exp)
		return nil
	})
	if err != nil {
		return 0, err
	}
	if exp, err := t.nextIdemDue(q.Id); err != nil {
		return 0, err
	} else if exp > 0 {
		next = min(next, exp)
	}
	if meta.InFlight+meta.Delayed > 0 {
		levels, err := t.levels(q.Id)
		if err != nil {
			return 0, err
		}
		for _, vp := range levels {
			err := first(untilKey(vp, t.now), keys.PrefixEnd(vp), func(it *iter) error {
				vis, _, err := keys.ReadInt64(it.Key()[len(vp):])
				if err != nil {
					return fmt.Errorf("store: bad key %s: %w", keys.Pretty(it.Key()), err)
				}
				next = min(next, vis)
				return nil
			})
			if err != nil {
				return 0, err
			}
		}
	}
	if next == math.MaxInt64 {
		return 0, nil
	}
	return next, nil
}

// NeedsTick reports whether a Tick at nowMs has work: a queue whose due
// time has come (a message past retention, an expired idempotency,
// deduplication or receive attempt record, or a message coming due whose
// counters must settle), or an old delivered marker. It reads O(1) keys:
// the first entry of the due index from its low-water mark, and of the
// delivered markers.
func (s *Store) NeedsTick(nowMs int64) (_ bool, err error) {
	t, done := s.snapshot(nowMs)
	defer done()
	sm := &storepb.ShardMeta{}
	if _, err := t.get(keys.ShardMeta(s.shard), sm); err != nil || !sm.DueIndex {
		return err == nil, err // a shard from before the due index: build it
	}
	it, err := t.dueFrom(nowMs)
	if err != nil {
		return false, err
	}
	found := it.First()
	if err := it.Close(); err != nil || found {
		return found, err
	}
	mk, err := t.iter(keys.DeliveredOrderPrefix(s.shard), keys.DeliveredOrderUntil(s.shard, nowMs-DeliveredMarkerTTLMs))
	if err != nil {
		return false, err
	}
	defer closeInto(mk, &err)
	return mk.First(), nil
}

package store

import (
	"bytes"
	"fmt"
	"math"
	"slices"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Scan budgets: how many index entries that do not match a filter a scan
// may pass over. Only a filter made of `none` tags alone can reach them
// (`all` and `any` walk the index of a wanted tag, so every entry they visit
// carries it). The budget keeps a receive's apply bounded; it is the same on
// every replica, so determinism holds.
const (
	receiveScanBudget = 10_000
	peekScanBudget    = 1_000
)

// candidate is one index entry: a message's place in (visible_at, seq)
// order.
type candidate struct {
	visibleAt int64
	seq       uint64
}

func (c candidate) less(o candidate) bool {
	return c.visibleAt < o.visibleAt || c.visibleAt == o.visibleAt && c.seq < o.seq
}

// cursor walks one index (the visibility index or one tag's index) in
// (visible_at, seq) order.
type cursor struct {
	it     *iter
	prefix []byte
	cur    candidate
	value  []byte // the entry's value, until the cursor moves
	ok     bool
}

func (c *cursor) load(ok bool) error {
	c.ok = ok
	if !ok {
		return nil
	}
	rest, found := bytes.CutPrefix(c.it.Key(), c.prefix)
	at, rest, err := keys.ReadInt64(rest)
	if err != nil || !found {
		return fmt.Errorf("store: bad index key %s", keys.Pretty(c.it.Key()))
	}
	seq, rest, err := keys.ReadUint64(rest)
	if err != nil || len(rest) != 0 {
		return fmt.Errorf("store: bad index key %s", keys.Pretty(c.it.Key()))
	}
	v, err := c.it.Value()
	if err != nil {
		return err
	}
	c.cur, c.value = candidate{at, seq}, v
	return nil
}

// plan picks the indexes a filter walks, as levels walked one after the
// other, each a set of indexes merged by (visible_at, seq): the first `all`
// tag's index (the other tags are checked on the record; put the rarest
// tag first), else the merge of every `any` tag's index, else the
// visibility indexes of the priorities in use (skipping `none` matches on
// the record): one level each, highest first, when byPriority, else one
// merge (oldest first). The tag indexes hold every priority, so a filter
// with tags gives oldest first. indexOnly reports that every entry of the
// plan matches, so no record needs reading to decide.
func (t *txn) plan(qid uint64, f *storepb.TagFilter, byPriority bool) (levels [][][]byte, indexOnly bool, err error) {
	sh := t.s.shard
	switch {
	case len(f.GetAll()) > 0:
		return [][][]byte{{keys.TagPrefix(sh, qid, f.All[0])}}, len(f.All) == 1 && len(f.Any) == 0 && len(f.None) == 0, nil
	case len(f.GetAny()) > 0:
		tags := slices.Clone(f.Any)
		slices.Sort(tags)
		var prefixes [][]byte
		for _, tag := range slices.Compact(tags) {
			prefixes = append(prefixes, keys.TagPrefix(sh, qid, tag))
		}
		return [][][]byte{prefixes}, len(f.None) == 0, nil
	}
	prefixes, err := t.levels(qid)
	if err != nil {
		return nil, false, err
	}
	if !byPriority {
		return [][][]byte{prefixes}, len(f.GetNone()) == 0, nil
	}
	for _, p := range prefixes {
		levels = append(levels, [][]byte{p})
	}
	return levels, len(f.GetNone()) == 0, nil
}

// matches applies a tag filter to a message's tags.
func matches(f *storepb.TagFilter, tags []string) bool {
	for _, tag := range f.GetAll() {
		if !slices.Contains(tags, tag) {
			return false
		}
	}
	if len(f.GetAny()) > 0 && !slices.ContainsFunc(f.Any, func(s string) bool { return slices.Contains(tags, s) }) {
		return false
	}
	return !slices.ContainsFunc(f.GetNone(), func(s string) bool { return slices.Contains(tags, s) })
}

// walk owns the index cursors of one scan and their low-water marks: the
// visibility, priority, tag and fair group indexes are walked from their
// marks (see vlow.go), past the tombstones of deleted messages; when the
// walk closes, inside Apply, each mark rises to the first live entry its
// iterator found (or past until when it found none).
type walk struct {
	t     *txn
	curs  []*cursor
	marks []*markedCursor
}

type markedCursor struct {
	mark  []byte
	first *position // nil: the iterator found nothing up to until
	until int64
}

// open positions a cursor on index prefix p at its first entry with
// visible_at <= until.
func (w *walk) open(p []byte, until int64) (*cursor, error) {
	t := w.t
	lo := p
	var mc *markedCursor
	if mk := keys.LowMarkOf(p); mk != nil {
		low, err := t.mark(mk)
		if err != nil {
			return nil, err
		}
		if low != lowest {
			lo = keys.AppendUint64(keys.AppendInt64(slices.Clone(p), low.at), low.seq)
		}
		mc = &markedCursor{mark: mk, until: until}
	}
	hi := keys.PrefixEnd(p)
	if until < math.MaxInt64 {
		hi = keys.AppendInt64(slices.Clone(p), until+1)
	}
	if bytes.Compare(lo, hi) > 0 {
		lo = hi // the mark is past until (a bounded peek): nothing to walk
	}
	it, err := t.iter(lo, hi)
	if err != nil {
		return nil, err
	}
	c := &cursor{it: it, prefix: p}
	w.curs = append(w.curs, c)
	if err := c.load(it.First()); err != nil {
		return nil, err
	}
	if mc != nil {
		if c.ok {
			mc.first = &position{c.cur.visibleAt, c.cur.seq}
		}
		w.marks = append(w.marks, mc)
	}
	return c, nil
}

// close closes the cursors and, inside Apply and without an error, raises
// the marks.
func (w *walk) close(err *error) {
	for _, c := range w.curs {
		closeInto(c.it, err)
	}
	if w.t.b == nil {
		return
	}
	for _, mc := range w.marks {
		if *err != nil {
			return
		}
		switch {
		case mc.first != nil:
			*err = w.t.raiseMark(mc.mark, *mc.first)
		case mc.until < math.MaxInt64:
			*err = w.t.raiseMark(mc.mark, position{mc.until + 1, 0})
		}
	}
}

// scan visits the messages matching f with visible_at <= until, until
// visit returns true: by priority (highest first, oldest first within one)
// when byPriority and f has no tags, else oldest first. With indexOnly set
// and a plan that needs no record, visit gets a nil record and no record is
// read. It reports whether the budget of non-matching entries ran out.
func (t *txn) scan(qid uint64, f *storepb.TagFilter, until int64, indexOnly, byPriority bool, budget int,
	visit func(candidate, *storepb.MessageRecord) bool) (exhausted bool, err error) {
	levels, planOnly, err := t.plan(qid, f, byPriority)
	if err != nil {
		return false, err
	}
	w := &walk{t: t}
	recs := &recordIter{t: t, qid: qid}
	defer func() {
		w.close(&err)
		recs.close(&err)
	}()
	for _, prefixes := range levels {
		curs := make([]*cursor, 0, len(prefixes))
		for _, p := range prefixes {
			c, err := w.open(p, until)
			if err != nil {
				return false, err
			}
			curs = append(curs, c)
		}
		stop, exhausted, err := t.merge(qid, f, curs, recs, indexOnly && planOnly, &budget, visit)
		if stop || exhausted || err != nil {
			return exhausted, err
		}
	}
	return false, nil
}

// merge visits the entries of curs in (visible_at, seq) order (see scan);
// stop: visit returned true.
func (t *txn) merge(qid uint64, f *storepb.TagFilter, curs []*cursor, recs *recordIter, noRecord bool, budget *int,
	visit func(candidate, *storepb.MessageRecord) bool) (stop, exhausted bool, err error) {
	// The cursors move past a candidate only when the walk goes on (not
	// before visit): the step past the last candidate visited would walk
	// the tombstones behind it for nothing. The iterators see the batch as
	// of their creation, so visit's writes do not change what they yield.
	var (
		prev    candidate
		advance bool
	)
	for {
		if advance {
			// Heads equal to the candidate are the same message reached
			// through another `any` tag and advance with it.
			for _, c := range curs {
				if c.ok && c.cur == prev {
					if err := c.load(c.it.Next()); err != nil {
						return false, false, err
					}
				}
			}
		}
		// Merge: the smallest head.
		var head *cursor
		for _, c := range curs {
			if c.ok && (head == nil || c.cur.less(head.cur)) {
				head = c
			}
		}
		if head == nil {
			return false, false, nil
		}
		cand := head.cur
		prev, advance = cand, true
		var m *storepb.MessageRecord
		if !noRecord {
			// The entry carries the lease state: only the record is read.
			if m, err = t.indexedRecord(qid, recs, cand, head.value); err != nil {
				return false, false, err
			}
			if !matches(f, m.Tags) {
				if *budget--; *budget <= 0 {
					return false, true, nil
				}
				continue
			}
		}
		if visit(cand, m) {
			return true, false, nil
		}
	}
}

// indexedRecord reads the record of an index entry at cand with value v
// and overlays the lease state the entry carries.
func (t *txn) indexedRecord(qid uint64, recs *recordIter, cand candidate, v []byte) (*storepb.MessageRecord, error) {
	m, err := recs.get(cand.seq)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("store: index entry without message: queue %d seq %d", qid, cand.seq)
	}
	leased, err := leaseFromIndex(m, cand.visibleAt, v)
	if err != nil {
		return nil, err
	}
	if leased && t.b != nil {
		t.markLeased(m)
	}
	return m, nil
}

// Peek tells a long poll whether a message matching f is visible at nowMs
// on this replica; if not, nextVisibleMs is the earliest future visible_at of
// a matching message (an in-flight lease ending or a delayed message coming
// due), 0 if there is none. It walks the same indexes as a receive and stops
// at the first match, so it reads O(1) keys for an unfiltered queue and for
// a single `all` or only-`any` filter. When a `none`-only filter passes over
// more than peekScanBudget non-matching entries it answers ready, leaving
// the exact answer to the receive. On a FIFO queue it walks the group heads
// instead: a group whose head is in flight is not ready however many
// messages wait behind it, and nextVisibleMs is when the first head's lease
// ends.
//
// untilMs (>= nowMs) bounds the walk: a message due later is not looked
// for, and when none is due by then but the queue holds messages,
// nextVisibleMs is untilMs+1 (look again then; 0 still means nothing can
// come due). The bound matters for cost, not for the answer's truth: every
// message received and deleted within the visibility timeout leaves a
// tombstone at its lease's end, ahead of now, and a walk to the first live
// future entry passes over all of them (about a visibility timeout's worth
// of consumed messages, on every peek); a long poll asks only up to when
// it would look again anyway. A FIFO queue's walk of its group heads (one
// key per group) is not bounded.
func (s *Store) Peek(tenant, name string, f *storepb.TagFilter, nowMs, untilMs int64) (ready bool, nextVisibleMs int64, err error) {
	t, done := s.snapshot(nowMs)
	defer done()
	q, err := t.queue(tenant, name)
	if err != nil {
		return false, 0, err
	}
	if q == nil {
		return false, 0, ErrQueueNotFound
	}
	if isFifo(q) {
		return t.peekGroups(q.Id, f, nowMs)
	}
	untilMs = max(untilMs, nowMs)
	exhausted, err := t.scan(q.Id, f, untilMs, true, false, peekScanBudget, func(c candidate, _ *storepb.MessageRecord) bool {
		if c.visibleAt <= nowMs {
			ready = true
		} else {
			nextVisibleMs = c.visibleAt
		}
		return true
	})
	if err != nil {
		return false, 0, err
	}
	if ready || exhausted {
		return true, 0, nil
	}
	if nextVisibleMs == 0 && untilMs < math.MaxInt64 {
		meta, err := t.queueMeta(q.Id)
		if err != nil {
			return false, 0, err
		}
		if meta.Messages > 0 || !meta.Counted {
			nextVisibleMs = untilMs + 1
		}
	}
	return false, nextVisibleMs, nil
}

package store

import (
	"errors"
	"math"
	"sort"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumq/quorumq/internal/keys"
)

// The visibility low-water mark. Deleting a received message leaves a
// tombstone at the head of the queue's visibility index; a busy queue piles
// up thousands there until compaction, and every receive would walk them.
// Each queue keeps a mark such that no live visibility entry sorts before
// it; receives and peeks start there.
//
// Invariant: every live 'v' entry (visible_at, seq) >= mark. It holds
// because (1) writing an entry below the mark lowers the mark (index), and
// (2) an unfiltered scan from the mark raises it only to the first live
// entry it saw, or, when it saw none up to `until`, to (until+1, 0): all
// entries before that point were just read as dead, and time never runs
// backwards, so later writes land at or after t.now (and lower the mark if
// not).

type position struct {
	at  int64
	seq uint64
}

func (p position) less(o position) bool {
	return p.at < o.at || (p.at == o.at && p.seq < o.seq)
}

var lowest = position{at: math.MinInt64}

// visibleLow returns queue qid's mark, cached for the command.
func (t *txn) visibleLow(qid uint64) (position, error) {
	if p, ok := t.vlow[qid]; ok {
		return p, nil
	}
	t.s.keysRead.Add(1)
	v, closer, err := t.r.Get(keys.VisibleLow(t.s.shard, qid))
	p := lowest
	switch {
	case err == nil:
		at, rest, derr := keys.ReadInt64(v)
		seq, rest2, derr2 := keys.ReadUint64(rest)
		if derr == nil && derr2 == nil && len(rest2) == 0 {
			p = position{at, seq}
		}
		_ = closer.Close()
	case !isNotFound(err):
		return lowest, err
	}
	if t.vlow == nil {
		t.vlow = map[uint64]position{}
	}
	t.vlow[qid] = p
	return p, nil
}

func (t *txn) setVisibleLow(qid uint64, p position) {
	if t.vlow == nil {
		t.vlow = map[uint64]position{}
	}
	if t.vlowDirty == nil {
		t.vlowDirty = map[uint64]bool{}
	}
	t.vlow[qid] = p
	t.vlowDirty[qid] = true
}

// lowerVisibleLow keeps the invariant when an entry is written at p.
func (t *txn) lowerVisibleLow(qid uint64, p position) error {
	if t.b == nil {
		return nil
	}
	low, err := t.visibleLow(qid)
	if err != nil {
		return err
	}
	if p.less(low) {
		t.setVisibleLow(qid, p)
	}
	return nil
}

// forgetVisibleLow drops a queue's mark (purge, delete: its entries are gone).
func (t *txn) forgetVisibleLow(qid uint64) {
	delete(t.vlow, qid)
	delete(t.vlowDirty, qid)
}

// flushVisibleLows writes the marks the command changed, in queue order.
func (t *txn) flushVisibleLows() error {
	qids := make([]uint64, 0, len(t.vlowDirty))
	for q := range t.vlowDirty {
		qids = append(qids, q)
	}
	sort.Slice(qids, func(i, j int) bool { return qids[i] < qids[j] })
	for _, q := range qids {
		p := t.vlow[q]
		if err := t.setRaw(keys.VisibleLow(t.s.shard, q), keys.AppendUint64(keys.AppendInt64(nil, p.at), p.seq)); err != nil {
			return err
		}
	}
	return nil
}

func isNotFound(err error) bool { return errors.Is(err, pebble.ErrNotFound) }

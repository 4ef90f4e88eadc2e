package store

import (
	"bytes"
	"errors"
	"math"
	"sort"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumq/quorumq/internal/keys"
)

// Low-water marks. Deleting a received message leaves tombstones at the head
// of the queue's visibility index and of its tags' indexes; a busy queue piles
// up thousands there until compaction, and every receive would walk them.
// Each of these indexes keeps a mark (keys.VisibleLow, keys.TagLow) such that
// no live entry sorts before it; scans start there.
//
// Invariant: every live entry (visible_at, seq) of an index >= its mark. It
// holds because (1) writing an entry below the mark lowers the mark (index),
// and (2) a scan raises the mark only to the first live entry its iterator
// found from the old mark, or, when it found none up to `until`, to
// (until+1, 0): everything before that point was just read as dead, and time
// never runs backwards, so later writes land at or after t.now (and lower the
// mark if not). Marks are replicated state like the rest (written in the
// apply batch), so every replica scans from the same place.

type position struct {
	at  int64
	seq uint64
}

func (p position) less(o position) bool {
	return p.at < o.at || (p.at == o.at && p.seq < o.seq)
}

var lowest = position{at: math.MinInt64}

// mark returns the mark stored under markKey, cached for the command.
func (t *txn) mark(markKey []byte) (position, error) {
	if p, ok := t.marks[string(markKey)]; ok {
		return p, nil
	}
	t.s.keysRead.Add(1)
	v, closer, err := t.r.Get(markKey)
	p := lowest
	switch {
	case err == nil:
		at, rest, derr := keys.ReadInt64(v)
		seq, rest2, derr2 := keys.ReadUint64(rest)
		if derr == nil && derr2 == nil && len(rest2) == 0 {
			p = position{at, seq}
		}
		_ = closer.Close()
	case !errors.Is(err, pebble.ErrNotFound):
		return lowest, err
	}
	if t.marks == nil {
		t.marks = map[string]position{}
	}
	t.marks[string(markKey)] = p
	return p, nil
}

func (t *txn) setMark(markKey []byte, p position) {
	if t.marks == nil {
		t.marks = map[string]position{}
	}
	if t.marksDirty == nil {
		t.marksDirty = map[string]bool{}
	}
	t.marks[string(markKey)] = p
	t.marksDirty[string(markKey)] = true
}

// lowerMark keeps the invariant when an entry is written at p.
func (t *txn) lowerMark(markKey []byte, p position) error {
	if t.b == nil {
		return nil
	}
	low, err := t.mark(markKey)
	if err != nil {
		return err
	}
	if p.less(low) {
		t.setMark(markKey, p)
	}
	return nil
}

// raiseMark moves a mark up to p after a scan proved nothing live below p.
func (t *txn) raiseMark(markKey []byte, p position) error {
	low, err := t.mark(markKey)
	if err != nil {
		return err
	}
	if low.less(p) {
		t.setMark(markKey, p)
	}
	return nil
}

// forgetMarks drops the cached marks of a queue whose indexes are gone
// (purge, delete); the caller deletes the stored ones.
func (t *txn) forgetMarks(qid uint64) {
	prefix := keys.QueuePrefix(t.s.shard, qid)
	for k := range t.marks {
		if bytes.HasPrefix([]byte(k), prefix) {
			delete(t.marks, k)
			delete(t.marksDirty, k)
		}
	}
}

// flushMarks writes the marks the command changed, in key order.
func (t *txn) flushMarks() error {
	ks := make([]string, 0, len(t.marksDirty))
	for k := range t.marksDirty {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	for _, k := range ks {
		p := t.marks[k]
		if err := t.setRaw([]byte(k), keys.AppendUint64(keys.AppendInt64(nil, p.at), p.seq)); err != nil {
			return err
		}
	}
	return nil
}

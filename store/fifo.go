package store

import (
	"bytes"
	"fmt"
	"math"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// FIFO queues keep two more indexes beside 'v' and 't' (see DESIGN.md):
//
//	'g' group seq          every message of a group, in seq order
//	'h' visible_at seq     one entry per non-empty group, at its head's
//	                       (visible_at, seq); the value is the group id
//
// The head of a group is its lowest-seq message. While the head is in flight
// (or delayed) its 'h' entry sits in the future, so the group is skipped by
// a receive without reading anything of it; the ready part of 'h' (up to
// now) lists exactly the groups that can deliver, oldest head first.
//
// A message is its group's head exactly when the 'h' key at its own
// (visible_at, seq) exists, so every path that changes a message checks that
// one key: insert (the first message of an empty group becomes the head),
// reschedule (a head's entry moves with its visible_at), remove (the next
// message of the group becomes the head).

func isFifo(q *storepb.QueueRecord) bool { return q.GetAttributes().GetFifo() }

// groupFirst returns the seq of the first message of a group; ok is false
// for an empty group.
func (t *txn) groupFirst(qid uint64, group string) (seq uint64, ok bool, err error) {
	p := keys.GroupPrefix(t.s.shard, qid, group)
	it, err := t.iter(p, keys.PrefixEnd(p))
	if err != nil {
		return 0, false, err
	}
	defer closeInto(it, &err)
	if !it.First() {
		return 0, false, nil
	}
	_, _, _, seq, err = keys.DecodeGroup(it.Key())
	if err != nil {
		return 0, false, fmt.Errorf("store: bad group key %s: %w", keys.Pretty(it.Key()), err)
	}
	return seq, true, nil
}

// headGroup writes m's group head entry at m's current visible_at.
func (t *txn) headGroup(qid uint64, m *storepb.MessageRecord) error {
	return t.setRaw(keys.GroupHead(t.s.shard, qid, m.VisibleAtMs, m.Seq), []byte(m.GroupId))
}

// unheadGroup deletes m's group head entry if m heads its group, and reports
// whether it did.
func (t *txn) unheadGroup(qid uint64, m *storepb.MessageRecord) (bool, error) {
	k := keys.GroupHead(t.s.shard, qid, m.VisibleAtMs, m.Seq)
	head, err := t.get(k, nil)
	if !head || err != nil {
		return false, err
	}
	once, err := t.setOnce(qid, m.Seq)
	if err != nil {
		return false, err
	}
	return true, t.delOnce(k, once)
}

// groupAppend adds a new message (the largest seq of its queue) to its
// group; the first message of an empty group becomes its head.
func (t *txn) groupAppend(qid uint64, m *storepb.MessageRecord) error {
	_, nonEmpty, err := t.groupFirst(qid, m.GroupId)
	if err != nil {
		return err
	}
	if err := t.setRaw(keys.Group(t.s.shard, qid, m.GroupId, m.Seq), nil); err != nil {
		return err
	}
	if nonEmpty {
		return nil
	}
	return t.headGroup(qid, m)
}

// groupRemove takes a removed message out of its group; when it was the
// head, the next message (if any) becomes the head, at its own visible_at.
// This is what unblocks a group whose head is deleted, expires or is
// dead-lettered.
func (t *txn) groupRemove(qid uint64, m *storepb.MessageRecord) error {
	once, err := t.setOnce(qid, m.Seq)
	if err != nil {
		return err
	}
	if err := t.delOnce(keys.Group(t.s.shard, qid, m.GroupId, m.Seq), once); err != nil {
		return err
	}
	head, err := t.unheadGroup(qid, m)
	if !head || err != nil {
		return err
	}
	seq, ok, err := t.groupFirst(qid, m.GroupId)
	if !ok || err != nil {
		return err
	}
	next, err := t.message(qid, seq)
	if err != nil {
		return err
	}
	if next == nil {
		return fmt.Errorf("store: group entry without message: queue %d seq %d", qid, seq)
	}
	if next.VisibleAtMs <= t.now {
		t.unblocked = true
	}
	return t.headGroup(qid, next)
}

// scanGroups visits, for a FIFO queue, the deliverable messages in delivery
// order: groups by their head's (visible_at, seq) among heads visible at
// until, and within a group its messages in seq order from the head while
// they are visible at until and match f. The first message that is not
// visible (in flight or delayed) or does not match ends its group for this
// scan: nothing behind it may be delivered before it. visit returns true to
// stop. Only a non-matching head costs budget (every other visited message
// is delivered or dead-lettered); exhausted reports that it ran out.
func (t *txn) scanGroups(qid uint64, f *storepb.TagFilter, until int64, budget int,
	visit func(*storepb.MessageRecord) bool) (exhausted bool, err error) {
	sh := t.s.shard
	hp := keys.GroupHeadPrefix(sh, qid)
	heads, err := t.iter(hp, untilKey(hp, until))
	if err != nil {
		return false, err
	}
	defer closeInto(heads, &err)
	gp := keys.GroupsPrefix(sh, qid)
	members, err := t.iter(gp, keys.PrefixEnd(gp))
	if err != nil {
		return false, err
	}
	defer closeInto(members, &err)
	recs := &recordIter{t: t, qid: qid}
	defer recs.close(&err)
	for ok := heads.First(); ok; ok = heads.Next() {
		_, _, _, headSeq, err := keys.DecodeGroupHead(heads.Key())
		if err != nil {
			return false, fmt.Errorf("store: bad group head key %s: %w", keys.Pretty(heads.Key()), err)
		}
		v, err := heads.Value()
		if err != nil {
			return false, err
		}
		group := string(v)
		prefix := keys.GroupPrefix(sh, qid, group)
		first := true
		for ok := members.SeekGE(keys.Group(sh, qid, group, headSeq)); ok && bytes.HasPrefix(members.Key(), prefix); ok = members.Next() {
			_, _, _, seq, err := keys.DecodeGroup(members.Key())
			if err != nil {
				return false, fmt.Errorf("store: bad group key %s: %w", keys.Pretty(members.Key()), err)
			}
			m, err := recs.get(seq)
			if err != nil {
				return false, err
			}
			if m == nil {
				return false, fmt.Errorf("store: group entry without message: queue %d seq %d", qid, seq)
			}
			if err := t.loadLease(qid, m); err != nil {
				return false, err
			}
			if m.VisibleAtMs > until {
				break
			}
			if !matches(f, m.Tags) {
				if first {
					if budget--; budget <= 0 {
						return true, nil
					}
				}
				break
			}
			first = false
			if visit(m) {
				return false, nil
			}
		}
	}
	return false, nil
}

// peekGroups is Peek for a FIFO queue: it walks the group heads, the only
// messages a receive can start a group with. Without a filter the first
// head decides (O(1)); with one, heads that do not match are passed over
// (they block their groups for that filter), at most peekScanBudget of them.
func (t *txn) peekGroups(qid uint64, f *storepb.TagFilter, nowMs int64) (ready bool, nextVisibleMs int64, err error) {
	hp := keys.GroupHeadPrefix(t.s.shard, qid)
	it, err := t.iter(hp, keys.PrefixEnd(hp))
	if err != nil {
		return false, 0, err
	}
	defer closeInto(it, &err)
	filtered := len(f.GetAll())+len(f.GetAny())+len(f.GetNone()) > 0
	budget := peekScanBudget
	for ok := it.First(); ok; ok = it.Next() {
		_, _, at, seq, err := keys.DecodeGroupHead(it.Key())
		if err != nil {
			return false, 0, fmt.Errorf("store: bad group head key %s: %w", keys.Pretty(it.Key()), err)
		}
		if filtered {
			m, err := t.message(qid, seq)
			if err != nil {
				return false, 0, err
			}
			if m == nil {
				return false, 0, fmt.Errorf("store: group head without message: queue %d seq %d", qid, seq)
			}
			if !matches(f, m.Tags) {
				if budget--; budget <= 0 {
					return true, 0, nil
				}
				continue
			}
		}
		if at <= nowMs {
			return true, 0, nil
		}
		return false, at, nil
	}
	return false, 0, nil
}

// untilKey bounds the entries of a (visible_at, seq) index with visible_at
// <= until, without overflow at the end of time.
func untilKey(prefix []byte, until int64) []byte {
	if until == math.MaxInt64 {
		return keys.PrefixEnd(prefix)
	}
	return keys.AppendInt64(bytes.Clone(prefix), until+1)
}

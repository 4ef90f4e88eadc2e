package store

import (
	"fmt"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// MessageState is a stored message's place in its lifecycle at a time.
type MessageState int

// The states a browse can filter on (the API's MessageState numbers).
const (
	StateAny      MessageState = 0
	StateVisible  MessageState = 1 // visible_at <= now
	StateInFlight MessageState = 2 // received, lease not ended
	StateDelayed  MessageState = 3 // never received, not yet due
)

// StateOf derives m's state at nowMs.
func StateOf(m *storepb.MessageRecord, nowMs int64) MessageState {
	switch {
	case m.VisibleAtMs <= nowMs:
		return StateVisible
	case inFlight(m):
		return StateInFlight
	default:
		return StateDelayed
	}
}

// BrowseScanBudget bounds the message records one Browse reads, so a filter
// that matches nothing cannot walk a large backlog in one call: the walk
// stops there and hands back where to go on.
const BrowseScanBudget = 1_000

// BrowseFilter selects the messages a Browse returns.
type BrowseFilter struct {
	States []MessageState // empty: all
	Tags   *storepb.TagFilter
	// Attribute, when AttrKey is set: the message has AttrKey = AttrValue.
	AttrKey, AttrValue string
	// MinAgeMs: only messages sent at least this long before now.
	MinAgeMs int64
}

func (f *BrowseFilter) match(m *storepb.MessageRecord, nowMs int64) bool {
	if len(f.States) > 0 {
		st, ok := StateOf(m, nowMs), false
		for _, s := range f.States {
			ok = ok || s == st
		}
		if !ok {
			return false
		}
	}
	if f.Tags != nil && !matches(f.Tags, m.Tags) {
		return false
	}
	if f.AttrKey != "" {
		if v, ok := m.Attributes[f.AttrKey]; !ok || v != f.AttrValue {
			return false
		}
	}
	return f.MinAgeMs <= 0 || nowMs-m.SentAtMs >= f.MinAgeMs
}

// Browse returns up to limit messages of the queue matching f, in seq order
// from seq `from` (at least the queue's low_seq), read from one snapshot.
// It changes nothing. It reads at most budget records (BrowseScanBudget
// when budget <= 0); next is the seq to resume from, 0 when the walk
// reached the end of the queue. A page may be short, even empty, with next
// set. Returned records are owned by the caller.
func (s *Store) Browse(tenant, name string, f BrowseFilter, from uint64, limit, budget int, nowMs int64) (msgs []*storepb.MessageRecord, next uint64, err error) {
	if budget <= 0 {
		budget = BrowseScanBudget
	}
	t, done := s.snapshot(nowMs)
	defer done()
	q, err := t.queue(tenant, name)
	if err != nil {
		return nil, 0, err
	}
	if q == nil {
		return nil, 0, ErrQueueNotFound
	}
	meta, err := t.queueMeta(q.Id)
	if err != nil {
		return nil, 0, err
	}
	from = max(from, meta.LowSeq)
	p := keys.MessagePrefix(s.shard, q.Id)
	it, err := t.iter(keys.Message(s.shard, q.Id, from), keys.PrefixEnd(p))
	if err != nil {
		return nil, 0, err
	}
	defer closeInto(it, &err)
	read := 0
	for ok := it.First(); ok; ok = it.Next() {
		if len(msgs) == limit || read == budget {
			_, _, seq, err := keys.DecodeMessage(it.Key())
			if err != nil {
				return nil, 0, fmt.Errorf("store: %w", err)
			}
			return msgs, seq, nil
		}
		read++
		v, err := it.Value()
		if err != nil {
			return nil, 0, err
		}
		m, err := t.decodeMessage(q.Id, it.Key(), v)
		if err != nil {
			return nil, 0, err
		}
		if f.match(m, nowMs) {
			msgs = append(msgs, m)
		}
	}
	return msgs, 0, nil
}

// GetMessage returns the message of the queue with the given id, or nil
// when the queue does not hold it. A message still in the queue it was sent
// to is one point read (the id names its seq); a message that moved here
// (dead-lettered, redriven) is looked for by a walk of at most
// BrowseScanBudget records in seq order, so a very long dead-letter queue
// may answer nil for a message it holds further on.
func (s *Store) GetMessage(tenant, name, id string, nowMs int64) (_ *storepb.MessageRecord, err error) {
	ref, ok := ParseMessageID(id)
	if !ok {
		return nil, nil
	}
	shard, qid, seq := ref.Shard, ref.Queue, ref.Seq
	t, done := s.snapshot(nowMs)
	defer done()
	q, err := t.queue(tenant, name)
	if err != nil {
		return nil, err
	}
	if q == nil {
		return nil, ErrQueueNotFound
	}
	if shard == s.shard && qid == q.Id {
		m, err := t.message(q.Id, seq)
		if err != nil || m != nil && m.Id == id {
			return m, err
		}
	}
	var found *storepb.MessageRecord
	read := 0
	err = t.scanBySeq(q.Id, func(m *storepb.MessageRecord) bool {
		read++
		if m.Id == id {
			found = m
		}
		return found != nil || read >= BrowseScanBudget
	})
	return found, err
}

package store

import (
	"math/bits"
	"slices"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Priorities (see DESIGN.md, "Priorities"). A message has a priority 0-9
// (MessageRecord.priority, unset: DefaultPriority). Each priority has its
// own visibility index in (visible_at, seq) order: the default's is 'v', as
// every message was before priorities (so old data needs no migration), the
// others' are 'p' rank with rank = 9 - priority (so a walk of 'p' meets the
// highest priority first). The union of these indexes is the queue's
// visibility index: counters, Tick, Peek and stats walk every level in use
// (QueueOrder.levels), an unfiltered receive walks them highest first.
const (
	DefaultPriority = 4
	MaxPriority     = 9
	defaultRank     = MaxPriority - DefaultPriority

	// Priority modes and fairness (QueueAttributes.priority_mode, fairness).
	PriorityStrict   = 0
	PriorityWeighted = 1
	FairnessNone     = 0
	FairnessGroup    = 1

	// DefaultPriorityWeight is a weighted queue's ratio when none is set:
	// of every 11 messages delivered, one is the oldest of any priority.
	DefaultPriorityWeight = 10
	MaxPriorityWeight     = 1000
)

// PriorityOf returns m's priority (the default when unset).
func PriorityOf(m *storepb.MessageRecord) int32 {
	if m.Priority != nil {
		return *m.Priority
	}
	return DefaultPriority
}

func rankOf(m *storepb.MessageRecord) byte { return byte(MaxPriority - PriorityOf(m)) }

// levelPrefix is the visibility index prefix of rank r.
func (t *txn) levelPrefix(qid uint64, r byte) []byte {
	if r == defaultRank {
		return keys.VisiblePrefix(t.s.shard, qid)
	}
	return keys.PriorityPrefix(t.s.shard, qid, r)
}

// keyLevel is m's visibility entry key at (at, seq), in the key buffer.
func (t *txn) keyLevel(qid uint64, m *storepb.MessageRecord, at int64) []byte {
	if r := rankOf(m); r != defaultRank {
		t.kb = keys.AppendPriority(t.keyBuf(), t.s.shard, qid, r, at, m.Seq)
		return t.kb
	}
	return t.keyVisible(qid, at, m.Seq)
}

// levelMark is the low-water mark key of m's visibility index.
func (t *txn) levelMark(qid uint64, m *storepb.MessageRecord) []byte {
	if r := rankOf(m); r != defaultRank {
		return keys.PriorityLow(t.s.shard, qid, r)
	}
	return keys.VisibleLow(t.s.shard, qid)
}

// order returns queue qid's QueueOrder, loaded once per command (an empty
// one when the queue has none).
func (t *txn) order(qid uint64) (*storepb.QueueOrder, error) {
	if o, ok := t.orders[qid]; ok {
		return o, nil
	}
	o := &storepb.QueueOrder{}
	if _, err := t.get(keys.QueueOrder(t.s.shard, qid), o); err != nil {
		return nil, err
	}
	if t.orders == nil {
		t.orders = map[uint64]*storepb.QueueOrder{}
	}
	t.orders[qid] = o
	return o, nil
}

// putOrder writes qid's QueueOrder at the command's end.
func (t *txn) putOrder(qid uint64) {
	if t.ordersDirty == nil {
		t.ordersDirty = map[uint64]bool{}
	}
	t.ordersDirty[qid] = true
}

// useLevel records that rank r's index of qid may hold entries.
func (t *txn) useLevel(qid uint64, r byte) error {
	if r == defaultRank || t.b == nil {
		return nil
	}
	o, err := t.order(qid)
	if err != nil {
		return err
	}
	if o.Levels&(1<<r) == 0 {
		o.Levels |= 1 << r
		t.putOrder(qid)
	}
	return nil
}

// levels returns the visibility index prefixes of qid in use, highest
// priority first ('v' always).
func (t *txn) levels(qid uint64) ([][]byte, error) {
	o, err := t.order(qid)
	if err != nil {
		return nil, err
	}
	set := o.Levels | 1<<defaultRank
	out := make([][]byte, 0, bits.OnesCount32(set))
	for r := byte(0); r <= MaxPriority; r++ {
		if set&(1<<r) != 0 {
			out = append(out, t.levelPrefix(qid, r))
		}
	}
	return out, nil
}

// forgetOrder drops a purged or deleted queue's cached order and groups.
func (t *txn) forgetOrder(qid uint64) {
	delete(t.orders, qid)
	delete(t.ordersDirty, qid)
	for k := range t.groups {
		if k.qid == qid {
			delete(t.groups, k)
		}
	}
}

// flushOrders writes the orders and group states the command changed, in
// key order.
func (t *txn) flushOrders() error {
	ids := make([]uint64, 0, len(t.ordersDirty))
	for id := range t.ordersDirty {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if err := t.set(keys.QueueOrder(t.s.shard, id), t.orders[id]); err != nil {
			return err
		}
	}
	return t.flushGroups()
}

// weightedSlots returns how many of the next n deliveries of a weighted
// queue go to the oldest visible message of any priority: those whose turn
// number n satisfies n % (w+1) == w.
func weightedSlots(turn uint64, n int, w int32) int {
	if w <= 0 {
		w = DefaultPriorityWeight
	}
	period := uint64(w) + 1
	slots := 0
	// n is at most 100 (max_messages): a direct count is cheap and plain.
	for x := turn; x < turn+uint64(n); x++ {
		if x%period == uint64(w) {
			slots++
		}
	}
	return slots
}

// leasePriority packs m's priority into the lease record's flag byte (high
// nibble: priority + 1; 0: the default), so that a delete by receipt handle
// of a plain message finds its visibility entry without the record.
func leasePriority(m *storepb.MessageRecord) byte {
	if m.Priority == nil {
		return 0
	}
	return byte(*m.Priority+1) << 4
}

func priorityFromLease(flags byte) *int32 {
	if p := flags >> 4; p != 0 {
		v := int32(p - 1)
		return &v
	}
	return nil
}

// validPriority checks a send's priority.
func validPriority(p *int32, fifo bool) error {
	switch {
	case p == nil:
		return nil
	case *p < 0 || *p > MaxPriority:
		return fieldErr("priority", "must be between 0 and %d", MaxPriority)
	case fifo && *p != DefaultPriority:
		return fieldErr("priority", "not supported on FIFO queues (order is by group and sequence)")
	}
	return nil
}

// scanByPriority is a standard queue's receive walk: an unfiltered receive
// takes the highest priority first (oldest first within one); on a
// weighted queue the deliveries whose turn comes (weightedSlots) go first
// to the oldest visible messages of any priority. A filtered receive walks
// the tag indexes, oldest first whatever the priority.
func (t *txn) scanByPriority(q *storepb.QueueRecord, op *storepb.Receive, unfiltered bool, take func(*storepb.MessageRecord) bool) error {
	a := q.Attributes
	visit := func(_ candidate, m *storepb.MessageRecord) bool { return take(m) }
	if !unfiltered {
		_, err := t.scan(q.Id, op.Filter, t.now, false, false, receiveScanBudget, visit)
		return err
	}
	slots := 0
	if a.PriorityMode == PriorityWeighted {
		o, err := t.order(q.Id)
		if err != nil {
			return err
		}
		slots = weightedSlots(o.WeightedTurn, int(op.MaxMessages), a.PriorityWeight)
	}
	if slots == 0 {
		_, err := t.scan(q.Id, nil, t.now, false, true, receiveScanBudget, visit)
		return err
	}
	// The oldest first, then by priority past what the first walk took.
	taken := map[uint64]bool{}
	stopped, n := false, 0
	_, err := t.scan(q.Id, nil, t.now, false, false, receiveScanBudget, func(_ candidate, m *storepb.MessageRecord) bool {
		taken[m.Seq] = true
		n++
		stopped = take(m)
		return stopped || n >= slots
	})
	if err != nil || stopped {
		return err
	}
	_, err = t.scan(q.Id, nil, t.now, false, true, receiveScanBudget, func(_ candidate, m *storepb.MessageRecord) bool {
		return !taken[m.Seq] && take(m)
	})
	return err
}

package store

import (
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Max length (see DESIGN.md, "Max length"). A queue's max_length and
// max_bytes bound its stored messages (in flight and delayed ones too) per
// partition copy, each partition holding its share, rounded up. A send
// that would go past them is refused (ErrQueueFull), or with overflow
// drop_oldest makes room by removing the oldest messages (by seq, whatever
// their state): dead-lettered with reason OVERFLOW when the queue has a
// dead-letter queue, else dropped. Dead-letter moves and redrives into a
// queue are not refused (the message has nowhere else to go).

// maxOverflowDrops bounds the messages one command removes to make room:
// a send it cannot make room for within that is refused (ErrQueueFull).
const maxOverflowDrops = 1000

// limits returns q's bounds for this partition copy (0: none).
func limits(q *storepb.QueueRecord) (msgs, bytes int64) {
	a := q.Attributes
	n := int64(max(a.GetPartitions(), 1))
	share := func(v int64) int64 { return (v + n - 1) / n }
	return share(a.GetMaxLength()), share(a.GetMaxBytes())
}

// admit makes room in q for one more message of size bytes, and reports
// whether there is room (false: the send is refused with ErrQueueFull).
func (t *txn) admit(q *storepb.QueueRecord, meta *storepb.QueueMeta, size int64, res *Result) (bool, error) {
	maxMsgs, maxBytes := limits(q)
	full := func(msgs, bytes int64) bool {
		return maxMsgs > 0 && msgs+1 > maxMsgs || maxBytes > 0 && bytes+size > maxBytes
	}
	if !full(meta.Messages, meta.Bytes) {
		return true, nil
	}
	if q.Attributes.Overflow != storepb.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST || (maxBytes > 0 && size > maxBytes) {
		return false, nil
	}
	// Pick the oldest until the message fits, then remove them: the walk
	// reads one view.
	var out []*storepb.MessageRecord
	msgs, bytes := meta.Messages, meta.Bytes
	budget := maxOverflowDrops - t.overflowDrops
	err := t.scanBySeq(q.Id, func(m *storepb.MessageRecord) bool {
		if len(out) >= budget {
			return true
		}
		out = append(out, m)
		msgs, bytes = msgs-1, bytes-m.Size
		return !full(msgs, bytes)
	})
	if err != nil || full(msgs, bytes) {
		return false, err
	}
	t.overflowDrops += len(out)
	for _, m := range out {
		if q.Attributes.DeadLetterQueue != "" {
			err = t.deadLetter(q, meta, m, storepb.DeadLetterReason_DEAD_LETTER_REASON_OVERFLOW)
			res.OutboxAdded = true
			res.DeadLettered++
		} else {
			err = t.remove(q, meta, m)
			res.Dropped++
		}
		if err != nil {
			return false, err
		}
	}
	return true, nil
}

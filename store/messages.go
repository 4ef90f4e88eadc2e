package store

import (
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Flag byte of a visibility / tag index entry. With it, stats split the
// future part of the index into in flight and delayed without reading
// records.
const (
	flagNew      byte = 0 // never received: a future entry is delayed
	flagReceived byte = 1 // received at least once: a future entry is in flight
)

// maxDeadPerReceive bounds the dead-letter moves one receive makes, so an
// apply stays short however many exhausted messages sit at the head.
const maxDeadPerReceive = 100

// idempotencyPrefix namespaces idempotency keys in the dedup records (FIFO
// deduplication ids will use another prefix).
const idempotencyPrefix = "i:"

func flagOf(m *storepb.MessageRecord) []byte {
	if m.ReceiveCount > 0 {
		return []byte{flagReceived}
	}
	return []byte{flagNew}
}

// index writes m's visibility and tag entries at m.VisibleAtMs. The tag
// index is kept in step with the visibility index so that a filtered receive
// walks only messages carrying a wanted tag.
func (t *txn) index(qid uint64, m *storepb.MessageRecord) error {
	f := flagOf(m)
	if err := t.setRaw(keys.Visible(t.s.shard, qid, m.VisibleAtMs, m.Seq), f); err != nil {
		return err
	}
	for _, tag := range m.Tags {
		if err := t.setRaw(keys.Tag(t.s.shard, qid, tag, m.VisibleAtMs, m.Seq), f); err != nil {
			return err
		}
	}
	return nil
}

// unindex deletes what index wrote.
func (t *txn) unindex(qid uint64, m *storepb.MessageRecord) error {
	if err := t.del(keys.Visible(t.s.shard, qid, m.VisibleAtMs, m.Seq)); err != nil {
		return err
	}
	for _, tag := range m.Tags {
		if err := t.del(keys.Tag(t.s.shard, qid, tag, m.VisibleAtMs, m.Seq)); err != nil {
			return err
		}
	}
	return nil
}

// insert stores m as a new message of queue qid: next seq, record, indexes,
// counters. The caller writes meta.
func (t *txn) insert(qid uint64, meta *storepb.QueueMeta, m *storepb.MessageRecord) error {
	m.Seq = max(meta.NextSeq, 1)
	meta.NextSeq = m.Seq + 1
	meta.Messages++
	meta.Bytes += m.Size
	if err := t.set(keys.Message(t.s.shard, qid, m.Seq), m); err != nil {
		return err
	}
	return t.index(qid, m)
}

// remove deletes message m of queue qid. The caller writes meta.
func (t *txn) remove(qid uint64, meta *storepb.QueueMeta, m *storepb.MessageRecord) error {
	meta.Messages--
	meta.Bytes -= m.Size
	if err := t.del(keys.Message(t.s.shard, qid, m.Seq)); err != nil {
		return err
	}
	return t.unindex(qid, m)
}

// reschedule moves m to a new visible_at in both indexes and stores it.
func (t *txn) reschedule(qid uint64, m *storepb.MessageRecord, visibleAt int64, update func()) error {
	if err := t.unindex(qid, m); err != nil {
		return err
	}
	m.VisibleAtMs = visibleAt
	if update != nil {
		update()
	}
	if err := t.set(keys.Message(t.s.shard, qid, m.Seq), m); err != nil {
		return err
	}
	return t.index(qid, m)
}

func (t *txn) message(qid, seq uint64) (*storepb.MessageRecord, error) {
	m := &storepb.MessageRecord{}
	ok, err := t.get(keys.Message(t.s.shard, qid, seq), m)
	if !ok || err != nil {
		return nil, err
	}
	return m, nil
}

func (t *txn) send(op *storepb.Send, res *Result) error {
	q, err := t.lookup(op.Tenant, op.Queue, res)
	if q == nil || err != nil {
		return err
	}
	meta, err := t.queueMeta(q.Id)
	if err != nil {
		return err
	}
	res.Sent = make([]SendOutcome, len(op.Entries))
	for i, e := range op.Entries {
		visibleNow, err := t.sendOne(q, meta, e, &res.Sent[i])
		if err != nil {
			return err
		}
		res.Woken = res.Woken || visibleNow
	}
	return t.putQueueMeta(q.Id, meta)
}

// sendOne stores one entry and reports whether it is visible at once.
func (t *txn) sendOne(q *storepb.QueueRecord, meta *storepb.QueueMeta, e *storepb.SendEntry, out *SendOutcome) (visibleNow bool, err error) {
	a := q.Attributes
	var visibleAt int64
	switch {
	case e.DeliverAtMs > 0:
		if e.DeliverAtMs-t.now > a.MessageRetentionMs {
			out.Err = fieldErr("deliver_at", "more than the retention (%v) ahead", msDur(a.MessageRetentionMs))
			return false, nil
		}
		visibleAt = max(e.DeliverAtMs, t.now)
	case e.DelayMs == -1:
		visibleAt = t.now + a.DeliveryDelayMs
	case e.DelayMs < 0 || e.DelayMs > a.MessageRetentionMs:
		out.Err = fieldErr("delay", "must be between 0 and the retention (%v)", msDur(a.MessageRetentionMs))
		return false, nil
	default:
		visibleAt = t.now + e.DelayMs
	}
	tags := uniqueTags(e.Tags)
	size := int64(len(e.Body))
	for k, v := range e.Attributes {
		size += int64(len(k) + len(v))
	}
	for _, tag := range tags {
		size += int64(len(tag))
	}
	if size > a.MaxMessageSize {
		out.Err = ErrMessageTooLarge
		return false, nil
	}
	var dedupKey string
	if e.IdempotencyKey != "" {
		dedupKey = idempotencyPrefix + e.IdempotencyKey
		rec := &storepb.DedupRecord{}
		ok, err := t.get(keys.Dedup(t.s.shard, q.Id, dedupKey), rec)
		if err != nil {
			return false, err
		}
		if ok && rec.ExpiresAtMs > t.now {
			*out = SendOutcome{MessageID: rec.MessageId, Seq: rec.Seq, Duplicate: true}
			return false, nil
		}
		if ok { // expired, not yet ticked away: replace it
			if err := t.del(keys.DedupOrder(t.s.shard, q.Id, rec.ExpiresAtMs, dedupKey)); err != nil {
				return false, err
			}
		}
	}
	m := &storepb.MessageRecord{
		Body: e.Body, Attributes: e.Attributes, Tags: tags,
		SentAtMs: t.now, EnqueuedAtMs: t.now, VisibleAtMs: visibleAt,
		GroupId: e.GroupId, DeduplicationId: e.DeduplicationId, Size: size,
	}
	m.Id = messageID(t.now, t.s.shard, q.Id, max(meta.NextSeq, 1))
	if err := t.insert(q.Id, meta, m); err != nil {
		return false, err
	}
	*out = SendOutcome{MessageID: m.Id, Seq: m.Seq}
	if dedupKey != "" {
		exp := t.now + IdempotencyWindowMs
		rec := &storepb.DedupRecord{MessageId: m.Id, Seq: m.Seq, ExpiresAtMs: exp}
		if err := t.set(keys.Dedup(t.s.shard, q.Id, dedupKey), rec); err != nil {
			return false, err
		}
		if err := t.setRaw(keys.DedupOrder(t.s.shard, q.Id, exp, dedupKey), nil); err != nil {
			return false, err
		}
	}
	return visibleAt <= t.now, nil
}

// uniqueTags drops repeated tags, keeping first-seen order: a tag is indexed
// once per message.
func uniqueTags(tags []string) []string {
	out := make([]string, 0, len(tags))
	for i, tag := range tags {
		dup := false
		for _, prev := range tags[:i] {
			dup = dup || prev == tag
		}
		if !dup {
			out = append(out, tag)
		}
	}
	return out
}

func (t *txn) receive(op *storepb.Receive, res *Result) error {
	q, err := t.lookup(op.Tenant, op.Queue, res)
	if q == nil || err != nil {
		return err
	}
	a := q.Attributes
	vis := op.VisibilityTimeoutMs
	if vis == -1 {
		vis = a.VisibilityTimeoutMs
	}
	switch {
	case op.MaxMessages <= 0:
		res.Err = fieldErr("max_messages", "must be positive")
		return nil
	case vis < 0 || vis > MaxVisibilityTimeoutMs:
		res.Err = fieldErr("visibility_timeout", "must be between 0 and %v", msDur(MaxVisibilityTimeoutMs))
		return nil
	}
	// Collect first, write after: the scan reads a consistent view and the
	// writes never feed back into it.
	var lease, dead []*storepb.MessageRecord
	_, err = t.scan(q.Id, op.Filter, t.now, false, receiveScanBudget, func(_ candidate, m *storepb.MessageRecord) bool {
		if a.DeadLetterQueue != "" && m.ReceiveCount >= a.MaxReceiveCount {
			dead = append(dead, m)
			return len(dead) >= maxDeadPerReceive
		}
		lease = append(lease, m)
		return len(lease) >= int(op.MaxMessages)
	})
	if err != nil {
		return err
	}
	meta, err := t.queueMeta(q.Id)
	if err != nil {
		return err
	}
	for _, m := range dead {
		if err := t.toOutbox(q, meta, m, q.Tenant, a.DeadLetterQueue, false); err != nil {
			return err
		}
		res.OutboxAdded = true
	}
	for _, m := range lease {
		err := t.reschedule(q.Id, m, t.now+vis, func() {
			m.ReceiveCount++
			if m.FirstReceivedAtMs == 0 {
				m.FirstReceivedAtMs = t.now
			}
		})
		if err != nil {
			return err
		}
		h := Handle{Shard: t.s.shard, Queue: q.Id, Seq: m.Seq, ReceiveCount: m.ReceiveCount}
		res.Received = append(res.Received, Received{
			Message:       proto.Clone(m).(*storepb.MessageRecord),
			ReceiptHandle: EncodeHandle(h, q.HandleKey),
		})
	}
	res.Woken = vis == 0 && len(lease) > 0
	if len(dead) > 0 {
		return t.putQueueMeta(q.Id, meta)
	}
	return nil
}

// byHandle resolves a receipt handle to its message: nil message with a nil
// outcome means the message is gone.
func (t *txn) byHandle(q *storepb.QueueRecord, raw []byte) (m *storepb.MessageRecord, outcome, err error) {
	h, err := DecodeHandle(raw, q.HandleKey)
	if err != nil || h.Shard != t.s.shard || h.Queue != q.Id {
		return nil, ErrInvalidReceipt, nil
	}
	m, err = t.message(q.Id, h.Seq)
	if m == nil || err != nil {
		return nil, nil, err
	}
	if m.ReceiveCount != h.ReceiveCount {
		return nil, ErrStaleReceipt, nil
	}
	return m, nil, nil
}

func (t *txn) deleteMessages(op *storepb.Delete, res *Result) error {
	q, err := t.lookup(op.Tenant, op.Queue, res)
	if q == nil || err != nil {
		return err
	}
	meta, err := t.queueMeta(q.Id)
	if err != nil {
		return err
	}
	res.Entries = make([]error, len(op.ReceiptHandles))
	changed := false
	for i, raw := range op.ReceiptHandles {
		m, outcome, err := t.byHandle(q, raw)
		if err != nil {
			return err
		}
		// A message already gone is a success: deletes are idempotent.
		res.Entries[i] = outcome
		if m != nil {
			if err := t.remove(q.Id, meta, m); err != nil {
				return err
			}
			changed = true
		}
	}
	if changed {
		return t.putQueueMeta(q.Id, meta)
	}
	return nil
}

func (t *txn) changeVisibility(op *storepb.ChangeVisibility, res *Result) error {
	q, err := t.lookup(op.Tenant, op.Queue, res)
	if q == nil || err != nil {
		return err
	}
	res.Entries = make([]error, len(op.Changes))
	for i, c := range op.Changes {
		if c.VisibilityTimeoutMs < 0 || c.VisibilityTimeoutMs > MaxVisibilityTimeoutMs {
			res.Entries[i] = fieldErr("visibility_timeout", "must be between 0 and %v", msDur(MaxVisibilityTimeoutMs))
			continue
		}
		m, outcome, err := t.byHandle(q, c.ReceiptHandle)
		if err != nil {
			return err
		}
		if outcome == nil && m == nil {
			outcome = ErrMessageNotFound
		}
		if res.Entries[i] = outcome; outcome != nil {
			continue
		}
		if err := t.reschedule(q.Id, m, t.now+c.VisibilityTimeoutMs, nil); err != nil {
			return err
		}
		res.Woken = res.Woken || c.VisibilityTimeoutMs == 0
	}
	return nil
}

package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Flag byte of a visibility / tag index entry. With it, stats split the
// future part of the index into in flight and delayed without reading
// records.
const (
	flagNew      byte = 0 // never received: a future entry is delayed
	flagReceived byte = 1 // received, lease open: a future entry is in flight
	// flagWaiting: received, lease closed (nacked, backing off, or moved
	// here by a dead-letter move): a future entry counts as delayed.
	flagWaiting byte = 2
)

// inFlight reports whether m's lease is open (received, not nacked): its
// visibility entry, while in the future, counts as in flight.
func inFlight(m *storepb.MessageRecord) bool { return m.ReceiveCount > 0 && !m.LeaseClosed }

// entryFlag is the flag byte of m's index entries.
func entryFlag(m *storepb.MessageRecord) byte {
	switch {
	case inFlight(m):
		return flagReceived
	case m.ReceiveCount > 0:
		return flagWaiting
	}
	return flagNew
}

// maxDeadPerReceive bounds the dead-letter moves one receive makes, so an
// apply stays short however many exhausted messages sit at the head.
const maxDeadPerReceive = 100

// index writes m's visibility and tag entries at m.VisibleAtMs. The tag
// index is kept in step with the visibility index so that a filtered receive
// walks only messages carrying a wanted tag. An entry ahead of now counts as
// in flight or delayed until it comes due (see due.go).
func (t *txn) index(q *storepb.QueueRecord, m *storepb.MessageRecord) error {
	qid := q.Id
	if err := t.countEntry(q, m, 1); err != nil {
		return err
	}
	if err := t.useLevel(qid, rankOf(m)); err != nil {
		return err
	}
	at := position{m.VisibleAtMs, m.Seq}
	if err := t.lowerMark(t.levelMark(qid, m), at); err != nil {
		return err
	}
	for _, tag := range m.Tags {
		if err := t.lowerMark(keys.TagLow(t.s.shard, qid, tag), at); err != nil {
			return err
		}
	}
	fair := isFair(q)
	if fair {
		if err := t.lowerMark(fairMark(t.s.shard, qid, m.GroupId), at); err != nil {
			return err
		}
	}
	f := t.indexValue(m)
	if err := t.setRaw(t.keyLevel(qid, m, m.VisibleAtMs), f); err != nil {
		return err
	}
	for _, tag := range m.Tags {
		if err := t.setRaw(t.keyTag(qid, tag, m.VisibleAtMs, m.Seq), f); err != nil {
			return err
		}
	}
	if fair {
		return t.setRaw(t.keyFair(qid, m.GroupId, m.VisibleAtMs, m.Seq), f)
	}
	return nil
}

// unindex deletes what index wrote.
func (t *txn) unindex(q *storepb.QueueRecord, m *storepb.MessageRecord) error {
	qid := q.Id
	if err := t.countEntry(q, m, -1); err != nil {
		return err
	}
	once, err := t.setOnce(qid, m.Seq)
	if err != nil {
		return err
	}
	if err := t.delOnce(t.keyLevel(qid, m, m.VisibleAtMs), once); err != nil {
		return err
	}
	for _, tag := range m.Tags {
		if err := t.delOnce(t.keyTag(qid, tag, m.VisibleAtMs, m.Seq), once); err != nil {
			return err
		}
	}
	if isFair(q) {
		return t.delOnce(t.keyFair(qid, m.GroupId, m.VisibleAtMs, m.Seq), once)
	}
	return nil
}

// insert stores m as a new message of queue q: next seq, record, indexes,
// FIFO group order, counters. The caller writes meta.
func (t *txn) insert(q *storepb.QueueRecord, meta *storepb.QueueMeta, m *storepb.MessageRecord) error {
	m.Seq = max(meta.NextSeq, 1)
	meta.NextSeq = m.Seq + 1
	meta.Messages++
	meta.Bytes += m.Size
	if err := t.addUsage(q.Tenant, 0, m.Size); err != nil {
		return err
	}
	if err := t.set(keys.Message(t.s.shard, q.Id, m.Seq), m); err != nil {
		return err
	}
	if err := t.index(q, m); err != nil {
		return err
	}
	// Tick looks at the queue when this message's retention ends (an
	// earlier due time stays: the queue's head is older).
	if err := t.schedule(q, meta, m.EnqueuedAtMs+q.Attributes.GetMessageRetentionMs()); err != nil {
		return err
	}
	if err := t.indexExpiry(q, meta, m); err != nil {
		return err
	}
	if isFair(q) {
		if err := t.groupInserted(q.Id, m); err != nil {
			return err
		}
	}
	if isFifo(q) {
		return t.groupAppend(q.Id, m)
	}
	return nil
}

// remove deletes message m of queue q (and, on a FIFO queue, moves its
// group's head on). The caller writes meta.
func (t *txn) remove(q *storepb.QueueRecord, meta *storepb.QueueMeta, m *storepb.MessageRecord) error {
	meta.Messages--
	meta.Bytes -= m.Size
	if err := t.addUsage(q.Tenant, 0, -m.Size); err != nil {
		return err
	}
	once, err := t.setOnce(q.Id, m.Seq)
	if err != nil {
		return err
	}
	if err := t.delOnce(t.keyMessage(q.Id, m.Seq), once); err != nil {
		return err
	}
	if t.leased(m) {
		if err := t.delOnce(t.keyLease(q.Id, m.Seq), once); err != nil {
			return err
		}
	}
	if err := t.unindex(q, m); err != nil {
		return err
	}
	if m.ExpiresAtMs > 0 {
		if err := t.delOnce(keys.Expiry(t.s.shard, q.Id, m.ExpiresAtMs, m.Seq), once); err != nil {
			return err
		}
	}
	if isFair(q) {
		if err := t.groupRemoved(q.Id, m); err != nil {
			return err
		}
	}
	if m.Seq == meta.LowSeq {
		// The head went: low_seq moves to the next live message, so that
		// scans by seq (retention, NeedsTick, Depths, redrive) never walk
		// the tombstones of deleted messages. It moves once, when the
		// command writes the meta (flushMetas): a delete of n messages in
		// seq order seeks once, not n times. Until then it is a lower
		// bound, which is all that walks by seq need.
		if t.lowStale == nil {
			t.lowStale = map[uint64]bool{}
		}
		t.lowStale[q.Id] = true
		if err := t.putQueueMeta(q.Id, meta); err != nil {
			return err
		}
	}
	if isFifo(q) {
		return t.groupRemove(q.Id, m)
	}
	return nil
}

// raiseLowSeq moves meta.LowSeq past removed messages to the first live one
// (next_seq when the queue is empty).
func (t *txn) raiseLowSeq(qid uint64, meta *storepb.QueueMeta) (err error) {
	p := keys.MessagePrefix(t.s.shard, qid)
	it, err := t.iter(keys.Message(t.s.shard, qid, meta.LowSeq), keys.PrefixEnd(p))
	if err != nil {
		return err
	}
	defer closeInto(it, &err)
	low := meta.NextSeq
	if it.First() {
		_, _, seq, derr := keys.DecodeMessage(it.Key())
		if derr != nil {
			return fmt.Errorf("store: bad message key %s: %w", keys.Pretty(it.Key()), derr)
		}
		low = seq
	}
	meta.LowSeq = low
	return nil
}

// reschedule moves m to a new visible_at in its indexes (the group head
// index too when m heads its FIFO group) and stores its lease record: the
// message record is not rewritten.
func (t *txn) reschedule(q *storepb.QueueRecord, m *storepb.MessageRecord, visibleAt int64, update func()) error {
	head := false
	if isFifo(q) {
		var err error
		if head, err = t.unheadGroup(q.Id, m); err != nil {
			return err
		}
	}
	if err := t.unindex(q, m); err != nil {
		return err
	}
	m.VisibleAtMs = visibleAt
	if update != nil {
		update()
	}
	if err := t.putLease(q.Id, m); err != nil {
		return err
	}
	if err := t.index(q, m); err != nil {
		return err
	}
	if head {
		return t.headGroup(q.Id, m)
	}
	return nil
}

func (t *txn) send(op *storepb.Send, res *Result) (err error) {
	q, err := t.lookup(op.Tenant, op.Queue, res)
	if q == nil || err != nil {
		return err
	}
	meta, err := t.queueMeta(q.Id)
	if err != nil {
		return err
	}
	res.Sent = make([]SendOutcome, len(op.Entries))
	d := t.newDedupReader(q.Id)
	defer func() {
		if cerr := d.close(); err == nil {
			err = cerr
		}
	}()
	for i, e := range op.Entries {
		visibleNow, err := t.sendOne(q, meta, e, d, &res.Sent[i], res)
		if err != nil {
			return err
		}
		res.Woken = res.Woken || visibleNow
	}
	return t.putQueueMeta(q.Id, meta)
}

// sendOne stores one entry and reports whether it is visible at once.
func (t *txn) sendOne(q *storepb.QueueRecord, meta *storepb.QueueMeta, e *storepb.SendEntry, d *dedupReader, out *SendOutcome, res *Result) (visibleNow bool, err error) {
	a := q.Attributes
	var dedupID string
	if a.Fifo {
		switch {
		case e.GroupId == "":
			out.Err = fieldErr("group_id", "required on a FIFO queue")
			return false, nil
		case e.DelayMs != -1 || e.DeliverAtMs > 0:
			out.Err = fieldErr("delay", "per-message delay is not supported on FIFO queues; use the queue's delivery_delay")
			return false, nil
		}
		dedupID = e.DeduplicationId
		if dedupID == "" && a.ContentBasedDeduplication {
			sum := sha256.Sum256([]byte(e.Body))
			dedupID = hex.EncodeToString(sum[:])
		}
		if dedupID == "" {
			out.Err = fieldErr("deduplication_id", "required on a FIFO queue without content_based_deduplication")
			return false, nil
		}
	}
	// An idempotency key (any queue) or a deduplication id (FIFO) seen
	// within its window answers with the first message; nothing is stored.
	// This comes before the delay, size and quota checks: a retry of a
	// stored send must get the first outcome even when the tenant is at
	// its byte quota now (else the caller believes it was not stored).
	if e.IdempotencyKey != "" {
		rec := &storepb.DedupRecord{}
		live, err := d.recallIdem(e.IdempotencyKey, rec)
		if err != nil {
			return false, err
		}
		if live {
			*out = SendOutcome{MessageID: rec.MessageId, Seq: rec.Seq, Duplicate: true}
			return false, nil
		}
	}
	dedupKey := prefixed(deduplicationPrefix, dedupID)
	var dedupOld *storepb.DedupRecord // expired, not yet ticked away: replaced
	if dedupKey != "" {
		rec := &storepb.DedupRecord{}
		found, live, err := d.recall(dedupKey, rec)
		if err != nil {
			return false, err
		}
		if live {
			*out = SendOutcome{MessageID: rec.MessageId, Seq: rec.Seq, Duplicate: true}
			return false, nil
		}
		if found {
			dedupOld = rec
		}
	}
	if err := validPriority(e.Priority, a.Fifo); err != nil {
		out.Err = err
		return false, nil
	}
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
	if e.TtlMs < 0 || e.TtlMs >= a.MessageRetentionMs {
		out.Err = fieldErr("ttl", "must be less than the retention (%v)", msDur(a.MessageRetentionMs))
		return false, nil
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
	if ok, err := t.roomForBytes(q.Tenant, size); err != nil || !ok {
		out.Err = ErrQuotaExceeded
		return false, err
	}
	if ok, err := t.admit(q, meta, size, res); err != nil || !ok {
		out.Err = ErrQueueFull
		return false, err
	}
	m := &storepb.MessageRecord{
		Body: e.Body, Attributes: e.Attributes, Tags: tags,
		SentAtMs: t.now, EnqueuedAtMs: t.now, VisibleAtMs: visibleAt,
		GroupId: e.GroupId, DeduplicationId: dedupID, Size: size,
		ExpiresAtMs: t.expiresAt(q, e.TtlMs),
	}
	if e.Priority != nil && *e.Priority != DefaultPriority {
		// The default stays unset: such a record is byte for byte one
		// from before priorities.
		p := *e.Priority
		m.Priority = &p
	}
	m.Id = messageID(t.now, t.s.shard, q.Id, max(meta.NextSeq, 1))
	if err := t.insert(q, meta, m); err != nil {
		return false, err
	}
	*out = SendOutcome{MessageID: m.Id, Seq: m.Seq}
	if e.IdempotencyKey != "" {
		if err := d.rememberIdem(q, e.IdempotencyKey, m.Id, m.Seq); err != nil {
			return false, err
		}
	}
	if dedupKey != "" {
		rec := &storepb.DedupRecord{MessageId: m.Id, Seq: m.Seq, ExpiresAtMs: t.now + DeduplicationWindowMs}
		var old expiring
		if dedupOld != nil {
			old = dedupOld
		}
		if err := d.remember(q, dedupKey, rec, old); err != nil {
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
	old, replayed, err := t.replayAttempt(q, op.ReceiveAttemptId, res)
	if replayed || err != nil {
		return err
	}
	// Collect first, write after: the scan reads a consistent view and the
	// writes never feed back into it.
	var lease []*storepb.MessageRecord
	tr := &triage{t: t, q: q}
	var replyBytes int64
	take := func(m *storepb.MessageRecord) bool {
		if tr.sort(m) {
			return tr.full()
		}
		// Never lease what the reply cannot carry (a first message always).
		size := ReplySize(m)
		if op.MaxBytes > 0 && len(lease) > 0 && replyBytes+size > op.MaxBytes {
			return true
		}
		replyBytes += size
		lease = append(lease, m)
		return len(lease) >= int(op.MaxMessages)
	}
	unfiltered := len(op.Filter.GetAll())+len(op.Filter.GetAny())+len(op.Filter.GetNone()) == 0
	switch {
	case isFifo(q):
		_, err = t.scanGroups(q.Id, op.Filter, t.now, receiveScanBudget, take)
	case isFair(q) && unfiltered:
		err = t.scanFair(q.Id, take)
	default:
		err = t.scanByPriority(q, op, unfiltered, take)
	}
	if err != nil {
		return err
	}
	meta, err := t.queueMeta(q.Id)
	if err != nil {
		return err
	}
	if err := tr.apply(meta, res); err != nil {
		return err
	}
	if len(lease) > 0 && unfiltered && !isFifo(q) && !isFair(q) && a.PriorityMode == PriorityWeighted {
		o, err := t.order(q.Id)
		if err != nil {
			return err
		}
		o.WeightedTurn += uint64(len(lease))
		t.putOrder(q.Id)
	}
	for _, m := range lease {
		wasNew := m.ReceiveCount == 0
		err := t.reschedule(q, m, t.now+vis, func() {
			m.LeaseClosed = false
			m.ReceiveCount++
			if m.FirstReceivedAtMs == 0 {
				m.FirstReceivedAtMs = t.now
			}
		})
		if err != nil {
			return err
		}
		if isFair(q) {
			if err := t.groupLeased(q.Id, m, wasNew); err != nil {
				return err
			}
		}
		h := Handle{Shard: t.s.shard, Partition: uint16(q.Partition), Queue: q.Id, Seq: m.Seq, ReceiveCount: m.ReceiveCount}
		res.Received = append(res.Received, Received{
			Message:       m, // read by this command, written by none after
			ReceiptHandle: t.signer(q.HandleKey).encode(h),
		})
	}
	if op.ReceiveAttemptId != "" {
		if err := t.rememberAttempt(q, op.ReceiveAttemptId, res.Received, old); err != nil {
			return err
		}
	}
	res.Woken = vis == 0 && len(lease) > 0
	if tr.changed() {
		return t.putQueueMeta(q.Id, meta)
	}
	return nil
}

// ReplyOverhead bounds what a received message adds to a reply beyond its
// body, attributes, tags and names: receipt handle, times, counts, framing.
const ReplyOverhead = 512

// ReplySize bounds the bytes message m takes in a receive's reply; a
// Receive's max_bytes counts it.
func ReplySize(m *storepb.MessageRecord) int64 {
	return m.Size + int64(len(m.Id)+len(m.GroupId)+len(m.DeadLetterSource)) + ReplyOverhead
}

// byHandle resolves a receipt handle to its message: nil message with a nil
// outcome means the message is gone. The message may carry only what a
// delete or a visibility change needs (see leaseOnly).
func (t *txn) byHandle(q *storepb.QueueRecord, raw []byte) (m *storepb.MessageRecord, outcome, err error) {
	h, err := t.signer(q.HandleKey).decode(raw)
	if err != nil || h.Shard != t.s.shard || h.Queue != q.Id {
		return nil, ErrInvalidReceipt, nil
	}
	m, err = t.leaseOnly(q, h.Seq)
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
			if err := t.remove(q, meta, m); err != nil {
				return err
			}
			changed = true
		}
	}
	// Deleting a FIFO group's head can make its next message deliverable:
	// long polls waiting on the queue must hear of it.
	res.Woken = res.Woken || t.unblocked
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
		if err := t.reschedule(q, m, t.now+c.VisibilityTimeoutMs, nil); err != nil {
			return err
		}
		res.Woken = res.Woken || c.VisibilityTimeoutMs == 0
	}
	return nil
}

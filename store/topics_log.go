package store

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Segments: a partition log is cut into runs of offsets so that retention
// drops a whole run with one range delete and a timestamp seek reads one
// summary per run. A new segment starts when the head holds this many
// messages or bytes, or is older than a tenth of the retention (so expired
// messages do not wait behind a slowly filling head).
const (
	SegmentMaxMessages = 1000
	SegmentMaxBytes    = 1 << 20
)

// topicMessageIDBit marks a topic message id: partition ids and queue ids
// come from different counters, so the bit keeps their ids apart.
const topicMessageIDBit = 1 << 63

// partition returns the partition copy of (tenant, topic, p), or nil.
func (t *txn) partition(tenant, topic string, p int32) (*storepb.TopicPartitionRecord, error) {
	rec := &storepb.TopicPartitionRecord{}
	ok, err := t.get(keys.TopicPartition(t.s.shard, tenant, topic, p), rec)
	if !ok || err != nil {
		return nil, err
	}
	return rec, nil
}

// livePartition resolves a log command's partition copy: a missing copy,
// or one of another incarnation, is ErrTopicNotFound (the router makes the
// copy from the record of truth and retries).
func (t *txn) livePartition(tenant, topic string, p int32, incarnation int64, res *Result, tr *TopicResult) (*storepb.TopicPartitionRecord, error) {
	res.Tenant, tr.Name, tr.Partition = tenant, topic, p
	part, err := t.partition(tenant, topic, p)
	if err != nil {
		return nil, err
	}
	if part == nil || (incarnation != 0 && part.Topic.GetCreatedAtMs() != incarnation) {
		res.Err = ErrTopicNotFound
		return nil, nil
	}
	return part, nil
}

func (t *txn) putPartition(part *storepb.TopicPartitionRecord) error {
	return t.set(keys.TopicPartition(t.s.shard, part.Topic.Tenant, part.Topic.Name, part.Partition), part)
}

// putTopicPartition makes or updates a partition copy from its record of
// truth: an older incarnation is dropped first, a newer one refuses
// (ErrTopicExists), an older revision of the same incarnation changes
// nothing (fan-outs may arrive out of order).
func (t *txn) putTopicPartition(op *storepb.PutTopicPartition, res *Result, tr *TopicResult) error {
	rec := op.GetTopic()
	if rec == nil || op.Partition < 0 || op.Partition >= rec.Partitions {
		res.Err = fieldErr("partition", "outside the topic's partitions")
		return nil
	}
	res.Tenant, tr.Partition = rec.Tenant, op.Partition
	part, err := t.partition(rec.Tenant, rec.Name, op.Partition)
	if err != nil {
		return err
	}
	if part != nil {
		switch {
		case part.Topic.CreatedAtMs > rec.CreatedAtMs:
			res.Err = ErrTopicExists
			return nil
		case part.Topic.CreatedAtMs < rec.CreatedAtMs:
			if err := t.dropPartition(part); err != nil {
				return err
			}
			part = nil
		case part.Topic.Revision >= rec.Revision:
			tr.Topic = part.Topic
			return nil
		default:
			part.Topic = rec
			tr.Topic = rec
			return t.putPartition(part)
		}
	}
	tm, err := t.topicMeta()
	if err != nil {
		return err
	}
	tm.NextPartitionId = max(tm.NextPartitionId, 1)
	part = &storepb.TopicPartitionRecord{Topic: rec, Partition: op.Partition, Id: tm.NextPartitionId,
		Head: &storepb.TopicSegment{}}
	tm.NextPartitionId++
	if err := t.set(keys.TopicMeta(t.s.shard), tm); err != nil {
		return err
	}
	tr.Topic = rec
	return t.putPartition(part)
}

// dropPartition deletes a partition copy and its whole log: one range
// delete per key kind.
func (t *txn) dropPartition(part *storepb.TopicPartitionRecord) error {
	for _, r := range keys.TopicPartitionRanges(t.s.shard, part.Id) {
		if err := t.delRange(r[0], r[1]); err != nil {
			return err
		}
	}
	return t.del(keys.TopicPartition(t.s.shard, part.Topic.Tenant, part.Topic.Name, part.Partition))
}

func (t *txn) deleteTopicPartition(op *storepb.DeleteTopicPartition, res *Result, tr *TopicResult) error {
	res.Tenant, tr.Partition = op.Tenant, op.Partition
	part, err := t.partition(op.Tenant, op.Topic, op.Partition)
	if err != nil || part == nil {
		return err // already gone: deletes repeat
	}
	if op.Incarnation != 0 && part.Topic.CreatedAtMs > op.Incarnation {
		return nil // a newer topic of the name holds it
	}
	return t.dropPartition(part)
}

// publish appends entries to a partition log and writes, in the same
// batch, an outbox entry per matching subscription: the copies into the
// subscribed queues are exactly-once by the outbox's delivered markers.
func (t *txn) publish(op *storepb.Publish, res *Result, tr *TopicResult) error {
	part, err := t.livePartition(op.Tenant, op.Topic, op.Partition, op.Incarnation, res, tr)
	if part == nil || err != nil {
		return err
	}
	tr.Published = make([]PublishOutcome, len(op.Entries))
	for i, e := range op.Entries {
		if err := t.publishOne(part, e, &tr.Published[i], res); err != nil {
			return err
		}
		tr.Appended = tr.Appended || (tr.Published[i].Err == nil && !tr.Published[i].Duplicate)
	}
	if !tr.Appended {
		return nil
	}
	if err := t.set(keys.TopicSegment(t.s.shard, part.Id, part.Head.FirstOffset), part.Head); err != nil {
		return err
	}
	return t.putPartition(part)
}

func (t *txn) publishOne(part *storepb.TopicPartitionRecord, e *storepb.PublishEntry, out *PublishOutcome, res *Result) error {
	if e.IdempotencyKey != "" {
		d := &storepb.TopicDedupRecord{}
		found, err := t.get(keys.TopicDedup(t.s.shard, part.Id, e.IdempotencyKey), d)
		if err != nil {
			return err
		}
		if found && d.ExpiresAtMs > t.now {
			*out = PublishOutcome{MessageID: d.MessageId, Offset: d.Offset, Duplicate: true}
			return nil
		}
		if found { // expired, not trimmed yet: replaced below
			if err := t.del(keys.TopicDedupOrder(t.s.shard, part.Id, d.ExpiresAtMs, e.IdempotencyKey)); err != nil {
				return err
			}
		}
	}
	tags := uniqueTags(e.Tags)
	size := int64(len(e.Body))
	for k, v := range e.Attributes {
		size += int64(len(k) + len(v))
	}
	for _, tag := range tags {
		size += int64(len(tag))
	}
	if size > part.Topic.MaxMessageSize {
		out.Err = ErrMessageTooLarge
		return nil
	}
	if err := t.rollSegment(part, size); err != nil {
		return err
	}
	off := part.EndOffset
	m := &storepb.TopicMessageRecord{
		Id:     messageID(t.now, t.s.shard, part.Id|topicMessageIDBit, uint64(off)+1),
		Offset: off, Body: e.Body, Attributes: e.Attributes, Tags: tags,
		PartitionKey: e.PartitionKey, PublishedAtMs: t.now, Size: size,
	}
	if err := t.set(keys.TopicMessage(t.s.shard, part.Id, off), m); err != nil {
		return err
	}
	h := part.Head
	if h.EndOffset == h.FirstOffset {
		h.FirstMs = t.now
	}
	h.EndOffset, h.LastMs, h.Bytes = off+1, t.now, h.Bytes+size
	part.EndOffset, part.Messages, part.Bytes = off+1, part.Messages+1, part.Bytes+size
	*out = PublishOutcome{MessageID: m.Id, Offset: off}
	if e.IdempotencyKey != "" {
		exp := t.now + IdempotencyWindowMs
		d := &storepb.TopicDedupRecord{MessageId: m.Id, Offset: off, ExpiresAtMs: exp}
		if err := t.set(keys.TopicDedup(t.s.shard, part.Id, e.IdempotencyKey), d); err != nil {
			return err
		}
		if err := t.setRaw(keys.TopicDedupOrder(t.s.shard, part.Id, exp, e.IdempotencyKey), nil); err != nil {
			return err
		}
	}
	for _, sub := range part.Topic.Subscriptions {
		if !matches(sub.Filter, tags) {
			continue
		}
		// A FIFO queue orders by group: the partition key is the group
		// (keyless messages share the group "").
		copyMsg := &storepb.MessageRecord{Id: m.Id, Body: m.Body, Attributes: m.Attributes, Tags: tags,
			SentAtMs: t.now, GroupId: e.PartitionKey, Size: size}
		entry := &storepb.OutboxEntry{SourceShard: t.s.shard, TargetTenant: part.Topic.Tenant,
			TargetQueue: sub.Queue, Message: copyMsg}
		if err := t.putOutbox(entry); err != nil {
			return err
		}
		res.OutboxAdded = true
	}
	return nil
}

// rollSegment starts a new head segment before a message of size bytes
// when the head is full or old.
func (t *txn) rollSegment(part *storepb.TopicPartitionRecord, size int64) error {
	h := part.Head
	n := h.EndOffset - h.FirstOffset
	if n == 0 {
		return nil
	}
	old := t.now-h.FirstMs >= part.Topic.RetentionMs/10
	if n < SegmentMaxMessages && h.Bytes+size <= SegmentMaxBytes && !old {
		return nil
	}
	if err := t.set(keys.TopicSegment(t.s.shard, part.Id, h.FirstOffset), h); err != nil {
		return err
	}
	part.Head = &storepb.TopicSegment{FirstOffset: part.EndOffset, EndOffset: part.EndOffset}
	return nil
}

// seekTopicGroup places a group on a partition: earliest, latest, the
// first message at or after a time, or an offset in the retained range.
// With create_only an existing group keeps its offset.
func (t *txn) seekTopicGroup(op *storepb.SeekTopicGroup, res *Result, tr *TopicResult) error {
	sl, err := t.readGroup(op, res, tr)
	if sl == nil || err != nil {
		return err
	}
	part, key, g := sl.part, sl.key, sl.rec
	if sl.found && op.CreateOnly {
		tr.GroupOffset = g.Offset
		return nil
	}
	var off int64
	switch op.Start {
	case GroupStartEarliest, 0:
		off = part.StartOffset
	case GroupStartLatest:
		off = part.EndOffset
	case GroupStartTime:
		if off, err = t.offsetAt(part, op.TimeMs); err != nil {
			return err
		}
	case GroupStartOffset:
		if op.Offset < part.StartOffset || op.Offset > part.EndOffset {
			res.Err = &OffsetRangeError{Offset: op.Offset, Start: part.StartOffset, End: part.EndOffset}
			return nil
		}
		off = op.Offset
	default:
		res.Err = fieldErr("start", "unknown start %d", op.Start)
		return nil
	}
	tr.GroupOffset = off
	g.Offset, g.UpdatedAtMs = off, t.now // a reset keeps the partition's owner
	return t.set(key, g)
}

// offsetAt is the offset of the first retained message published at or
// after atMs (the end offset if none): one segment summary per segment
// before it, then the messages of one segment.
func (t *txn) offsetAt(part *storepb.TopicPartitionRecord, atMs int64) (off int64, err error) {
	from := part.StartOffset
	p := keys.TopicSegmentPrefix(t.s.shard, part.Id)
	it, err := t.iter(keys.TopicSegment(t.s.shard, part.Id, part.StartOffset), keys.PrefixEnd(p))
	if err != nil {
		return 0, err
	}
	found := false
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.Value()
		if err != nil {
			closeInto(it, &err)
			return 0, err
		}
		seg := &storepb.TopicSegment{}
		if err := proto.Unmarshal(v, seg); err != nil {
			closeInto(it, &err)
			return 0, fmt.Errorf("store: decode %s: %w", keys.Pretty(it.Key()), err)
		}
		if seg.LastMs >= atMs {
			from, found = max(seg.FirstOffset, part.StartOffset), true
			break
		}
		from = seg.EndOffset
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	if !found && part.Head.EndOffset > part.Head.FirstOffset && part.Head.LastMs >= atMs {
		from = max(part.Head.FirstOffset, part.StartOffset)
	}
	off = part.EndOffset
	err = t.walkLog(part, from, func(m *storepb.TopicMessageRecord) bool {
		if m.PublishedAtMs >= atMs {
			off = m.Offset
			return true
		}
		return false
	})
	return off, err
}

// walkLog visits a partition's messages from offset `from` in offset order
// until visit returns true.
func (t *txn) walkLog(part *storepb.TopicPartitionRecord, from int64, visit func(*storepb.TopicMessageRecord) bool) (err error) {
	p := keys.TopicMessagePrefix(t.s.shard, part.Id)
	it, err := t.iter(keys.TopicMessage(t.s.shard, part.Id, max(from, part.StartOffset)), keys.PrefixEnd(p))
	if err != nil {
		return err
	}
	defer closeInto(it, &err)
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.Value()
		if err != nil {
			return err
		}
		m := &storepb.TopicMessageRecord{}
		if err := proto.Unmarshal(v, m); err != nil {
			return fmt.Errorf("store: decode %s: %w", keys.Pretty(it.Key()), err)
		}
		if visit(m) {
			return nil
		}
	}
	return nil
}

func (t *txn) commitTopicOffset(op *storepb.CommitTopicOffset, res *Result, tr *TopicResult) error {
	part, err := t.livePartition(op.Tenant, op.Topic, op.Partition, op.Incarnation, res, tr)
	if part == nil || err != nil {
		return err
	}
	key := keys.TopicGroup(t.s.shard, part.Id, op.Group)
	g := &storepb.TopicGroupRecord{}
	found, err := t.get(key, g)
	if err != nil {
		return err
	}
	switch {
	case !found:
		res.Err = ErrGroupNotFound
		return nil
	case op.Offset < 0 || op.Offset > part.EndOffset:
		res.Err = &OffsetRangeError{Offset: op.Offset, Start: part.StartOffset, End: part.EndOffset}
		return nil
	}
	if err := checkOwner(g, op.Member, op.Generation); err != nil {
		res.Err = err
		return nil
	}
	tr.GroupOffset = op.Offset
	g.Offset, g.UpdatedAtMs = op.Offset, t.now
	return t.set(key, g)
}

func (t *txn) deleteTopicGroup(op *storepb.DeleteTopicGroup, res *Result, tr *TopicResult) error {
	part, err := t.livePartition(op.Tenant, op.Topic, op.Partition, op.Incarnation, res, tr)
	if part == nil || err != nil {
		return err
	}
	return t.del(keys.TopicGroup(t.s.shard, part.Id, op.Group))
}

// TopicPartition returns a partition copy as this replica has it, or
// ErrTopicNotFound.
func (s *Store) TopicPartition(tenant, topic string, p int32) (*storepb.TopicPartitionRecord, error) {
	part, err := s.reader(0).partition(tenant, topic, p)
	if err != nil {
		return nil, err
	}
	if part == nil {
		return nil, ErrTopicNotFound
	}
	return part, nil
}

// TopicRead is the answer of ReadTopic.
type TopicRead struct {
	Messages []*storepb.TopicMessageRecord
	// Next is the offset after the last message returned (the start when
	// none was).
	Next int64
	// Start and End bound the retained log at the read.
	Start, End int64
}

// ReadTopic reads up to max messages (and about maxBytes) of a partition
// copy of the given incarnation from offset `from`, in offset order. An
// offset outside [start, end] is an *OffsetRangeError. It writes nothing.
func (s *Store) ReadTopic(tenant, topic string, p int32, incarnation, from int64, limit int, maxBytes int64) (*TopicRead, error) {
	t, done := s.snapshot(0)
	defer done()
	part, err := t.partition(tenant, topic, p)
	if err != nil {
		return nil, err
	}
	if part == nil || (incarnation != 0 && part.Topic.CreatedAtMs != incarnation) {
		return nil, ErrTopicNotFound
	}
	out := &TopicRead{Next: from, Start: part.StartOffset, End: part.EndOffset}
	if from < part.StartOffset || from > part.EndOffset {
		return nil, &OffsetRangeError{Offset: from, Start: part.StartOffset, End: part.EndOffset}
	}
	var bytes int64
	err = t.walkLog(part, from, func(m *storepb.TopicMessageRecord) bool {
		if m.Offset != out.Next { // cannot happen: offsets are consecutive
			return true
		}
		if len(out.Messages) > 0 && bytes+m.Size+ReplyOverhead > maxBytes {
			return true
		}
		bytes += m.Size + ReplyOverhead
		out.Messages = append(out.Messages, m)
		out.Next = m.Offset + 1
		return len(out.Messages) >= limit
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TopicGroupOffset returns a group's committed offset on a partition copy,
// or ErrGroupNotFound.
func (s *Store) TopicGroupOffset(tenant, topic string, p int32, group string) (int64, error) {
	t := s.reader(0)
	part, err := t.partition(tenant, topic, p)
	if err != nil {
		return 0, err
	}
	if part == nil {
		return 0, ErrTopicNotFound
	}
	g := &storepb.TopicGroupRecord{}
	found, err := t.get(keys.TopicGroup(s.shard, part.Id, group), g)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, ErrGroupNotFound
	}
	return g.Offset, nil
}

// TopicOfMessage returns the partition copy on this shard that published
// message id (topic message ids carry the copy's id with the topic bit),
// or nil: the relay unsubscribes a queue whose copies are refused.
func (s *Store) TopicOfMessage(id string) (*storepb.TopicPartitionRecord, error) {
	ref, ok := ParseMessageID(id)
	if !ok || ref.Shard != s.shard || ref.Queue&topicMessageIDBit == 0 {
		return nil, nil
	}
	parts, err := s.reader(0).allPartitions()
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		if p.Id == ref.Queue&^topicMessageIDBit {
			return p, nil
		}
	}
	return nil, nil
}

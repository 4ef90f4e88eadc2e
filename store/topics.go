package store

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Topics (see DESIGN.md, "Topics"). A topic's record of truth lives in the
// metadata shard's topic catalog (0x30 T name); each partition is a
// partition copy on a data shard (0x31 T name partition) holding a
// partition log: messages by offset, segments, consumer group offsets and
// idempotency records, all under the copy's shard-local id.

// Topic bounds and defaults.
const (
	MaxTopicPartitions      = 64
	MinTopicRetentionMs     = int64(time.Minute / time.Millisecond)
	MaxTopicRetentionMs     = int64(14 * 24 * time.Hour / time.Millisecond)
	DefaultTopicRetentionMs = int64(7 * 24 * time.Hour / time.Millisecond)
	MinTopicMessageSize     = 1 << 10
	// MaxTopicSubscriptions bounds a topic's subscriptions (a publish
	// writes one outbox entry per matching one).
	MaxTopicSubscriptions = 100
)

// Group start modes (SeekTopicGroup.start).
const (
	GroupStartEarliest = 1
	GroupStartLatest   = 2
	GroupStartTime     = 3
	GroupStartOffset   = 4
)

var (
	// ErrTopicNotFound: no topic of that name in the tenant, or no
	// partition copy of that incarnation on this shard (TOPIC_NOT_FOUND).
	ErrTopicNotFound = errors.New("topic not found")
	// ErrTopicExists: CreateTopic with other attributes than the existing
	// topic's, or a partition copy of a newer incarnation holds the
	// partition (TOPIC_ALREADY_EXISTS).
	ErrTopicExists = errors.New("topic already exists with different attributes")
	// ErrGroupNotFound: the consumer group has no offset on the partition
	// (GROUP_NOT_FOUND).
	ErrGroupNotFound = errors.New("consumer group not found")
	// ErrOffsetOutOfRange: the offset is outside the retained log; the
	// concrete error is an *OffsetRangeError (OFFSET_OUT_OF_RANGE).
	ErrOffsetOutOfRange = errors.New("offset out of range")
)

// OffsetRangeError names the retained range [Start, End) of a partition an
// offset fell outside of. errors.Is(err, ErrOffsetOutOfRange) holds.
type OffsetRangeError struct{ Offset, Start, End int64 }

func (e *OffsetRangeError) Error() string {
	return fmt.Sprintf("offset out of range: %d is outside the retained offsets [%d, %d] of the partition; reset the group", e.Offset, e.Start, e.End)
}

// Is makes errors.Is(err, ErrOffsetOutOfRange) true.
func (e *OffsetRangeError) Is(target error) bool { return target == ErrOffsetOutOfRange }

// TopicResult is the topic part of a command's Result.
type TopicResult struct {
	// Topic is the record of truth after CreateTopic / ChangeTopic (the
	// deleted one after a delete), or a partition copy's record.
	Topic *storepb.TopicRecord
	// Published has one outcome per PublishEntry, in order.
	Published []PublishOutcome
	// Appended: a publish added messages to the partition (wake readers).
	Appended bool
	// Name and Partition name the partition copy a log command touched.
	Name      string
	Partition int32
	// GroupOffset is a group's offset after SeekTopicGroup.
	GroupOffset int64
	// Trimmed counts segments and idempotency records TrimTopics dropped.
	Trimmed int
}

// PublishOutcome is the result of one PublishEntry.
type PublishOutcome struct {
	MessageID string
	Offset    int64
	// Duplicate: the idempotency key was seen within its window; this is
	// the first publish's outcome and nothing was stored.
	Duplicate bool
	Err       error
}

// applyTopic applies a topic op; handled is false for any other op.
func (t *txn) applyTopic(op any, res *Result) (handled bool, err error) {
	tr := &TopicResult{}
	switch o := op.(type) {
	case *storepb.Command_CreateTopic:
		err = t.createTopic(o.CreateTopic, res, tr)
	case *storepb.Command_ChangeTopic:
		err = t.changeTopic(o.ChangeTopic, res, tr)
	case *storepb.Command_PutTopicPartition:
		err = t.putTopicPartition(o.PutTopicPartition, res, tr)
	case *storepb.Command_DeleteTopicPartition:
		err = t.deleteTopicPartition(o.DeleteTopicPartition, res, tr)
	case *storepb.Command_Publish:
		err = t.publish(o.Publish, res, tr)
	case *storepb.Command_SeekTopicGroup:
		err = t.seekTopicGroup(o.SeekTopicGroup, res, tr)
	case *storepb.Command_CommitTopicOffset:
		err = t.commitTopicOffset(o.CommitTopicOffset, res, tr)
	case *storepb.Command_DeleteTopicGroup:
		err = t.deleteTopicGroup(o.DeleteTopicGroup, res, tr)
	case *storepb.Command_FenceTopicGroup:
		err = t.fenceTopicGroup(o.FenceTopicGroup, res, tr)
	case *storepb.Command_TrimTopics:
		err = t.trimTopics(o.TrimTopics, tr)
	default:
		return false, nil
	}
	res.Topic = tr
	return true, err
}

// ValidateTopicName checks a topic name: like a queue name, without the
// FIFO suffix.
func ValidateTopicName(field, name string) error {
	if strings.HasSuffix(name, fifoSuffix) {
		return fieldErr(field, "only A-Z a-z 0-9 _ - allowed")
	}
	return validateName(field, name)
}

// ValidateTopicSettings checks a topic's settings (defaults filled in).
func ValidateTopicSettings(r *storepb.TopicRecord) error {
	switch {
	case r.Partitions < 1 || r.Partitions > MaxTopicPartitions:
		return fieldErr("attributes.partitions", "must be 1 to %d", MaxTopicPartitions)
	case r.RetentionMs < MinTopicRetentionMs || r.RetentionMs > MaxTopicRetentionMs:
		return fieldErr("attributes.retention", "must be 60s to 14 days")
	case r.RetentionBytes < 0:
		return fieldErr("attributes.retention_bytes", "must not be negative")
	case r.MaxMessageSize < MinTopicMessageSize || r.MaxMessageSize > MaxMessageSize:
		return fieldErr("attributes.max_message_size", "must be 1 KiB to 1 MiB")
	}
	return nil
}

func sameTopicSettings(a, b *storepb.TopicRecord) bool {
	return a.Partitions == b.Partitions && a.RetentionMs == b.RetentionMs &&
		a.RetentionBytes == b.RetentionBytes && a.MaxMessageSize == b.MaxMessageSize
}

func (t *txn) topicMeta() (*storepb.TopicShardMeta, error) {
	m := &storepb.TopicShardMeta{}
	_, err := t.get(keys.TopicMeta(t.s.shard), m)
	return m, err
}

// createTopic stores a topic's record of truth; the same settings again
// return the existing topic.
func (t *txn) createTopic(op *storepb.CreateTopic, res *Result, tr *TopicResult) error {
	in := op.GetTopic()
	if in == nil {
		res.Err = fieldErr("topic", "missing")
		return nil
	}
	res.Tenant = in.Tenant
	if err := ValidateTopicName("name", in.Name); err != nil {
		res.Err = err
		return nil
	}
	if err := ValidateTopicSettings(in); err != nil {
		res.Err = err
		return nil
	}
	key := keys.Topic(t.s.shard, in.Tenant, in.Name)
	old := &storepb.TopicRecord{}
	found, err := t.get(key, old)
	if err != nil {
		return err
	}
	if found {
		tr.Topic = old
		if !sameTopicSettings(old, in) {
			res.Err = ErrTopicExists
		}
		return nil
	}
	tm, err := t.topicMeta()
	if err != nil {
		return err
	}
	rec := proto.Clone(in).(*storepb.TopicRecord)
	rec.CreatedAtMs = max(t.now, tm.LastCreatedMs+1)
	rec.Revision = 1
	rec.Subscriptions = nil
	if err := t.placeTopic(rec); err != nil {
		return err
	}
	tm.LastCreatedMs = rec.CreatedAtMs
	if err := t.set(keys.TopicMeta(t.s.shard), tm); err != nil {
		return err
	}
	tr.Topic = rec
	return t.set(key, rec)
}

// changeTopic changes a record of truth: settings, one subscription, or
// deletes it. Every change moves the revision on.
func (t *txn) changeTopic(op *storepb.ChangeTopic, res *Result, tr *TopicResult) error {
	res.Tenant = op.Tenant
	key := keys.Topic(t.s.shard, op.Tenant, op.Name)
	rec := &storepb.TopicRecord{}
	found, err := t.get(key, rec)
	if err != nil {
		return err
	}
	if !found {
		res.Err = ErrTopicNotFound
		return nil
	}
	tr.Topic = rec
	if op.Delete {
		return t.del(key)
	}
	if op.Unsubscribe != "" && op.UnsubscribeIfQueueMissing {
		q, err := t.queue(op.Tenant, op.Unsubscribe)
		if err != nil {
			return err
		}
		if q != nil {
			return nil // created again since its copy was refused: it stays subscribed
		}
	}
	if s := op.Settings; s != nil {
		next := proto.Clone(rec).(*storepb.TopicRecord)
		next.RetentionMs, next.RetentionBytes, next.MaxMessageSize = s.RetentionMs, s.RetentionBytes, s.MaxMessageSize
		if s.Partitions != 0 && s.Partitions != rec.Partitions {
			res.Err = fieldErr("attributes.partitions", "fixed at creation")
			return nil
		}
		if err := ValidateTopicSettings(next); err != nil {
			res.Err = err
			return nil
		}
		rec = next
	}
	if sub := op.Subscribe; sub != nil {
		if err := validateName("queue", sub.Queue); err != nil {
			res.Err = err
			return nil
		}
		i, found := slices.BinarySearchFunc(rec.Subscriptions, sub.Queue, func(s *storepb.TopicSubscription, q string) int {
			return strings.Compare(s.Queue, q)
		})
		switch {
		case found:
			rec.Subscriptions[i] = sub
		case len(rec.Subscriptions) >= MaxTopicSubscriptions:
			res.Err = fieldErr("queue", "the topic has %d subscriptions already", MaxTopicSubscriptions)
			return nil
		default:
			rec.Subscriptions = slices.Insert(rec.Subscriptions, i, sub)
		}
	}
	if q := op.Unsubscribe; q != "" {
		rec.Subscriptions = slices.DeleteFunc(rec.Subscriptions, func(s *storepb.TopicSubscription) bool { return s.Queue == q })
	}
	rec.Revision++
	tr.Topic = rec
	return t.set(key, rec)
}

// GetTopic returns a topic's record of truth, or ErrTopicNotFound.
func (s *Store) GetTopic(tenant, name string) (*storepb.TopicRecord, error) {
	rec := &storepb.TopicRecord{}
	found, err := s.reader(0).get(keys.Topic(s.shard, tenant, name), rec)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrTopicNotFound
	}
	return rec, nil
}

// ListTopics returns up to limit of the tenant's topics whose names start
// with prefix and sort after `after`, in name order.
func (s *Store) ListTopics(tenant, prefix, after string, limit int) (out []*storepb.TopicRecord, err error) {
	t, done := s.snapshot(0)
	defer done()
	p := keys.TopicTenantPrefix(s.shard, tenant)
	lo := keys.Topic(s.shard, tenant, prefix)
	if after != "" && after >= prefix {
		lo = append(keys.Topic(s.shard, tenant, after), 0)
	}
	it, err := t.iter(lo, keys.PrefixEnd(p))
	if err != nil {
		return nil, err
	}
	defer closeInto(it, &err)
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		v, err := it.Value()
		if err != nil {
			return nil, err
		}
		rec := &storepb.TopicRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return nil, fmt.Errorf("store: decode %s: %w", keys.Pretty(it.Key()), err)
		}
		if !strings.HasPrefix(rec.Name, prefix) {
			break
		}
		out = append(out, rec)
	}
	return out, nil
}

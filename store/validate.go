package store

import (
	"strconv"
	"strings"
	"time"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// MaxQueueTags bounds a queue's tags (after an UpdateQueue's tag edits).
const MaxQueueTags = 50

// Attribute ranges of DESIGN §3, in the units of storepb.QueueAttributes.
const (
	MaxVisibilityTimeoutMs = int64(12 * time.Hour / time.Millisecond)
	MinRetentionMs         = int64(60 * time.Second / time.Millisecond)
	MaxRetentionMs         = int64(14 * 24 * time.Hour / time.Millisecond)
	MaxDeliveryDelayMs     = int64(15 * time.Minute / time.Millisecond)
	MaxReceiveWaitMs       = int64(20 * time.Second / time.Millisecond)
	MinMessageSize         = 1 << 10
	MaxMessageSize         = 1 << 20
	MaxReceiveCountLimit   = 1000
	MaxPartitions          = 64
	MaxQueueNameLen        = 80

	// IdempotencyWindowMs is how long a send's idempotency key is remembered.
	IdempotencyWindowMs = int64(5 * time.Minute / time.Millisecond)
	// DeduplicationWindowMs is how long a FIFO queue remembers a
	// deduplication id (given, or derived from the body).
	DeduplicationWindowMs = int64(5 * time.Minute / time.Millisecond)
	// ReceiveAttemptWindowMs is how long a receive_attempt_id is remembered.
	ReceiveAttemptWindowMs = int64(5 * time.Minute / time.Millisecond)
	// DeliveredMarkerTTLMs is how long a delivered-outbox marker is kept: a
	// relay that redelivers an entry later than this would duplicate it.
	DeliveredMarkerTTLMs = int64(24 * time.Hour / time.Millisecond)

	fifoSuffix = ".fifo"
)

// DefaultAttributes returns the defaults of DESIGN §3: 30s visibility, 4 days
// retention, no delay, no long poll, 1 MiB messages, one partition.
func DefaultAttributes() *storepb.QueueAttributes {
	return &storepb.QueueAttributes{
		VisibilityTimeoutMs: 30_000,
		MessageRetentionMs:  int64(4 * 24 * time.Hour / time.Millisecond),
		DeliveryDelayMs:     0,
		ReceiveWaitMs:       0,
		MaxMessageSize:      MaxMessageSize,
		Partitions:          1,
	}
}

// ValidateQueueName checks ^[A-Za-z0-9_-]{1,80}$, or the same ending in
// ".fifo" with 80 characters in all. The error is a *FieldError on "name".
func ValidateQueueName(name string) error { return validateName("name", name) }

func validateName(field, name string) error {
	base := strings.TrimSuffix(name, fifoSuffix)
	switch {
	case len(name) > MaxQueueNameLen:
		return fieldErr(field, "longer than %d characters", MaxQueueNameLen)
	case base == "":
		return fieldErr(field, "empty")
	}
	for i := 0; i < len(base); i++ {
		c := base[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return fieldErr(field, "only A-Z a-z 0-9 _ - allowed (and a .fifo suffix)")
		}
	}
	return nil
}

// ValidateAttributes checks the ranges of DESIGN §3. The error is a
// *FieldError naming the public field ("attributes.visibility_timeout", …).
// It does not check that the dead-letter queue exists (apply does) nor the
// name/fifo agreement (ValidateQueue does).
func ValidateAttributes(a *storepb.QueueAttributes) error {
	if a == nil {
		return fieldErr("attributes", "missing")
	}
	ms := func(field string, v, lo, hi int64) error {
		if v < lo || v > hi {
			return fieldErr(field, "must be between %v and %v", msDur(lo), msDur(hi))
		}
		return nil
	}
	checks := []error{
		ms("attributes.visibility_timeout", a.VisibilityTimeoutMs, 0, MaxVisibilityTimeoutMs),
		ms("attributes.message_retention", a.MessageRetentionMs, MinRetentionMs, MaxRetentionMs),
		ms("attributes.delivery_delay", a.DeliveryDelayMs, 0, MaxDeliveryDelayMs),
		ms("attributes.receive_wait", a.ReceiveWaitMs, 0, MaxReceiveWaitMs),
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	if a.MaxMessageSize < MinMessageSize || a.MaxMessageSize > MaxMessageSize {
		return fieldErr("attributes.max_message_size", "must be between %d and %d bytes", MinMessageSize, MaxMessageSize)
	}
	if a.DeadLetterQueue == "" {
		if a.MaxReceiveCount != 0 {
			return fieldErr("attributes.dead_letter.max_receive_count", "set without a dead-letter queue")
		}
	} else {
		if err := validateName("attributes.dead_letter.queue", a.DeadLetterQueue); err != nil {
			return err
		}
		if a.MaxReceiveCount < 1 || a.MaxReceiveCount > MaxReceiveCountLimit {
			return fieldErr("attributes.dead_letter.max_receive_count", "must be between 1 and %d", MaxReceiveCountLimit)
		}
	}
	if a.ContentBasedDeduplication && !a.Fifo {
		return fieldErr("attributes.content_based_deduplication", "only for fifo queues")
	}
	if a.Partitions < 1 || a.Partitions > MaxPartitions {
		return fieldErr("attributes.partitions", "must be between 1 and %d", MaxPartitions)
	}
	switch {
	case a.PriorityMode != PriorityStrict && a.PriorityMode != PriorityWeighted:
		return fieldErr("attributes.priority_mode", "must be strict or weighted")
	case a.PriorityWeight < 0 || a.PriorityWeight > MaxPriorityWeight:
		return fieldErr("attributes.priority_weight", "must be between 1 and %d", MaxPriorityWeight)
	case a.Fairness != FairnessNone && a.Fairness != FairnessGroup:
		return fieldErr("attributes.fairness", "must be none or group")
	case a.Fairness == FairnessGroup && a.Fifo:
		return fieldErr("attributes.fairness", "only for standard queues (a FIFO queue already serves its groups in turn)")
	}
	return validateRetryAndLimits(a)
}

// Max length bounds.
const (
	MaxQueueLength = int64(1_000_000_000)
	MaxQueueBytes  = int64(1 << 40)
)

// validateRetryAndLimits checks the retry policy, the time to live and the
// max length attributes.
func validateRetryAndLimits(a *storepb.QueueAttributes) error {
	if p := a.RetryPolicy; p != nil {
		switch {
		case p.BaseMs < 1 || p.BaseMs > MaxRetryDelayMs:
			return fieldErr("attributes.retry_policy.base", "must be between 1ms and %v", msDur(MaxRetryDelayMs))
		case p.FactorMilli < MinRetryFactorMilli || p.FactorMilli > MaxRetryFactorMilli:
			return fieldErr("attributes.retry_policy.factor", "must be between 1 and 10")
		case p.MaxMs < p.BaseMs || p.MaxMs > MaxRetryDelayMs:
			return fieldErr("attributes.retry_policy.max", "must be between base and %v", msDur(MaxRetryDelayMs))
		case p.JitterMilli < 0 || p.JitterMilli > MaxRetryJitterMilli:
			return fieldErr("attributes.retry_policy.jitter", "must be between 0 and 1")
		}
	}
	if a.MessageTtlMs < 0 || a.MessageTtlMs >= a.MessageRetentionMs {
		return fieldErr("attributes.message_ttl", "must be less than the retention (%v)", msDur(a.MessageRetentionMs))
	}
	if a.MaxLength < 0 || a.MaxLength > MaxQueueLength {
		return fieldErr("attributes.max_length", "must be between 0 and %d", MaxQueueLength)
	}
	if a.MaxBytes < 0 || a.MaxBytes > MaxQueueBytes {
		return fieldErr("attributes.max_bytes", "must be between 0 and %d", MaxQueueBytes)
	}
	if _, ok := storepb.OverflowPolicy_name[int32(a.Overflow)]; !ok {
		return fieldErr("attributes.overflow", "unknown policy %d", a.Overflow)
	}
	return nil
}

// ValidateQueue checks name, attributes and that a queue is fifo exactly when
// its name ends in ".fifo".
func ValidateQueue(name string, a *storepb.QueueAttributes) error {
	if err := ValidateQueueName(name); err != nil {
		return err
	}
	if err := ValidateAttributes(a); err != nil {
		return err
	}
	if a.Fifo != strings.HasSuffix(name, fifoSuffix) {
		return fieldErr("attributes.fifo", "a queue is fifo exactly when its name ends in %q", fifoSuffix)
	}
	return nil
}

// msDur renders milliseconds for messages and tests.
func msDur(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }

// partitionSep separates a queue's name from its partition number in a
// shard's catalog. It is not a character of any queue name.
const partitionSep = "#"

// PartitionName is the catalog name of partition i of queue name: the name
// itself for partition 0 (so an unpartitioned queue is stored under its own
// name), name#i for the others.
func PartitionName(name string, i int) string {
	if i == 0 {
		return name
	}
	return name + partitionSep + strconv.Itoa(i)
}

// BaseName is the queue name of a partition's catalog name.
func BaseName(name string) string {
	if i := strings.Index(name, partitionSep); i >= 0 {
		return name[:i]
	}
	return name
}

// ValidatePartitionName accepts a queue name, or a queue name with a
// partition suffix as PartitionName makes it (name#1 … name#63).
func ValidatePartitionName(name string) error {
	base, num, ok := strings.Cut(name, partitionSep)
	if err := ValidateQueueName(base); err != nil || !ok {
		return err
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || n >= MaxPartitions || strconv.Itoa(n) != num {
		return fieldErr("name", "bad partition suffix %q", num)
	}
	return nil
}

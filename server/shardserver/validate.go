package shardserver

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
)

// Input bounds. Every field a client sends is bounded here or in store.
const (
	maxBodyBytes        = 1 << 20 // hard cap; the queue's max_message_size may be lower
	maxAttributes       = 16
	maxAttrKeyBytes     = 256
	maxAttrValueBytes   = 64 << 10 // all values of one message together
	maxTags             = 16
	maxTagBytes         = 128
	maxFilterTags       = 16
	maxIDBytes          = 128 // group id, deduplication id, idempotency key
	MaxBatchEntries     = 100
	MaxBatchBytes       = 4 << 20
	maxBatchIDChars     = 80
	MaxReceiveMessages  = 100
	MaxVisibility       = 12 * time.Hour
	MaxWaitTime         = 20 * time.Second
	maxDelay            = 14 * 24 * time.Hour // the store bounds it by the queue's retention
	maxHandleChars      = 1024
	maxQueueTags        = 50
	maxQueueTagKey      = 128
	maxQueueTagValue    = 256
	MaxPageSize         = 1000
	DefaultPageSize     = 100
	MaxRedriveMessages  = 10000
	DefaultRedriveBatch = 1000
)

var batchIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,80}$`)

// DurationMs converts an optional duration to milliseconds within [0, max].
// A nil duration gives def. Sub-millisecond parts are truncated: times are
// kept to the millisecond.
func DurationMs(field string, d *durationpb.Duration, def int64, max time.Duration) (int64, error) {
	if d == nil {
		return def, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, server.FieldError(field, "not a valid duration")
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, server.FieldError(field, "must not be negative")
	}
	if v > max {
		return 0, server.FieldError(field, fmt.Sprintf("must be at most %s", max))
	}
	return v.Milliseconds(), nil
}

func CheckText(field, s string, min, max int) error {
	if len(s) < min {
		if min == 1 {
			return server.FieldError(field, "must not be empty")
		}
		return server.FieldError(field, fmt.Sprintf("must be at least %d bytes", min))
	}
	if len(s) > max {
		return server.FieldError(field, fmt.Sprintf("must be at most %d bytes", max))
	}
	if !utf8.ValidString(s) {
		return server.FieldError(field, "must be valid UTF-8")
	}
	return nil
}

// MessageInput is the part of a send request shared by single and batch sends.
type MessageInput struct {
	Body           string
	Attributes     map[string]string
	Tags           []string
	delay          *durationpb.Duration
	deliverAt      *timestamppb.Timestamp
	GroupID        string
	dedupID        string
	IdempotencyKey string
	ttl            *durationpb.Duration
	priority       *int32 // unset: the default
}

// ValidateMessage checks a message's bounded fields; prefix names the
// request field ("" or "entries[3].").
func ValidateMessage(prefix string, m MessageInput) error {
	if len(m.Body) > maxBodyBytes {
		// MESSAGE_TOO_LARGE, as the API documents, still naming the field.
		return fmt.Errorf("%w: %w", store.ErrMessageTooLarge,
			server.FieldError(prefix+"body", fmt.Sprintf("must be at most %d bytes", maxBodyBytes)))
	}
	if err := CheckText(prefix+"body", m.Body, 1, maxBodyBytes); err != nil {
		return err
	}
	if len(m.Attributes) > maxAttributes {
		return server.FieldError(prefix+"attributes", fmt.Sprintf("at most %d attributes", maxAttributes))
	}
	values := 0
	for k, v := range m.Attributes {
		if k == "" || len(k) > maxAttrKeyBytes || !utf8.ValidString(k) {
			return server.FieldError(prefix+"attributes", fmt.Sprintf("keys must be 1 to %d bytes of UTF-8", maxAttrKeyBytes))
		}
		if !utf8.ValidString(v) {
			return server.FieldError(prefix+"attributes", "values must be valid UTF-8")
		}
		values += len(v)
	}
	if values > maxAttrValueBytes {
		return server.FieldError(prefix+"attributes", fmt.Sprintf("values must be at most %d bytes in all", maxAttrValueBytes))
	}
	if err := validateTags(prefix+"tags", m.Tags, maxTags); err != nil {
		return err
	}
	if m.delay != nil && m.deliverAt != nil {
		return server.FieldError(prefix+"delay", "give at most one of delay and deliver_at")
	}
	if m.ttl != nil {
		if ms, err := DurationMs(prefix+"ttl", m.ttl, 0, maxDelay); err != nil || ms <= 0 {
			if err == nil {
				err = server.FieldError(prefix+"ttl", "must be positive")
			}
			return err
		}
	}
	if p := m.priority; p != nil && (*p < 0 || *p > store.MaxPriority) {
		return server.FieldError(prefix+"priority", fmt.Sprintf("must be between 0 and %d", store.MaxPriority))
	}
	if _, err := DurationMs(prefix+"delay", m.delay, 0, maxDelay); err != nil {
		return err
	}
	if m.deliverAt != nil {
		if err := m.deliverAt.CheckValid(); err != nil {
			return server.FieldError(prefix+"deliver_at", "not a valid timestamp")
		}
	}
	if m.GroupID != "" {
		if err := CheckText(prefix+"group_id", m.GroupID, 1, maxIDBytes); err != nil {
			return err
		}
	}
	if m.dedupID != "" {
		if err := CheckText(prefix+"deduplication_id", m.dedupID, 1, maxIDBytes); err != nil {
			return err
		}
	}
	if m.IdempotencyKey != "" {
		if err := CheckText(prefix+"idempotency_key", m.IdempotencyKey, 1, maxIDBytes); err != nil {
			return err
		}
	}
	return nil
}

func validateTags(field string, tags []string, max int) error {
	if len(tags) > max {
		return server.FieldError(field, fmt.Sprintf("at most %d tags", max))
	}
	for _, t := range tags {
		if err := CheckText(field, t, 1, maxTagBytes); err != nil {
			return err
		}
	}
	return nil
}

func ValidateFilter(f *qv1.TagFilter) error {
	if f == nil {
		return nil
	}
	if err := validateTags("tag_filter.all", f.GetAll(), maxFilterTags); err != nil {
		return err
	}
	if err := validateTags("tag_filter.any", f.GetAny(), maxFilterTags); err != nil {
		return err
	}
	return validateTags("tag_filter.none", f.GetNone(), maxFilterTags)
}

// ValidateBatch checks a batch's size and entry ids; ids must be unique.
func ValidateBatch(n int, id func(i int) string) error {
	if n == 0 {
		return server.FieldError("entries", "must not be empty")
	}
	if n > MaxBatchEntries {
		return server.FieldError("entries", fmt.Sprintf("at most %d entries", MaxBatchEntries))
	}
	seen := make(map[string]struct{}, n)
	for i := 0; i < n; i++ {
		e := id(i)
		if !batchIDPattern.MatchString(e) {
			return server.FieldError(fmt.Sprintf("entries[%d].id", i), "must match ^[A-Za-z0-9_-]{1,80}$")
		}
		if _, dup := seen[e]; dup {
			return server.FieldError(fmt.Sprintf("entries[%d].id", i), "duplicate entry id")
		}
		seen[e] = struct{}{}
	}
	return nil
}

// decodeHandle turns the client's receipt handle string into store bytes.
// inEntry runs check with no prefix and, only if it fails, again with
// batch entry i's path ("entries[3].") so the error names the field: the
// checks are pure, and a batch of valid entries builds no field names (a
// Sprintf and concatenations per message on the send and delete paths).
func InEntry[T any](i int, check func(prefix string) (T, error)) (T, error) {
	v, err := check("")
	if err != nil {
		return check(fmt.Sprintf("entries[%d].", i))
	}
	return v, nil
}

func DecodeHandle(field, h string) ([]byte, error) {
	if h == "" {
		return nil, server.FieldError(field, "must not be empty")
	}
	if len(h) > maxHandleChars {
		return nil, server.FieldError(field, fmt.Sprintf("must be at most %d characters", maxHandleChars))
	}
	// One spelling per handle: strict decoding, and the decoder's tolerance
	// of line breaks is ruled out by re-encoding.
	b, err := base64.RawURLEncoding.Strict().DecodeString(h)
	if err != nil || len(b) == 0 || base64.RawURLEncoding.EncodeToString(b) != h {
		return nil, invalidHandle("receipt handle is not valid base64url")
	}
	return b, nil
}

// invalidHandle is a receipt handle that cannot be one of ours.
func invalidHandle(msg string) error {
	return fmt.Errorf("%s: %w", msg, store.ErrInvalidReceipt)
}

func encodeHandle(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func validateQueueTags(tags map[string]string) error {
	if len(tags) > maxQueueTags {
		return server.FieldError("tags", fmt.Sprintf("at most %d tags", maxQueueTags))
	}
	for k, v := range tags {
		if err := CheckText("tags", k, 1, maxQueueTagKey); err != nil {
			return err
		}
		if err := CheckText("tags", v, 0, maxQueueTagValue); err != nil {
			return err
		}
	}
	return nil
}

// validateTagEdits checks UpdateQueue's tag changes (the store bounds the
// resulting count).
func validateTagEdits(set map[string]string, remove []string) error {
	if err := validateQueueTags(set); err != nil {
		return err
	}
	if len(remove) > maxQueueTags {
		return server.FieldError("remove_tags", fmt.Sprintf("at most %d keys", maxQueueTags))
	}
	for _, k := range remove {
		if err := CheckText("remove_tags", k, 1, maxQueueTagKey); err != nil {
			return err
		}
	}
	return nil
}

package store

import (
	"errors"
	"fmt"
)

// Outcome sentinels. They come back inside a Result (whole-command Err, or
// per entry in Sent / Entries), never as Apply's error return: a replica that
// applies the same command gets the same outcome, so outcomes are state, not
// failures. server/ maps each one to a gRPC status and ErrorInfo reason.
var (
	// ErrQueueNotFound: no queue of that name in the tenant (QUEUE_NOT_FOUND).
	ErrQueueNotFound = errors.New("queue not found")
	// ErrQueueExists: CreateQueue named an existing queue with different
	// attributes or tags (QUEUE_ALREADY_EXISTS).
	ErrQueueExists = errors.New("queue already exists with different attributes")
	// ErrStaleReceipt: the handle is from an earlier receive of a message that
	// has been received again since (STALE_RECEIPT_HANDLE).
	ErrStaleReceipt = errors.New("stale receipt handle")
	// ErrInvalidReceipt: the handle does not decode, its MAC does not verify or
	// it belongs to another queue (INVALID_RECEIPT_HANDLE).
	ErrInvalidReceipt = errors.New("invalid receipt handle")
	// ErrMessageNotFound: ChangeVisibility on a message that is gone.
	ErrMessageNotFound = errors.New("message not found")
	// ErrMessageTooLarge: body + attributes + tags exceed the queue's
	// max_message_size (MESSAGE_TOO_LARGE).
	ErrMessageTooLarge = errors.New("message too large")
	// ErrInvalidArgument: an input out of range; the concrete error is a
	// *FieldError naming the field.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrDeadLetterInvalid: the dead-letter queue does not exist in the tenant,
	// is the queue itself, or differs in fifo-ness.
	ErrDeadLetterInvalid = errors.New("invalid dead-letter queue")
	// ErrOlderIncarnation: a partition copy's create names an older
	// incarnation (created_at of its record of truth) than the copy this
	// shard holds: a newer queue of that name replaced it, and the copy is
	// kept. errors.Is(err, ErrQueueExists) holds (QUEUE_ALREADY_EXISTS).
	ErrOlderIncarnation = fmt.Errorf("%w: a newer incarnation of the queue holds this partition", ErrQueueExists)
	// ErrQueueInUse: DeleteQueue of a queue that another queue uses as its
	// dead-letter queue.
	ErrQueueInUse = errors.New("queue is another queue's dead-letter queue")
	// ErrQueueFull: a send into a queue at its max_length or max_bytes
	// with overflow reject (QUEUE_FULL).
	ErrQueueFull = errors.New("queue full")
	// ErrQuotaExceeded: the tenant's queue count or stored bytes quota is
	// used up (QUOTA_EXCEEDED).
	ErrQuotaExceeded = errors.New("tenant quota exceeded")
	// ErrInvalidCommand: the command does not decode or has an unknown version
	// or op. The proposer built it wrongly; apply changes nothing.
	ErrInvalidCommand = errors.New("invalid command")
)

// FieldError is an invalid input naming the public API field, for example
// "attributes.visibility_timeout", "delay" or "group_id".
// errors.Is(err, ErrInvalidArgument) holds.
type FieldError struct {
	Field, Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("invalid argument: %s: %s", e.Field, e.Reason)
}

// Is makes errors.Is(fieldErr, ErrInvalidArgument) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidArgument }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

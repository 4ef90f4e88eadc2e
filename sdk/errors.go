package quorumq

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of quorumq errors.
const ErrorDomain = "quorumq.dev"

// Sentinels for errors.Is. Every error the server returns comes back as an
// *Error, which matches the sentinel of its reason (and, for the broad
// ones, of its gRPC code): errors.Is(err, quorumq.ErrQueueNotFound).
var (
	// ErrQueueNotFound: the queue does not exist for this tenant.
	ErrQueueNotFound = errors.New("quorumq: queue not found")
	// ErrQueueExists: CreateQueue with other attributes than the existing queue's.
	ErrQueueExists = errors.New("quorumq: queue already exists with other attributes")
	// ErrQueueInUse: the queue is another queue's dead-letter target.
	ErrQueueInUse = errors.New("quorumq: queue is a dead-letter target")
	// ErrDeadLetterInvalid: the dead-letter target is missing, the queue itself, or of another kind.
	ErrDeadLetterInvalid = errors.New("quorumq: invalid dead-letter queue")
	// ErrStaleReceipt: the message was received again since the handle was issued.
	ErrStaleReceipt = errors.New("quorumq: stale receipt handle")
	// ErrInvalidReceipt: the handle is malformed or not of this queue.
	ErrInvalidReceipt = errors.New("quorumq: invalid receipt handle")
	// ErrMessageTooLarge: body + attributes + tags exceed the queue's max_message_size.
	ErrMessageTooLarge = errors.New("quorumq: message too large")
	// ErrMessageNotFound: the message does not exist (any more).
	ErrMessageNotFound = errors.New("quorumq: message not found")
	// ErrMessageAlreadyReceived: Cancel / Reschedule of a message that has
	// been received at least once.
	ErrMessageAlreadyReceived = errors.New("quorumq: message already received")
	// ErrQuotaExceeded: a tenant quota is used up (after the retries).
	ErrQuotaExceeded = errors.New("quorumq: quota exceeded")
	// ErrQueueFull: the queue is at its MaxLength or MaxBytes with
	// overflow reject (not retried: room comes from consumers).
	ErrQueueFull = errors.New("quorumq: queue full")
	// ErrUnauthenticated: no token, or a token the server does not accept.
	ErrUnauthenticated = errors.New("quorumq: unauthenticated")
	// ErrPermissionDenied: the token lacks the scope for the call.
	ErrPermissionDenied = errors.New("quorumq: permission denied")
	// ErrInvalidArgument: a request field is out of bounds; *Error.Field
	// names it. Every INVALID_ARGUMENT status matches, so the more precise
	// ErrMessageTooLarge, ErrInvalidReceipt and ErrDeadLetterInvalid do too.
	ErrInvalidArgument = errors.New("quorumq: invalid argument")
	// ErrUnavailable: the cluster could not serve the call (no leader, no
	// quorum, every endpoint down) within the retry policy.
	ErrUnavailable = errors.New("quorumq: unavailable")
	// ErrClosed: the Client, Producer or Consumer is closed.
	ErrClosed = errors.New("quorumq: closed")
)

// Stable reasons of google.rpc.ErrorInfo (api/quorumq/v1/queue.proto).
const (
	ReasonInvalidArgument    = "INVALID_ARGUMENT"
	ReasonQueueNotFound      = "QUEUE_NOT_FOUND"
	ReasonQueueAlreadyExists = "QUEUE_ALREADY_EXISTS"
	ReasonQueueInUse         = "QUEUE_IN_USE"
	ReasonDeadLetterInvalid  = "DEAD_LETTER_QUEUE_INVALID"
	ReasonMessageTooLarge    = "MESSAGE_TOO_LARGE"
	ReasonMessageNotFound    = "MESSAGE_NOT_FOUND"
	ReasonStaleReceiptHandle = "STALE_RECEIPT_HANDLE"
	// ReasonMessageAlreadyReceived: Cancel / Reschedule of a received message.
	ReasonMessageAlreadyReceived = "MESSAGE_ALREADY_RECEIVED"
	ReasonInvalidReceiptHandle   = "INVALID_RECEIPT_HANDLE"
	ReasonQuotaExceeded          = "QUOTA_EXCEEDED"
	ReasonQueueFull              = "QUEUE_FULL"
	ReasonOverloaded             = "OVERLOADED"
	ReasonNotLeader              = "NOT_LEADER"
	ReasonNoQuorum               = "NO_QUORUM"
	ReasonLeadershipLost         = "LEADERSHIP_LOST"
	ReasonShuttingDown           = "SHUTTING_DOWN"
	ReasonUnauthenticated        = "UNAUTHENTICATED"
	ReasonPermissionDenied       = "PERMISSION_DENIED"
)

// byReason maps a reason to its sentinel.
var byReason = map[string]error{
	ReasonQueueNotFound:          ErrQueueNotFound,
	ReasonQueueAlreadyExists:     ErrQueueExists,
	ReasonQueueInUse:             ErrQueueInUse,
	ReasonDeadLetterInvalid:      ErrDeadLetterInvalid,
	ReasonMessageTooLarge:        ErrMessageTooLarge,
	ReasonMessageNotFound:        ErrMessageNotFound,
	ReasonStaleReceiptHandle:     ErrStaleReceipt,
	ReasonMessageAlreadyReceived: ErrMessageAlreadyReceived,
	ReasonInvalidReceiptHandle:   ErrInvalidReceipt,
	ReasonQuotaExceeded:          ErrQuotaExceeded,
	ReasonQueueFull:              ErrQueueFull,
	ReasonUnauthenticated:        ErrUnauthenticated,
	ReasonPermissionDenied:       ErrPermissionDenied,
	ReasonInvalidArgument:        ErrInvalidArgument,
}

// byCode maps the broad gRPC codes to their sentinel.
var byCode = map[codes.Code]error{
	codes.InvalidArgument:  ErrInvalidArgument,
	codes.Unauthenticated:  ErrUnauthenticated,
	codes.PermissionDenied: ErrPermissionDenied,
	codes.Unavailable:      ErrUnavailable,
}

// Error is an error answered by the server (or by gRPC on its way): the
// status code, the ErrorInfo reason and what the details say. Use
// errors.Is with the sentinels above, or errors.As to read the fields.
type Error struct {
	// Code is the gRPC status code.
	Code codes.Code
	// Reason is the ErrorInfo reason ("QUEUE_NOT_FOUND"); empty when the
	// status carried none (a transport failure).
	Reason string
	// Message is the server's human-readable message.
	Message string
	// Field names the offending request field of an INVALID_ARGUMENT.
	Field string
	// Metadata is the ErrorInfo metadata (e.g. "leader" on NOT_LEADER).
	Metadata map[string]string
	// RetryDelay is the google.rpc.RetryInfo delay, when the server sent one.
	RetryDelay time.Duration

	st *status.Status
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("quorumq: ")
	b.WriteString(codeName(e.Code))
	if e.Reason != "" && e.Reason != codeName(e.Code) {
		b.WriteString(" ")
		b.WriteString(e.Reason)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, " (field %s)", e.Field)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Is matches the sentinel of the reason, or of the code for the broad
// sentinels (ErrInvalidArgument, ErrUnauthenticated, ErrPermissionDenied,
// ErrUnavailable).
func (e *Error) Is(target error) bool {
	if s, ok := byReason[e.Reason]; ok && s == target {
		return true
	}
	if s, ok := byCode[e.Code]; ok && s == target {
		return true
	}
	return target == ErrQueueExists && e.Code == codes.AlreadyExists
}

// GRPCStatus returns the status, so status.FromError and status.Code work
// on SDK errors.
func (e *Error) GRPCStatus() *status.Status {
	if e.st != nil {
		return e.st
	}
	return status.New(e.Code, e.Message)
}

// asError converts a gRPC error into an *Error; other errors pass through.
func asError(err error) error {
	if err == nil {
		return nil
	}
	var qe *Error
	if errors.As(err, &qe) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{Code: st.Code(), Message: st.Message(), st: st}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			e.Reason = d.GetReason()
			e.Metadata = d.GetMetadata()
			if f := d.GetMetadata()["field"]; f != "" && e.Field == "" {
				e.Field = f
			}
		case *errdetails.BadRequest:
			if v := d.GetFieldViolations(); len(v) > 0 && e.Field == "" {
				e.Field = v[0].GetField()
			}
		case *errdetails.RetryInfo:
			e.RetryDelay = d.GetRetryDelay().AsDuration()
		}
	}
	return e
}

// batchEntryError converts a failed batch entry (code name, reason,
// message, retry delay) into an *Error. An entry refused by the send-rate
// quota carries a retry delay, which makes it retryable after that delay.
func batchEntryError(f *qv1.BatchResultError) *Error {
	var c codes.Code
	if err := c.UnmarshalJSON([]byte(`"` + f.GetCode() + `"`)); err != nil {
		c = codes.Unknown
	}
	e := &Error{Code: c, Reason: f.GetReason(), Message: f.GetMessage()}
	if d := f.GetRetryDelay(); d != nil {
		e.RetryDelay = d.AsDuration()
	}
	return e
}

// codeNames are the canonical upper-case gRPC code names.
var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
	codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
	codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
	codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
	codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
}

// codeName is the upper-case gRPC code name ("INVALID_ARGUMENT").
func codeName(c codes.Code) string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return c.String()
}

// BatchError reports the entries of a batch call that failed. Errors is
// aligned with the call's input (nil for an entry that succeeded); Unwrap
// gives the failed entries' errors, so errors.Is(err, ErrMessageTooLarge)
// tells whether any entry failed for that reason.
type BatchError struct {
	// Failed is the number of entries that failed, of len(Errors).
	Failed int
	// Errors holds each entry's error, nil where it succeeded.
	Errors []error
}

// Error implements error.
func (e *BatchError) Error() string {
	for _, err := range e.Errors {
		if err != nil {
			return fmt.Sprintf("quorumq: %d of %d batch entries failed; first: %v", e.Failed, len(e.Errors), err)
		}
	}
	return fmt.Sprintf("quorumq: %d of %d batch entries failed", e.Failed, len(e.Errors))
}

// Unwrap returns the failed entries' errors.
func (e *BatchError) Unwrap() []error {
	var out []error
	for _, err := range e.Errors {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// newBatchError returns a *BatchError when any of errs is not nil.
func newBatchError(errs []error) error {
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed == 0 {
		return nil
	}
	return &BatchError{Failed: failed, Errors: errs}
}

package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/store"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every quorumq error.
const ErrorDomain = "quorumq.dev"

// Stable error reasons (documented in api/quorumq/v1/queue.proto, except
// OVERLOADED, documented here and in the README until the proto's list is
// next regenerated). Clients match on these, so they never change meaning.
const (
	ReasonInvalidArgument      = "INVALID_ARGUMENT"
	ReasonQueueNotFound        = "QUEUE_NOT_FOUND"
	ReasonQueueAlreadyExists   = "QUEUE_ALREADY_EXISTS"
	ReasonQueueInUse           = "QUEUE_IN_USE"
	ReasonDeadLetterInvalid    = "DEAD_LETTER_QUEUE_INVALID"
	ReasonMessageTooLarge      = "MESSAGE_TOO_LARGE"
	ReasonMessageNotFound      = "MESSAGE_NOT_FOUND"
	ReasonStaleReceiptHandle   = "STALE_RECEIPT_HANDLE"
	ReasonInvalidReceiptHandle = "INVALID_RECEIPT_HANDLE"
	ReasonQuotaExceeded        = "QUOTA_EXCEEDED"
	ReasonQueueFull            = "QUEUE_FULL"
	ReasonNotLeader            = "NOT_LEADER"
	ReasonNoQuorum             = "NO_QUORUM"
	ReasonLeadershipLost       = "LEADERSHIP_LOST"
	ReasonShuttingDown         = "SHUTTING_DOWN"
	ReasonUnauthenticated      = "UNAUTHENTICATED"
	ReasonPermissionDenied     = "PERMISSION_DENIED"
	ReasonInternal             = "INTERNAL"
)

// ReasonOverloaded (RESOURCE_EXHAUSTED, HTTP 429, with a google.rpc.RetryInfo
// delay): the shard's backlog of proposals on the leader is at its byte
// limit. Nothing was written; retry after the delay (with the same
// idempotency key).
const ReasonOverloaded = "OVERLOADED"

// Sentinels of the auth layer: an Authenticator wraps these with %w.
var (
	// ErrUnauthenticated: no token, or a token that does not verify.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: a valid token without the scope for the call.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrNoQuorum: the shard could not commit within the deadline; the
	// outcome of the call is unknown (retry with the same idempotency key).
	ErrNoQuorum = errors.New("no quorum for the shard within the deadline")
)

// outcome maps a store or raft error to its gRPC code and reason.
type outcome struct {
	code   codes.Code
	reason string
}

// catalog is the one place where internal sentinels meet gRPC codes.
var catalog = []struct {
	err error
	outcome
}{
	{ErrUnauthenticated, outcome{codes.Unauthenticated, ReasonUnauthenticated}},
	{ErrPermissionDenied, outcome{codes.PermissionDenied, ReasonPermissionDenied}},
	// Before ErrInvalidArgument: an oversized body is both (it names its field).
	{store.ErrMessageTooLarge, outcome{codes.InvalidArgument, ReasonMessageTooLarge}},
	{store.ErrInvalidArgument, outcome{codes.InvalidArgument, ReasonInvalidArgument}},
	{store.ErrQueueNotFound, outcome{codes.NotFound, ReasonQueueNotFound}},
	{store.ErrQueueExists, outcome{codes.AlreadyExists, ReasonQueueAlreadyExists}},
	{store.ErrQueueInUse, outcome{codes.FailedPrecondition, ReasonQueueInUse}},
	{store.ErrDeadLetterInvalid, outcome{codes.InvalidArgument, ReasonDeadLetterInvalid}},
	{store.ErrMessageNotFound, outcome{codes.NotFound, ReasonMessageNotFound}},
	{store.ErrMessageAlreadyReceived, outcome{codes.FailedPrecondition, ReasonMessageAlreadyReceived}},
	{store.ErrStaleReceipt, outcome{codes.FailedPrecondition, ReasonStaleReceiptHandle}},
	{store.ErrInvalidReceipt, outcome{codes.InvalidArgument, ReasonInvalidReceiptHandle}},
	{store.ErrQuotaExceeded, outcome{codes.ResourceExhausted, ReasonQuotaExceeded}},
	{store.ErrQueueFull, outcome{codes.ResourceExhausted, ReasonQueueFull}},
	{store.ErrInvalidCommand, outcome{codes.Internal, ReasonInternal}},
	{ErrNoQuorum, outcome{codes.Unavailable, ReasonNoQuorum}},
	{raftnode.ErrNotLeader, outcome{codes.Unavailable, ReasonNotLeader}},
	{raftnode.ErrLeadershipLost, outcome{codes.Unavailable, ReasonLeadershipLost}},
	// Before ErrProposalDropped, which it also matches.
	{raftnode.ErrOverloaded, outcome{codes.ResourceExhausted, ReasonOverloaded}},
	{raftnode.ErrProposalDropped, outcome{codes.Unavailable, ReasonNotLeader}},
	{raftnode.ErrStopped, outcome{codes.Unavailable, ReasonShuttingDown}},
	{raftnode.ErrGroupNotFound, outcome{codes.Unavailable, ReasonNotLeader}},
}

// overloadRetryDelay is the RetryInfo delay of an OVERLOADED answer: about
// the time a leader needs to commit a full backlog (a few loop rounds).
const overloadRetryDelay = 200 * time.Millisecond

// FieldError is a bad request field found by the server's validation.
func FieldError(field, reason string) error {
	return &store.FieldError{Field: field, Reason: reason}
}

// StatusError builds a status with ErrorInfo (and BadRequest for fields).
func StatusError(code codes.Code, reason, msg string, meta map[string]string) error {
	st := status.New(code, msg)
	info := &errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: meta}
	if withInfo, err := st.WithDetails(info); err == nil {
		st = withInfo
	}
	if f, ok := meta["field"]; ok {
		br := &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: f, Description: msg}}}
		if withBR, err := st.WithDetails(br); err == nil {
			st = withBR
		}
	}
	return st.Err()
}

// ToStatus converts any error reaching the API edge into a gRPC status
// error with an ErrorInfo reason. Statuses pass through unchanged.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code, reason, msg := classify(err)
	var meta map[string]string
	var fe *store.FieldError
	if errors.As(err, &fe) {
		meta = map[string]string{"field": fe.Field}
	}
	var nl *raftnode.NotLeaderError
	if errors.As(err, &nl) && nl.LeaderID != 0 {
		meta = map[string]string{"leader": fmt.Sprint(nl.LeaderID)}
	}
	serr := StatusError(code, reason, msg, meta)
	if reason == ReasonOverloaded {
		// Clients (the SDK) retry RESOURCE_EXHAUSTED only with a delay.
		st, _ := status.FromError(serr)
		if withRetry, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(overloadRetryDelay)}); err == nil {
			serr = withRetry.Err()
		}
	}
	return serr
}

// classify returns the code, reason and message of err.
func classify(err error) (codes.Code, string, string) {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		// A proposal that did not commit in time: the shard has no quorum
		// (or is overloaded). Its outcome is unknown; idempotency keys make
		// a retry safe.
		return codes.Unavailable, ReasonNoQuorum, "no quorum for the shard within the deadline: " + err.Error()
	case errors.Is(err, context.Canceled):
		return codes.Canceled, "CANCELED", err.Error()
	}
	for _, c := range catalog {
		if errors.Is(err, c.err) {
			return c.code, c.reason, err.Error()
		}
	}
	return codes.Internal, ReasonInternal, err.Error()
}

// BatchError describes a failed batch entry (code name, reason, message).
func BatchError(err error) (code, reason, msg string) {
	st, _ := status.FromError(ToStatus(err))
	reason = ReasonInternal
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.Reason
		}
	}
	return codeName(st.Code()), reason, st.Message()
}

// codeName is the canonical upper-case gRPC code name ("INVALID_ARGUMENT").
func codeName(c codes.Code) string {
	switch c {
	case codes.OK:
		return "OK"
	case codes.Canceled:
		return "CANCELLED"
	case codes.Unknown:
		return "UNKNOWN"
	case codes.InvalidArgument:
		return "INVALID_ARGUMENT"
	case codes.DeadlineExceeded:
		return "DEADLINE_EXCEEDED"
	case codes.NotFound:
		return "NOT_FOUND"
	case codes.AlreadyExists:
		return "ALREADY_EXISTS"
	case codes.PermissionDenied:
		return "PERMISSION_DENIED"
	case codes.ResourceExhausted:
		return "RESOURCE_EXHAUSTED"
	case codes.FailedPrecondition:
		return "FAILED_PRECONDITION"
	case codes.Aborted:
		return "ABORTED"
	case codes.OutOfRange:
		return "OUT_OF_RANGE"
	case codes.Unimplemented:
		return "UNIMPLEMENTED"
	case codes.Internal:
		return "INTERNAL"
	case codes.Unavailable:
		return "UNAVAILABLE"
	case codes.DataLoss:
		return "DATA_LOSS"
	case codes.Unauthenticated:
		return "UNAUTHENTICATED"
	}
	return c.String()
}

// AsFieldError names request field `field` in a store validation error.
func AsFieldError(field string, err error) error {
	var fe *store.FieldError
	if errors.As(err, &fe) {
		return FieldError(field, fe.Reason)
	}
	return err
}

// ErrorInfo is the ErrorInfo detail of a status, or nil.
func ErrorInfo(st *status.Status) *errdetails.ErrorInfo {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

// ReasonOf is the ErrorInfo reason of a status error, or "".
func ReasonOf(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	if info := ErrorInfo(st); info != nil {
		return info.GetReason()
	}
	return ""
}

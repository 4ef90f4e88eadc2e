package sqs

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quorumq/quorumq/server"
)

// apiError is an SQS error: the JSON protocol's __type shape, the Query
// protocol's code (also sent as x-amzn-query-error), the HTTP status and
// whether the sender is at fault.
type apiError struct {
	status   int
	shape    string // JSON __type, without the "com.amazonaws.sqs#" namespace
	code     string // Query code, e.g. AWS.SimpleQueueService.NonExistentQueue
	msg      string
	receiver bool // the fault is the server's
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

// Errors of SQS's model (shape, query code, status as the model says).
func errQueueDoesNotExist() *apiError {
	return &apiError{http.StatusBadRequest, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue",
		"The specified queue does not exist.", false}
}

func errQueueNameExists(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "QueueNameExists", "QueueAlreadyExists", msg, false}
}

func errReceiptHandleIsInvalid(msg string) *apiError {
	return &apiError{http.StatusNotFound, "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", msg, false}
}

func errInvalidAttributeName(name string) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidAttributeName", "InvalidAttributeName",
		fmt.Sprintf("Unknown Attribute %s.", name), false}
}

func errInvalidAttributeValue(format string, a ...any) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidAttributeValue", "InvalidAttributeValue", fmt.Sprintf(format, a...), false}
}

func errInvalidMessageContents(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidMessageContents", "InvalidMessageContents", msg, false}
}

func errTooManyEntries(n int) *apiError {
	return &apiError{http.StatusBadRequest, "TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
		fmt.Sprintf("Maximum number of entries per request are %d. You have sent %d.", maxBatchEntries, n), false}
}

func errEmptyBatch() *apiError {
	return &apiError{http.StatusBadRequest, "EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest",
		"There should be at least one entry in the request.", false}
}

func errBatchIDsNotDistinct(id string) *apiError {
	return &apiError{http.StatusBadRequest, "BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
		fmt.Sprintf("Id %s repeated.", id), false}
}

func errInvalidBatchEntryID(id string) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId",
		fmt.Sprintf("A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long. (%q)", id), false}
}

func errBatchTooLong(n, max int) *apiError {
	return &apiError{http.StatusBadRequest, "BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong",
		fmt.Sprintf("Batch requests cannot be longer than %d bytes. You have sent %d bytes.", max, n), false}
}

func errUnsupported(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", msg, false}
}

func errResourceNotFound(msg string) *apiError {
	return &apiError{http.StatusNotFound, "ResourceNotFoundException", "ResourceNotFoundException", msg, false}
}

// Common errors of every AWS Query service (not in SQS's model: the SDK
// reports them by their code).
func errInvalidParameter(format string, a ...any) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidParameterValue", "InvalidParameterValue", fmt.Sprintf(format, a...), false}
}

func errMissingParameter(name string) *apiError {
	return &apiError{http.StatusBadRequest, "MissingParameter", "MissingParameter",
		fmt.Sprintf("The request must contain the parameter %s.", name), false}
}

func errInvalidAction(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidAction", "InvalidAction", msg, false}
}

// asAPIError turns any error of a call into the SQS error to send.
func asAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var au *AuthError
	if errors.As(err, &au) {
		st := au.HTTPStatus
		if st == 0 {
			st = http.StatusForbidden
		}
		return &apiError{status: st, shape: au.Code, code: au.Code, msg: au.Message}
	}
	st, ok := status.FromError(err)
	if !ok {
		return &apiError{http.StatusInternalServerError, "InternalFailure", "InternalFailure", "internal error", true}
	}
	return fromStatus(st)
}

// fromStatus maps a QueueService status (code + ErrorInfo reason) to the
// SQS error a client of SQS expects.
func fromStatus(st *status.Status) *apiError {
	reason := ""
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.Reason
		}
	}
	msg := st.Message()
	switch reason {
	case server.ReasonQueueNotFound:
		return errQueueDoesNotExist()
	case server.ReasonQueueAlreadyExists:
		return errQueueNameExists("A queue already exists with the same name and a different value for attribute(s): " + msg)
	case server.ReasonInvalidReceiptHandle:
		return errReceiptHandleIsInvalid("The input receipt handle is invalid: " + msg)
	case server.ReasonStaleReceiptHandle:
		return errInvalidParameter("Value for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired (the message was received again).")
	case server.ReasonQuotaExceeded:
		return &apiError{http.StatusForbidden, "OverLimit", "OverLimit", msg, false}
	case server.ReasonOverloaded:
		return &apiError{http.StatusForbidden, "RequestThrottled", "RequestThrottled", msg, false}
	case server.ReasonUnauthenticated:
		return &apiError{http.StatusForbidden, "InvalidClientTokenId", "InvalidClientTokenId", msg, false}
	case server.ReasonPermissionDenied:
		return &apiError{http.StatusForbidden, "AccessDenied", "AccessDenied", msg, false}
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange, codes.AlreadyExists:
		return errInvalidParameter("%s", msg)
	case codes.NotFound:
		return errQueueDoesNotExist()
	case codes.ResourceExhausted:
		return &apiError{http.StatusForbidden, "RequestThrottled", "RequestThrottled", msg, false}
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return &apiError{http.StatusServiceUnavailable, "ServiceUnavailable", "ServiceUnavailable", msg, true}
	case codes.Unauthenticated:
		return &apiError{http.StatusForbidden, "InvalidClientTokenId", "InvalidClientTokenId", msg, false}
	case codes.PermissionDenied:
		return &apiError{http.StatusForbidden, "AccessDenied", "AccessDenied", msg, false}
	}
	return &apiError{http.StatusInternalServerError, "InternalFailure", "InternalFailure", msg, true}
}

// batchEntryError maps a failed batch entry of QueueService to SQS's
// BatchResultErrorEntry code and whether the sender is at fault.
func batchEntryError(code, reason, msg string) (string, bool) {
	// Batch entries carry the canonical code name ("INVALID_ARGUMENT"),
	// which is also codes.Code's JSON form.
	var c codes.Code
	if c.UnmarshalJSON([]byte(strconv.Quote(code))) != nil {
		c = codes.Unknown
	}
	ae := fromStatus(status.New(c, msg))
	switch reason {
	case server.ReasonInvalidReceiptHandle:
		return "ReceiptHandleIsInvalid", true
	case server.ReasonStaleReceiptHandle, server.ReasonInvalidArgument, server.ReasonMessageTooLarge:
		return "InvalidParameterValue", true
	case server.ReasonQuotaExceeded, server.ReasonOverloaded:
		return "RequestThrottled", true
	}
	return ae.code, !ae.receiver
}

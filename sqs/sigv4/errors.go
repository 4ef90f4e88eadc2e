package sigv4

import "net/http"

// SQS error codes of authentication failures (what AWS answers).
const (
	// CodeInvalidClientTokenId: the access key does not exist or was revoked.
	CodeInvalidClientTokenId = "InvalidClientTokenId"
	// CodeSignatureDoesNotMatch: the signature, its scope or the payload hash
	// does not match the request.
	CodeSignatureDoesNotMatch = "SignatureDoesNotMatch"
	// CodeIncompleteSignature: the signature is malformed or lacks a part.
	CodeIncompleteSignature = "IncompleteSignature"
	// CodeMissingAuthenticationToken: the request is not signed at all.
	CodeMissingAuthenticationToken = "MissingAuthenticationToken"
	// CodeRequestExpired: X-Amz-Date is more than 15 minutes from the
	// server's clock (a presigned request: past its X-Amz-Expires).
	CodeRequestExpired = "RequestExpired"
	// CodeServiceUnavailable: the access key store could not answer; SDKs
	// retry it.
	CodeServiceUnavailable = "ServiceUnavailable"
)

// Error is a refused request: the SQS error code, the HTTP status to answer
// with and a message. The SQS listener renders it in either protocol.
type Error struct {
	Code       string
	HTTPStatus int
	Message    string
	cause      error // a store failure behind CodeServiceUnavailable, for logs
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Unwrap returns the store failure behind a ServiceUnavailable, if any.
func (e *Error) Unwrap() error { return e.cause }

func incomplete(msg string) *Error {
	return &Error{Code: CodeIncompleteSignature, HTTPStatus: http.StatusForbidden, Message: msg}
}

func mismatch(msg string) *Error {
	return &Error{Code: CodeSignatureDoesNotMatch, HTTPStatus: http.StatusForbidden, Message: msg}
}

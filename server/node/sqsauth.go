package node

import (
	"errors"
	"net/http"

	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/sqs"
	"github.com/quorumq/quorumq/sqs/sigv4"
)

// sigv4Auth is the SQS endpoint's authenticator when client auth is on:
// SigV4 against the access keys of the metadata shard (n.keys), its
// refusals as the SQS handler's AuthError.
type sigv4Auth struct{ v *sigv4.Verifier }

// AuthenticateSQS implements sqs.Authenticator.
func (a sigv4Auth) AuthenticateSQS(r *http.Request, body []byte) (*server.Principal, error) {
	p, err := a.v.AuthenticateSQS(r, body)
	var e *sigv4.Error
	if errors.As(err, &e) {
		return nil, &sqs.AuthError{Code: e.Code, HTTPStatus: e.HTTPStatus, Message: e.Message}
	}
	return p, err
}

// Package sigv4 verifies AWS Signature Version 4 on requests to the
// SQS-compatible endpoint, against the access keys of the metadata shard.
//
// Both forms are accepted: the Authorization header and the presigned
// query (X-Amz-Algorithm, X-Amz-Credential, …). The credential scope must
// name service "sqs"; any region is accepted (SDKs sign with the region
// they are configured for, and quorumq has one). A request time more than
// 15 minutes from the server's clock is refused (a presigned request:
// before that window or after its X-Amz-Expires). The verifier never sees
// a secret: the key store hands it the signing key derived for the
// request's date, region and service (see router.AccessKeys).
package sigv4

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/server/shardserver"
)

// Service is the only service name a credential scope may carry.
const Service = "sqs"

// MaxSkew is how far a request's X-Amz-Date may be from the server's clock.
const MaxSkew = 15 * time.Minute

// Keys resolves an access key to its tenant, scopes and the signing key of
// one credential scope. It returns an error wrapping
// shardserver.ErrUnknownAccessKey for a key that does not exist (or was
// revoked); any other error means the store could not answer.
type Keys interface {
	AccessKeyGrant(ctx context.Context, keyID, date, region, service string) (*router.AccessKeyGrant, error)
}

var _ Keys = (*router.AccessKeys)(nil)

// Verifier authenticates SQS requests. It is safe for concurrent use.
type Verifier struct {
	keys Keys
	now  func() time.Time
}

// Option configures a Verifier.
type Option func(*Verifier)

// WithClock sets the clock requests are checked against (tests).
func WithClock(now func() time.Time) Option { return func(v *Verifier) { v.now = now } }

// New returns a verifier over keys.
func New(keys Keys, opts ...Option) *Verifier {
	v := &Verifier{keys: keys, now: time.Now}
	for _, o := range opts {
		o(v)
	}
	return v
}

// AuthenticateSQS verifies r's signature. body is the request body, which
// the caller has read (bounded) and which the signature covers unless the
// client signed UNSIGNED-PAYLOAD. On success it returns the key's tenant
// and scopes; otherwise an *Error with the SQS error code.
func (v *Verifier) AuthenticateSQS(r *http.Request, body []byte) (*server.Principal, error) {
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, mismatch("The query string does not parse.")
	}
	s, err := parseRequest(r, query)
	if err != nil {
		return nil, err
	}
	if s.service != Service {
		return nil, mismatch("Credential should be scoped to correct service: '" + Service + "'.")
	}
	if err := v.checkTime(s); err != nil {
		return nil, err
	}
	payloads, err := payloadHashes(r, query, s, body)
	if err != nil {
		return nil, err
	}
	g, err := v.keys.AccessKeyGrant(r.Context(), s.keyID, s.date, s.region, s.service)
	switch {
	case errors.Is(err, shardserver.ErrUnknownAccessKey):
		return nil, &Error{Code: CodeInvalidClientTokenId, HTTPStatus: http.StatusForbidden,
			Message: "The security token included in the request is invalid.", cause: err}
	case err != nil:
		return nil, &Error{Code: CodeServiceUnavailable, HTTPStatus: http.StatusServiceUnavailable,
			Message: "The access key store is unavailable; retry.", cause: err}
	}
	ok := false
	for _, p := range payloads {
		mac := hmac.New(sha256.New, g.SigningKey)
		mac.Write([]byte(stringToSign(s, canonicalRequest(r, query, s, p))))
		ok = hmac.Equal(mac.Sum(nil), s.sig) || ok
	}
	if !ok {
		return nil, mismatch("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
	}
	scopes := make(map[string]bool, len(g.Scopes))
	for _, sc := range g.Scopes {
		scopes[sc] = true
	}
	return &server.Principal{Tenant: g.Tenant, Scopes: scopes}, nil
}

func (v *Verifier) checkTime(s *signature) error {
	now := v.now()
	format := func(t time.Time) string { return t.UTC().Format(amzDateFormat) }
	if s.time.After(now.Add(MaxSkew)) {
		return &Error{Code: CodeRequestExpired, HTTPStatus: http.StatusBadRequest,
			Message: fmt.Sprintf("Signature not yet current: %s is still later than %s (%s + 15 min.)", s.amzDate, format(now.Add(MaxSkew)), format(now))}
	}
	valid := MaxSkew
	if s.presigned {
		valid = s.expires
	}
	if now.After(s.time.Add(valid)) {
		return &Error{Code: CodeRequestExpired, HTTPStatus: http.StatusBadRequest,
			Message: fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - %s)", s.amzDate, format(now.Add(-valid)), format(now), valid)}
	}
	return nil
}

// payloadHashes are the payload hashes the client may have signed:
// X-Amz-Content-Sha256 when sent (UNSIGNED-PAYLOAD, or the body's hash,
// which must be right), else the body's SHA-256; a presigned request
// without the parameter may also have signed UNSIGNED-PAYLOAD (S3-style
// presigners do). Each candidate is checked with a constant-time compare.
func payloadHashes(r *http.Request, query url.Values, s *signature, body []byte) ([]string, error) {
	sum := sha256.Sum256(body)
	actual := hex.EncodeToString(sum[:])
	claimed := r.Header.Get("X-Amz-Content-Sha256")
	if claimed == "" && s.presigned {
		claimed = query.Get("X-Amz-Content-Sha256")
	}
	switch {
	case claimed == "" && s.presigned:
		return []string{actual, UnsignedPayload}, nil
	case claimed == "":
		return []string{actual}, nil
	case claimed == UnsignedPayload || claimed == actual:
		return []string{claimed}, nil
	}
	return nil, mismatch("The provided 'x-amz-content-sha256' does not match what was computed.")
}

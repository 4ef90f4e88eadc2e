package sigv4

import (
	"encoding/hex"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Algorithm is the only signing algorithm accepted.
const Algorithm = "AWS4-HMAC-SHA256"

// UnsignedPayload is the payload hash of a request whose body is not
// signed (the client's choice; the signature still covers everything else).
const UnsignedPayload = "UNSIGNED-PAYLOAD"

const (
	amzDateFormat = "20060102T150405Z"
	terminator    = "aws4_request"
	// Bounds on what the parser looks at, far above what any SDK sends.
	maxAuthorization = 4096
	maxSignedHeaders = 64
	maxScopePart     = 128
	// maxPresignExpiry is X-Amz-Expires' upper bound (7 days), as in AWS.
	maxPresignExpiry = 7 * 24 * time.Hour
)

// Query parameters of a presigned request.
const (
	qAlgorithm     = "X-Amz-Algorithm"
	qCredential    = "X-Amz-Credential"
	qDate          = "X-Amz-Date"
	qExpires       = "X-Amz-Expires"
	qSignedHeaders = "X-Amz-SignedHeaders"
	qSignature     = "X-Amz-Signature"
)

// signature is what a request claims: who signed, when, over what.
type signature struct {
	keyID   string
	date    string // YYYYMMDD of the credential scope
	region  string
	service string
	// amzDate is the request time as sent (X-Amz-Date).
	amzDate string
	time    time.Time
	// signedHeaders as sent (lower case, ';'-separated) and split.
	signedHeaders string
	headers       []string
	sig           []byte // decoded hex signature
	presigned     bool
	expires       time.Duration // presigned only
}

// scope is the credential scope string of the string to sign.
func (s *signature) scope() string {
	return s.date + "/" + s.region + "/" + s.service + "/" + terminator
}

// parseRequest finds the signature of r in its Authorization header or, for
// a presigned request, its query. It returns an *Error with the SQS code
// for what is missing or malformed.
func parseRequest(r *http.Request, query url.Values) (*signature, error) {
	auth := r.Header.Get("Authorization")
	switch {
	case auth != "":
		s, err := parseAuthorization(auth)
		if err != nil {
			return nil, err
		}
		date := r.Header.Get("X-Amz-Date")
		if date == "" {
			return nil, incomplete("Authorization header requires existence of a 'X-Amz-Date' header.")
		}
		if err := s.setDate(date); err != nil {
			return nil, err
		}
		return s, nil
	case query.Get(qAlgorithm) != "" || query.Get(qSignature) != "":
		return parsePresigned(query)
	}
	return nil, &Error{Code: CodeMissingAuthenticationToken, HTTPStatus: http.StatusForbidden,
		Message: "Request is missing Authentication Token"}
}

// parseAuthorization parses
//
//	AWS4-HMAC-SHA256 Credential=ID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=hex
func parseAuthorization(h string) (*signature, error) {
	if len(h) > maxAuthorization {
		return nil, incomplete("Authorization header is too long.")
	}
	alg, rest, ok := strings.Cut(h, " ")
	if !ok || alg != Algorithm {
		return nil, incomplete("Unsupported AWS 'algorithm': only " + Algorithm + " is accepted.")
	}
	var cred, signed, sig string
	var seen int
	for part := range strings.SplitSeq(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, incomplete("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.")
		}
		var dst *string
		bit := 0
		switch k {
		case "Credential":
			dst, bit = &cred, 1
		case "SignedHeaders":
			dst, bit = &signed, 2
		case "Signature":
			dst, bit = &sig, 4
		default:
			return nil, incomplete("Authorization header has an unknown parameter.")
		}
		if seen&bit != 0 {
			return nil, incomplete("Authorization header repeats parameter '" + k + "'.")
		}
		seen |= bit
		*dst = v
	}
	if seen != 7 {
		return nil, incomplete("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.")
	}
	s := &signature{}
	if err := s.setCredential(cred); err != nil {
		return nil, err
	}
	if err := s.setSignedHeaders(signed); err != nil {
		return nil, err
	}
	if err := s.setSignature(sig); err != nil {
		return nil, err
	}
	return s, nil
}

func parsePresigned(q url.Values) (*signature, error) {
	for _, k := range []string{qAlgorithm, qCredential, qDate, qExpires, qSignedHeaders, qSignature} {
		if len(q[k]) != 1 || q[k][0] == "" {
			return nil, incomplete("A presigned request needs exactly one of each of X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders and X-Amz-Signature; '" + k + "' is missing or repeated.")
		}
	}
	if q.Get(qAlgorithm) != Algorithm {
		return nil, incomplete("Unsupported AWS 'algorithm': only " + Algorithm + " is accepted.")
	}
	s := &signature{presigned: true}
	if err := s.setCredential(q.Get(qCredential)); err != nil {
		return nil, err
	}
	if err := s.setSignedHeaders(q.Get(qSignedHeaders)); err != nil {
		return nil, err
	}
	if err := s.setSignature(q.Get(qSignature)); err != nil {
		return nil, err
	}
	if err := s.setDate(q.Get(qDate)); err != nil {
		return nil, err
	}
	secs, err := strconv.ParseInt(q.Get(qExpires), 10, 64)
	if err != nil || secs < 1 || time.Duration(secs)*time.Second > maxPresignExpiry {
		return nil, incomplete("X-Amz-Expires must be a whole number of seconds from 1 to 604800.")
	}
	s.expires = time.Duration(secs) * time.Second
	return s, nil
}

func (s *signature) setCredential(c string) error {
	parts := strings.Split(c, "/")
	if len(parts) != 5 {
		return incomplete("Credential must have the form <access key id>/<YYYYMMDD>/<region>/<service>/aws4_request.")
	}
	for _, p := range parts {
		if p == "" || len(p) > maxScopePart {
			return incomplete("Credential must have the form <access key id>/<YYYYMMDD>/<region>/<service>/aws4_request.")
		}
	}
	s.keyID, s.date, s.region, s.service = parts[0], parts[1], parts[2], parts[3]
	if parts[4] != terminator {
		return mismatch("Credential should be scoped with a valid terminator: 'aws4_request'.")
	}
	return nil
}

func (s *signature) setSignedHeaders(h string) error {
	if h == "" {
		return incomplete("SignedHeaders must not be empty.")
	}
	n := strings.Count(h, ";") + 1
	if n > maxSignedHeaders {
		return incomplete("SignedHeaders lists too many headers.")
	}
	s.signedHeaders = h
	s.headers = make([]string, 0, n)
	host := false
	for name := range strings.SplitSeq(h, ";") {
		if name == "" || !isLowerToken(name) {
			return incomplete("SignedHeaders must list lower-case header names separated by ';'.")
		}
		host = host || name == "host"
		s.headers = append(s.headers, name)
	}
	if !host {
		return mismatch("'Host' must be a signed header.")
	}
	return nil
}

func (s *signature) setSignature(sig string) error {
	b, err := hex.DecodeString(sig)
	if err != nil || len(b) != 32 {
		return incomplete("Signature must be 64 hexadecimal characters.")
	}
	s.sig = b
	return nil
}

func (s *signature) setDate(d string) error {
	t, err := time.Parse(amzDateFormat, d)
	if err != nil {
		return incomplete("X-Amz-Date must have the form YYYYMMDD'T'HHMMSS'Z'.")
	}
	if s.date != d[:8] {
		return mismatch("Date in Credential scope does not match YYYYMMDD from X-Amz-Date.")
	}
	s.amzDate, s.time = d, t
	return nil
}

// isLowerToken reports whether s is an HTTP token (RFC 9110) without
// upper-case letters.
func isLowerToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

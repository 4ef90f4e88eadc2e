package sigv4

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/server/shardserver"
)

type anyKey struct{}

func (anyKey) AccessKeyGrant(_ context.Context, id, date, region, service string) (*router.AccessKeyGrant, error) {
	if id == "unknown" {
		return nil, shardserver.ErrUnknownAccessKey
	}
	return &router.AccessKeyGrant{Tenant: "t", SigningKey: shardserver.SigningKey("s", date, region, service)}, nil
}

// FuzzAuthenticate feeds arbitrary Authorization headers, X-Amz-Date values,
// paths and queries to the parser and the verifier: no panic, every
// refusal is an *Error with a code and a 4xx/5xx status, and what the
// parser accepts is well formed.
func FuzzAuthenticate(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKQQ/20270115/us-east-1/sqs/aws4_request, SignedHeaders=host;x-amz-date, Signature="+
		"0000000000000000000000000000000000000000000000000000000000000000", "20270115T120000Z", "/", "Action=ListQueues")
	f.Add("", "", "/a%2Fb/c", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKQQ%2F20270115%2Fr%2Fsqs%2Faws4_request&X-Amz-Date=20270115T120000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=00")
	f.Add("AWS4-HMAC-SHA256 Credential=unknown/20270115/r/sqs/aws4_request,SignedHeaders=host,Signature=zz", "x", "", "a=%zz")
	f.Add("AWS4-HMAC-SHA256 Credential=a/b/c/d/e/f, SignedHeaders=;;, Signature=", "20270115T1200", "//", ";")
	now := time.Date(2027, 1, 15, 12, 0, 0, 0, time.UTC)
	v := New(anyKey{}, WithClock(func() time.Time { return now }))
	f.Fuzz(func(t *testing.T, auth, date, path, rawQuery string) {
		r := &http.Request{Method: "POST", Host: "127.0.0.1:9324", Header: http.Header{},
			URL: &url.URL{Path: path, RawQuery: rawQuery}}
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		if date != "" {
			r.Header.Set("X-Amz-Date", date)
		}
		r = r.WithContext(context.Background())
		q, _ := url.ParseQuery(rawQuery)
		if s, err := parseRequest(r, q); err == nil {
			if len(s.sig) != 32 || !slices.Contains(s.headers, "host") || s.keyID == "" || s.region == "" || s.time.IsZero() {
				t.Fatalf("accepted a malformed signature: %+v", s)
			}
		}
		p, err := v.AuthenticateSQS(r, []byte(auth))
		var e *Error
		switch {
		case err == nil:
			if p == nil || p.Tenant == "" {
				t.Fatal("nil principal without error")
			}
		case !errors.As(err, &e) || e.Code == "" || e.HTTPStatus < 400 || e.Message == "":
			t.Fatalf("refusal %v is not a complete *Error", err)
		}
	})
}

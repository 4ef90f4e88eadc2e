package sigv4_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/sqs/sigv4"
)

// now is the verifier's clock in these tests.
var now = time.Date(2027, 1, 15, 12, 0, 0, 0, time.UTC)

type key struct {
	tenant, secret string
	scopes         []string
}

// fakeKeys stands in for the metadata shard: it derives signing keys the
// way router.AccessKeys's source does.
type fakeKeys struct {
	mu   sync.Mutex
	keys map[string]key
	down bool
}

func (f *fakeKeys) AccessKeyGrant(_ context.Context, id, date, region, service string) (*router.AccessKeyGrant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errors.New("no quorum")
	}
	k, ok := f.keys[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", shardserver.ErrUnknownAccessKey, id)
	}
	return &router.AccessKeyGrant{Tenant: k.tenant, Scopes: k.scopes, SigningKey: shardserver.SigningKey(k.secret, date, region, service)}, nil
}

func (f *fakeKeys) revoke(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.keys, id)
}

func newKeys() *fakeKeys {
	return &fakeKeys{keys: map[string]key{
		"AKQQAAAAAAAAAAAAAAAA": {"tenant-a", "secretA/+0123456789012345678901234567890", []string{"messages:send", "queues:admin"}},
		"AKQQBBBBBBBBBBBBBBBB": {"tenant-b", "secretB/+0123456789012345678901234567890", []string{"messages:receive"}},
	}}
}

var credsA = aws.Credentials{AccessKeyID: "AKQQAAAAAAAAAAAAAAAA", SecretAccessKey: "secretA/+0123456789012345678901234567890"}
var credsB = aws.Credentials{AccessKeyID: "AKQQBBBBBBBBBBBBBBBB", SecretAccessKey: "secretB/+0123456789012345678901234567890"}

// outcome is what the test server answers: the principal or the error.
type outcome struct {
	Tenant string
	Scopes map[string]bool
	Code   string
	Status int
}

// serve runs the verifier behind a real HTTP server on loopback, so the
// requests it sees are what Go's server makes of the wire (Host moved out
// of the headers, Content-Length, …).
func serve(t *testing.T, v *sigv4.Verifier) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var out outcome
		p, err := v.AuthenticateSQS(r, body)
		var se *sigv4.Error
		switch {
		case errors.As(err, &se):
			out.Code, out.Status = se.Code, se.HTTPStatus
		case err != nil:
			out.Code = "unexpected: " + err.Error()
		default:
			out.Tenant, out.Scopes = p.Tenant, p.Scopes
		}
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func send(t *testing.T, req *http.Request) outcome {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out outcome
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func hashOf(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// signed builds a request and signs it with the AWS SDK's signer.
func signed(t *testing.T, creds aws.Credentials, method, u string, body []byte, hdr map[string]string, at time.Time, region string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	hash := hashOf(body)
	if hdr["X-Amz-Content-Sha256"] != "" {
		hash = hdr["X-Amz-Content-Sha256"]
	}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hash, "sqs", region, at); err != nil {
		t.Fatal(err)
	}
	return req
}

func jsonHeaders(action string) map[string]string {
	return map[string]string{"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS." + action}
}

// Requests the SDK signs are accepted in every shape the SQS protocols
// use, and carry the key's tenant and scopes.
func TestVerifyAcceptsSDKSignatures(t *testing.T) {
	base := serve(t, sigv4.New(newKeys(), sigv4.WithClock(func() time.Time { return now })))
	form := url.Values{"Action": {"SendMessage"}, "MessageBody": {"a b+c/d~é&="}, "QueueUrl": {"http://127.0.0.1/tenant-a/q"}}
	cases := []struct {
		name   string
		req    *http.Request
		tenant string
	}{
		{"json", signed(t, credsA, "POST", base+"/", []byte(`{"QueueNamePrefix":"x"}`), jsonHeaders("ListQueues"), now, "us-east-1"), "tenant-a"},
		{"query form body", signed(t, credsA, "POST", base+"/", []byte(form.Encode()),
			map[string]string{"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, now, "eu-central-1"), "tenant-a"},
		{"query string and escaped path", signed(t, credsB, "GET",
			base+"/tenant-b/my%20queue.fifo?Action=ReceiveMessage&MessageAttributeName.1=a%2Fb&MessageAttributeName.2=a-b&Empty=&Version=2012-11-05&Space=x%20y&Plus=1%2B1&Tilde=~",
			nil, nil, now, "local"), "tenant-b"},
		{"empty body no path", signed(t, credsB, "GET", base, nil, nil, now, "r"), "tenant-b"},
		{"unsigned payload", signed(t, credsA, "POST", base+"/", []byte(`{}`),
			map[string]string{"Content-Type": "application/x-amz-json-1.0", "X-Amz-Content-Sha256": sigv4.UnsignedPayload}, now, "us-east-1"), "tenant-a"},
		{"signed payload header", signed(t, credsA, "POST", base+"/", []byte(`{}`),
			map[string]string{"X-Amz-Content-Sha256": hashOf([]byte(`{}`))}, now, "us-east-1"), "tenant-a"},
		{"14 minutes old", signed(t, credsA, "POST", base+"/", []byte(`{}`), jsonHeaders("ListQueues"), now.Add(-14*time.Minute), "us-east-1"), "tenant-a"},
		{"14 minutes ahead", signed(t, credsA, "POST", base+"/", []byte(`{}`), jsonHeaders("ListQueues"), now.Add(14*time.Minute), "us-east-1"), "tenant-a"},
		{"spaces in a signed header", signed(t, credsA, "POST", base+"/", []byte(`{}`),
			map[string]string{"X-Amz-Meta-Note": "  two   spaces  here "}, now, "us-east-1"), "tenant-a"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := send(t, tc.req)
			if got.Code != "" || got.Tenant != tc.tenant {
				t.Fatalf("got %+v, want tenant %s", got, tc.tenant)
			}
		})
	}
	got := send(t, signed(t, credsA, "POST", base+"/", nil, nil, now, "us-east-1"))
	if !got.Scopes["messages:send"] || !got.Scopes["queues:admin"] || got.Scopes["messages:receive"] || len(got.Scopes) != 2 {
		t.Fatalf("scopes %v, want the key's", got.Scopes)
	}
}

func presign(t *testing.T, creds aws.Credentials, u string, payloadHash string, at time.Time, expires int) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	q := req.URL.Query()
	q.Set("X-Amz-Expires", fmt.Sprint(expires))
	req.URL.RawQuery = q.Encode()
	signedURL, hdr, err := v4.NewSigner().PresignHTTP(context.Background(), creds, req, payloadHash, "sqs", "us-east-1", at)
	if err != nil {
		t.Fatal(err)
	}
	out, err := http.NewRequest("GET", signedURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k != "Host" {
			out.Header[k] = v
		}
	}
	return out
}

// Presigned requests (query form) are accepted within X-Amz-Expires,
// whether the body hash or UNSIGNED-PAYLOAD was signed, and refused after.
func TestVerifyPresigned(t *testing.T) {
	base := serve(t, sigv4.New(newKeys(), sigv4.WithClock(func() time.Time { return now })))
	u := base + "/tenant-a/q?Action=GetQueueAttributes&AttributeName.1=All"
	for name, req := range map[string]*http.Request{
		"body hash":        presign(t, credsA, u, hashOf(nil), now.Add(-time.Minute), 300),
		"unsigned payload": presign(t, credsA, u, sigv4.UnsignedPayload, now.Add(-time.Minute), 300),
		"long expiry":      presign(t, credsA, u, hashOf(nil), now.Add(-time.Hour), 7200),
	} {
		if got := send(t, req); got.Code != "" || got.Tenant != "tenant-a" {
			t.Errorf("%s: %+v", name, got)
		}
	}
	if got := send(t, presign(t, credsA, u, hashOf(nil), now.Add(-2*time.Minute), 60)); got.Code != sigv4.CodeRequestExpired {
		t.Errorf("past X-Amz-Expires: %+v", got)
	}
	tampered := presign(t, credsA, u, hashOf(nil), now, 300)
	tampered.URL.RawQuery = strings.Replace(tampered.URL.RawQuery, "AttributeName.1=All", "AttributeName.1=Policy", 1)
	if got := send(t, tampered); got.Code != sigv4.CodeSignatureDoesNotMatch {
		t.Errorf("tampered query: %+v", got)
	}
}

// Every refusal the SQS endpoint must give, with SQS's code and status.
func TestVerifyRefusals(t *testing.T) {
	keys := newKeys()
	base := serve(t, sigv4.New(keys, sigv4.WithClock(func() time.Time { return now })))
	body := []byte(`{"QueueUrl":"http://127.0.0.1:9324/tenant-a/q","MessageBody":"hi"}`)
	ok := func() *http.Request {
		return signed(t, credsA, "POST", base+"/", body, jsonHeaders("SendMessage"), now, "us-east-1")
	}
	wrongSecret := credsA
	wrongSecret.SecretAccessKey = "not-the-secret"
	mixed := credsA
	mixed.SecretAccessKey = credsB.SecretAccessKey
	unknown := aws.Credentials{AccessKeyID: "AKQQZZZZZZZZZZZZZZZZ", SecretAccessKey: "x"}

	tamperBody := ok()
	tamperBody.Body = io.NopCloser(bytes.NewReader(bytes.Replace(body, []byte("hi"), []byte("ho"), 1)))
	tamperHeader := ok()
	tamperHeader.Header.Set("X-Amz-Target", "AmazonSQS.DeleteQueue")
	tamperDate := ok()
	tamperDate.Header.Set("X-Amz-Date", now.Add(time.Second).Format("20060102T150405Z"))
	noAuth, _ := http.NewRequest("POST", base+"/", bytes.NewReader(body))
	garbage := ok()
	garbage.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKQQ/x")
	otherAlg := ok()
	otherAlg.Header.Set("Authorization", strings.Replace(otherAlg.Header.Get("Authorization"), "AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512", 1))
	noDate := ok()
	noDate.Header.Del("X-Amz-Date")
	noHost := ok()
	noHost.Header.Set("Authorization", strings.Replace(noHost.Header.Get("Authorization"), "SignedHeaders=", "SignedHeaders=x-amz-date;", 1))
	noHost.Header.Set("Authorization", strings.Replace(noHost.Header.Get("Authorization"), "host;", "", 1))
	badHash := signed(t, credsA, "POST", base+"/", body, map[string]string{"X-Amz-Content-Sha256": hashOf([]byte("other"))}, now, "us-east-1")
	s3 := ok()
	s3.Header.Set("Authorization", strings.Replace(s3.Header.Get("Authorization"), "/sqs/", "/s3/", 1))

	cases := []struct {
		name   string
		req    *http.Request
		code   string
		status int
	}{
		{"wrong secret", signed(t, wrongSecret, "POST", base+"/", body, jsonHeaders("SendMessage"), now, "us-east-1"), sigv4.CodeSignatureDoesNotMatch, 403},
		{"another key's secret", signed(t, mixed, "POST", base+"/", body, jsonHeaders("SendMessage"), now, "us-east-1"), sigv4.CodeSignatureDoesNotMatch, 403},
		{"unknown key", signed(t, unknown, "POST", base+"/", body, jsonHeaders("SendMessage"), now, "us-east-1"), sigv4.CodeInvalidClientTokenId, 403},
		{"20 minutes old", signed(t, credsA, "POST", base+"/", body, jsonHeaders("SendMessage"), now.Add(-20*time.Minute), "us-east-1"), sigv4.CodeRequestExpired, 400},
		{"20 minutes ahead", signed(t, credsA, "POST", base+"/", body, jsonHeaders("SendMessage"), now.Add(20*time.Minute), "us-east-1"), sigv4.CodeRequestExpired, 400},
		{"body changed", tamperBody, sigv4.CodeSignatureDoesNotMatch, 403},
		{"signed header changed", tamperHeader, sigv4.CodeSignatureDoesNotMatch, 403},
		{"date changed", tamperDate, sigv4.CodeSignatureDoesNotMatch, 403},
		{"not signed", noAuth, sigv4.CodeMissingAuthenticationToken, 403},
		{"malformed", garbage, sigv4.CodeIncompleteSignature, 403},
		{"other algorithm", otherAlg, sigv4.CodeIncompleteSignature, 403},
		{"no X-Amz-Date", noDate, sigv4.CodeIncompleteSignature, 403},
		{"host not signed", noHost, sigv4.CodeSignatureDoesNotMatch, 403},
		{"payload hash mismatch", badHash, sigv4.CodeSignatureDoesNotMatch, 403},
		{"service s3", s3, sigv4.CodeSignatureDoesNotMatch, 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := send(t, tc.req); got.Code != tc.code || got.Status != tc.status || got.Tenant != "" {
				t.Fatalf("got %+v, want %s %d", got, tc.code, tc.status)
			}
		})
	}

	// A revoked key: the same request that passed is refused.
	if got := send(t, ok()); got.Code != "" {
		t.Fatalf("before revoke: %+v", got)
	}
	keys.revoke(credsA.AccessKeyID)
	if got := send(t, ok()); got.Code != sigv4.CodeInvalidClientTokenId || got.Status != 403 {
		t.Fatalf("revoked key: %+v", got)
	}
	keys.down = true
	if got := send(t, signed(t, credsB, "GET", base+"/", nil, nil, now, "us-east-1")); got.Code != sigv4.CodeServiceUnavailable || got.Status != 503 {
		t.Fatalf("store down: %+v", got)
	}
}

// Each key acts as its own tenant: tenant A's key never yields tenant B.
func TestVerifyTenantOfKey(t *testing.T) {
	base := serve(t, sigv4.New(newKeys(), sigv4.WithClock(func() time.Time { return now })))
	for creds, want := range map[aws.Credentials]string{credsA: "tenant-a", credsB: "tenant-b"} {
		// The URL names the other tenant: the principal still comes from
		// the key (the listener then finds no such queue of its tenant).
		got := send(t, signed(t, creds, "POST", base+"/tenant-x/q", []byte(`{}`), jsonHeaders("GetQueueUrl"), now, "us-east-1"))
		if got.Tenant != want {
			t.Errorf("key %s acts as %q, want %q", creds.AccessKeyID, got.Tenant, want)
		}
	}
}

package shardserver_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/auth"
)

// Bad tokens get 401, missing scopes 403, and neither changes anything.
func TestAuthRejectsAndChangesNothing(t *testing.T) {
	n := startAuthNode(t)
	good := token(t, jwt.MapClaims{"tenant": "acme", "scope": allScopes})
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	payload, _ := json.Marshal(map[string]any{"tenant": "acme", "scope": allScopes, "aud": "quorumq", "iss": "quorumq-test", "exp": time.Now().Add(time.Hour).Unix()})
	noneTok := hdr + "." + base64.RawURLEncoding.EncodeToString(payload) + "."
	wrongKey, _ := auth.Mint("HS256", []byte("another-secret-that-is-long-enough-32b"), "", jwt.MapClaims{"tenant": "acme", "scope": allScopes, "aud": "quorumq", "iss": "quorumq-test", "exp": time.Now().Add(time.Hour).Unix()})
	cases := []struct {
		name   string
		tok    string
		status int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"none algorithm", noneTok, http.StatusUnauthorized},
		{"bad signature", wrongKey, http.StatusUnauthorized},
		{"expired", token(t, jwt.MapClaims{"tenant": "acme", "scope": allScopes, "exp": time.Now().Add(-time.Hour).Unix()}), http.StatusUnauthorized},
		{"not yet valid", token(t, jwt.MapClaims{"tenant": "acme", "scope": allScopes, "nbf": time.Now().Add(time.Hour).Unix()}), http.StatusUnauthorized},
		{"wrong audience", token(t, jwt.MapClaims{"tenant": "acme", "scope": allScopes, "aud": "other"}), http.StatusUnauthorized},
		{"wrong issuer", token(t, jwt.MapClaims{"tenant": "acme", "scope": allScopes, "iss": "someone-else"}), http.StatusUnauthorized},
		{"missing tenant", token(t, jwt.MapClaims{"scope": allScopes}), http.StatusUnauthorized},
		{"missing scope", token(t, jwt.MapClaims{"tenant": "acme", "scope": "messages:send"}), http.StatusForbidden},
	}
	for _, tc := range cases {
		status, body := n.REST(t, tc.tok, "POST", "/v1/queues", `{"name":"should-not-exist"}`)
		if status != tc.status {
			t.Errorf("%s: HTTP %d %s, want %d", tc.name, status, body, tc.status)
		}
	}
	status, body := n.REST(t, good, "GET", "/v1/queues", "")
	if status != 200 || strings.Contains(body, "should-not-exist") {
		t.Fatalf("after rejected calls: HTTP %d %s", status, body)
	}
	// gRPC says the same.
	c := qv1.NewQueueServiceClient(n.Conn)
	_, err := c.CreateQueue(tctx(t), &qv1.CreateQueueRequest{Name: "x"})
	wantReason(t, err, codes.Unauthenticated, server.ReasonUnauthenticated)
	_, err = c.CreateQueue(as(t, token(t, jwt.MapClaims{"tenant": "acme", "scope": "messages:receive"})), &qv1.CreateQueueRequest{Name: "x"})
	wantReason(t, err, codes.PermissionDenied, server.ReasonPermissionDenied)
}

// Two tenants with the same queue name never see, count, receive from or
// delete in each other's queue, on every RPC.
func TestTenantIsolation(t *testing.T) {
	n := startAuthNode(t)
	c := qv1.NewQueueServiceClient(n.Conn)
	a := as(t, token(t, jwt.MapClaims{"tenant": "alpha", "scope": allScopes}))
	b := as(t, token(t, jwt.MapClaims{"tenant": "beta", "scope": allScopes}))
	mustOK := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.CreateQueue(a, &qv1.CreateQueueRequest{Name: "orders"})
	mustOK(err)
	_, err = c.CreateQueue(a, &qv1.CreateQueueRequest{Name: "alpha-only"})
	mustOK(err)
	_, err = c.SendMessage(a, &qv1.SendMessageRequest{Queue: "orders", Body: "alpha's"})
	mustOK(err)

	// beta sees none of alpha's queues.
	l, err := c.ListQueues(b, &qv1.ListQueuesRequest{})
	mustOK(err)
	if len(l.GetQueues()) != 0 {
		t.Fatalf("beta lists %v", l.GetQueues())
	}
	for name, call := range map[string]func() error{
		"GetQueue": func() error { _, err := c.GetQueue(b, &qv1.GetQueueRequest{Name: "orders"}); return err },
		"SendMessage": func() error {
			_, err := c.SendMessage(b, &qv1.SendMessageRequest{Queue: "orders", Body: "x"})
			return err
		},
		"SendMessageBatch": func() error {
			_, err := c.SendMessageBatch(b, &qv1.SendMessageBatchRequest{Queue: "orders", Entries: []*qv1.SendMessageBatchEntry{{Id: "1", Body: "x"}}})
			return err
		},
		"ReceiveMessages": func() error { _, err := c.ReceiveMessages(b, &qv1.ReceiveMessagesRequest{Queue: "orders"}); return err },
		"UpdateQueue":     func() error { _, err := c.UpdateQueue(b, &qv1.UpdateQueueRequest{Name: "orders"}); return err },
		"PurgeQueue":      func() error { _, err := c.PurgeQueue(b, &qv1.PurgeQueueRequest{Name: "orders"}); return err },
		"DeleteQueue":     func() error { _, err := c.DeleteQueue(b, &qv1.DeleteQueueRequest{Name: "orders"}); return err },
		"RedriveMessages": func() error {
			_, err := c.RedriveMessages(b, &qv1.RedriveMessagesRequest{DeadLetterQueue: "orders"})
			return err
		},
		"PeekMessages": func() error { _, err := c.PeekMessages(b, &qv1.PeekMessagesRequest{Queue: "orders"}); return err },
		"GetMessage": func() error {
			_, err := c.GetMessage(b, &qv1.GetMessageRequest{Queue: "orders", MessageId: "x"})
			return err
		},
	} {
		err := call()
		if code, reason, _ := reasonOf(err); code != codes.NotFound || reason != server.ReasonQueueNotFound {
			t.Errorf("beta %s on alpha's queue: %v, want QUEUE_NOT_FOUND", name, err)
		}
	}
	// A DLQ naming another tenant's queue is refused.
	_, err = c.CreateQueue(b, &qv1.CreateQueueRequest{Name: "beta-work", Attributes: &qv1.QueueAttributes{DeadLetter: &qv1.DeadLetterPolicy{Queue: "alpha-only", MaxReceiveCount: 3}}})
	wantReason(t, err, codes.InvalidArgument, server.ReasonDeadLetterInvalid)

	// beta's own "orders" is a different queue: alpha's handle is refused there.
	_, err = c.CreateQueue(b, &qv1.CreateQueueRequest{Name: "orders"})
	mustOK(err)
	_, err = c.SendMessage(b, &qv1.SendMessageRequest{Queue: "orders", Body: "beta's"})
	mustOK(err)
	ra, err := c.ReceiveMessages(a, &qv1.ReceiveMessagesRequest{Queue: "orders", MaxMessages: 10})
	mustOK(err)
	if len(ra.GetMessages()) != 1 || ra.GetMessages()[0].GetBody() != "alpha's" {
		t.Fatalf("alpha received %v", ra.GetMessages())
	}
	h := ra.GetMessages()[0].GetReceiptHandle()
	_, err = c.DeleteMessage(b, &qv1.DeleteMessageRequest{Queue: "orders", ReceiptHandle: h})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidReceiptHandle)
	_, err = c.ChangeMessageVisibility(b, &qv1.ChangeMessageVisibilityRequest{Queue: "orders", ReceiptHandle: h, VisibilityTimeout: durationpb.New(0)})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidReceiptHandle)
	db, err := c.DeleteMessageBatch(b, &qv1.DeleteMessageBatchRequest{Queue: "orders", Entries: []*qv1.DeleteMessageBatchEntry{{Id: "1", ReceiptHandle: h}}})
	mustOK(err)
	if len(db.GetFailed()) != 1 || db.GetFailed()[0].GetReason() != server.ReasonInvalidReceiptHandle {
		t.Fatalf("beta batch-deleted with alpha's handle: %v", db)
	}
	// Counts are per tenant.
	qb, err := c.GetQueue(b, &qv1.GetQueueRequest{Name: "orders"})
	mustOK(err)
	if s := qb.GetQueue().GetStats(); s.GetVisible() != 1 || s.GetInFlight() != 0 {
		t.Fatalf("beta's stats %v", s)
	}
	// alpha's message is still alpha's to delete.
	_, err = c.DeleteMessage(a, &qv1.DeleteMessageRequest{Queue: "orders", ReceiptHandle: h})
	mustOK(err)
}

// Algorithm confusion: against an RS256 key, an HS256 token whose "secret"
// is the public key's PEM bytes gets 401 and changes nothing.
func TestAuthAlgorithmConfusion(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pubFile := filepath.Join(t.TempDir(), "k1.pem")
	if err := os.WriteFile(pubFile, pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	n := startNodeWithAuth(t, auth.Config{PublicKeyFiles: []string{pubFile}})
	claims := jwt.MapClaims{"tenant": "acme", "scope": allScopes, "exp": time.Now().Add(time.Hour).Unix()}
	good, err := auth.Mint("RS256", key, "k1", claims)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := auth.Mint("HS256", pubPEM, "k1", claims)
	if err != nil {
		t.Fatal(err)
	}
	if status, body := n.REST(t, forged, "POST", "/v1/queues", `{"name":"forged"}`); status != http.StatusUnauthorized {
		t.Fatalf("HS256 token signed with the RSA public key: HTTP %d %s, want 401", status, body)
	}
	status, body := n.REST(t, good, "GET", "/v1/queues", "")
	if status != http.StatusOK || strings.Contains(body, "forged") {
		t.Fatalf("valid RS256 token: HTTP %d %s", status, body)
	}
}

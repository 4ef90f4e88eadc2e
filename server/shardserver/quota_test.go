package shardserver_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

func setQuota(t *testing.T, n *authNode, tenant string, q *qv1.TenantQuota) {
	t.Helper()
	admin := as(t, token(t, jwt.MapClaims{"tenant": "ops", "scope": "cluster:admin"}))
	if _, err := qv1.NewClusterServiceClient(n.Conn).SetTenantQuota(admin, &qv1.SetTenantQuotaRequest{Tenant: tenant, Quota: q}); err != nil {
		t.Fatal(err)
	}
}

func TestQuotaQueueCount(t *testing.T) {
	n := startAuthNode(t)
	c := qv1.NewQueueServiceClient(n.Conn)
	setQuota(t, n, "acme", &qv1.TenantQuota{MaxQueues: 1})
	acme := token(t, jwt.MapClaims{"tenant": "acme", "scope": allScopes})
	if _, err := c.CreateQueue(as(t, acme), &qv1.CreateQueueRequest{Name: "one"}); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateQueue(as(t, acme), &qv1.CreateQueueRequest{Name: "two"})
	wantReason(t, err, codes.ResourceExhausted, server.ReasonQuotaExceeded)
	status, body := n.REST(t, acme, "POST", "/v1/queues", `{"name":"three"}`)
	if status != http.StatusTooManyRequests || !strings.Contains(body, server.ReasonQuotaExceeded) {
		t.Fatalf("REST create over quota: %d %s", status, body)
	}
	// Another tenant is not limited by acme's quota.
	other := as(t, token(t, jwt.MapClaims{"tenant": "other", "scope": allScopes}))
	for _, name := range []string{"one", "two"} {
		if _, err := c.CreateQueue(other, &qv1.CreateQueueRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	u, err := qv1.NewClusterServiceClient(n.Conn).GetTenantQuota(as(t, token(t, jwt.MapClaims{"tenant": "ops", "scope": "cluster:admin"})), &qv1.GetTenantQuotaRequest{Tenant: "acme"})
	if err != nil || u.GetUsage().GetQueues() != 1 || u.GetQuota().GetMaxQueues() != 1 {
		t.Fatalf("acme quota/usage: %v %v", u, err)
	}
}

func TestQuotaStoredBytes(t *testing.T) {
	n := startAuthNode(t)
	c := qv1.NewQueueServiceClient(n.Conn)
	acme := as(t, token(t, jwt.MapClaims{"tenant": "acme", "scope": allScopes}))
	if _, err := c.CreateQueue(acme, &qv1.CreateQueueRequest{Name: "q"}); err != nil {
		t.Fatal(err)
	}
	setQuota(t, n, "acme", &qv1.TenantQuota{MaxStoredBytes: 300})
	body := strings.Repeat("b", 100)
	for i := 0; i < 3; i++ {
		if _, err := c.SendMessage(acme, &qv1.SendMessageRequest{Queue: "q", Body: body}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	_, err := c.SendMessage(acme, &qv1.SendMessageRequest{Queue: "q", Body: body})
	wantReason(t, err, codes.ResourceExhausted, server.ReasonQuotaExceeded)
	// Deleting gives the room back.
	r, err := c.ReceiveMessages(acme, &qv1.ReceiveMessagesRequest{Queue: "q"})
	if err != nil || len(r.GetMessages()) != 1 {
		t.Fatalf("receive: %v %v", r, err)
	}
	if _, err := c.DeleteMessage(acme, &qv1.DeleteMessageRequest{Queue: "q", ReceiptHandle: r.GetMessages()[0].GetReceiptHandle()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendMessage(acme, &qv1.SendMessageRequest{Queue: "q", Body: body}); err != nil {
		t.Fatalf("send after a delete: %v", err)
	}
}

func TestQuotaSendRate(t *testing.T) {
	n := startAuthNode(t)
	c := qv1.NewQueueServiceClient(n.Conn)
	acme := as(t, token(t, jwt.MapClaims{"tenant": "acme", "scope": allScopes}))
	other := as(t, token(t, jwt.MapClaims{"tenant": "other", "scope": allScopes}))
	if _, err := c.CreateQueue(acme, &qv1.CreateQueueRequest{Name: "q"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateQueue(other, &qv1.CreateQueueRequest{Name: "q"}); err != nil {
		t.Fatal(err)
	}
	setQuota(t, n, "acme", &qv1.TenantQuota{MaxSendRate: 5})
	// The bucket holds one second's worth (5); the sixth send in a burst is
	// refused with a retry delay. (The refill adds at most a few tokens
	// while the loop runs, far fewer than the 50 sent.)
	refused := 0
	var retry *errdetails.RetryInfo
	for i := 0; i < 50; i++ {
		_, err := c.SendMessage(acme, &qv1.SendMessageRequest{Queue: "q", Body: "x"})
		if err == nil {
			continue
		}
		wantReason(t, err, codes.ResourceExhausted, server.ReasonQuotaExceeded)
		refused++
		st, _ := status.FromError(err)
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				retry = ri
			}
		}
	}
	if refused < 30 || retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Fatalf("refused %d of 50 sends at 5/s, retry info %v", refused, retry)
	}
	// The other tenant is not slowed down.
	for i := 0; i < 20; i++ {
		if _, err := c.SendMessage(other, &qv1.SendMessageRequest{Queue: "q", Body: "x"}); err != nil {
			t.Fatalf("other tenant send %d: %v", i, err)
		}
	}
}

package shardserver_test

import (
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

// TestRetryAtByteQuotaReturnsFirstSend: a send that was stored and is
// retried with the same idempotency key (or FIFO deduplication id) answers
// with the first message id, even when the tenant's byte quota is used up
// by then. Answering QUOTA_EXCEEDED would tell the caller it was not stored.
func TestRetryAtByteQuotaReturnsFirstSend(t *testing.T) {
	n := startAuthNode(t)
	c := qv1.NewQueueServiceClient(n.Conn)
	acme := as(t, token(t, jwt.MapClaims{"tenant": "acme", "scope": allScopes}))
	for _, q := range []*qv1.CreateQueueRequest{{Name: "q"}, {Name: "f.fifo", Attributes: &qv1.QueueAttributes{Fifo: true}}} {
		if _, err := c.CreateQueue(acme, q); err != nil {
			t.Fatal(err)
		}
	}
	setQuota(t, n, "acme", &qv1.TenantQuota{MaxStoredBytes: 250})
	body := strings.Repeat("b", 100)
	first, err := c.SendMessage(acme, &qv1.SendMessageRequest{Queue: "q", Body: body, IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	fifo, err := c.SendMessage(acme, &qv1.SendMessageRequest{Queue: "f.fifo", Body: body, GroupId: "g", DeduplicationId: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	// 200 of 250 bytes are used: a new message does not fit.
	_, err = c.SendMessage(acme, &qv1.SendMessageRequest{Queue: "q", Body: body, IdempotencyKey: "k2"})
	wantReason(t, err, codes.ResourceExhausted, server.ReasonQuotaExceeded)

	again, err := c.SendMessage(acme, &qv1.SendMessageRequest{Queue: "q", Body: body, IdempotencyKey: "k1"})
	if err != nil || again.GetMessageId() != first.GetMessageId() {
		t.Fatalf("retry at the quota: %v %v, want message %s", again, err, first.GetMessageId())
	}
	againFifo, err := c.SendMessage(acme, &qv1.SendMessageRequest{Queue: "f.fifo", Body: body, GroupId: "g", DeduplicationId: "d1"})
	if err != nil || againFifo.GetMessageId() != fifo.GetMessageId() {
		t.Fatalf("FIFO retry at the quota: %v %v, want message %s", againFifo, err, fifo.GetMessageId())
	}
	batch, err := c.SendMessageBatch(acme, &qv1.SendMessageBatchRequest{Queue: "q", Entries: []*qv1.SendMessageBatchEntry{
		{Id: "retry", Body: body, IdempotencyKey: "k1"},
	}})
	if err != nil || len(batch.GetSuccessful()) != 1 || batch.GetSuccessful()[0].GetMessageId() != first.GetMessageId() {
		t.Fatalf("batch retry at the quota: %v %v, want message %s", batch, err, first.GetMessageId())
	}
}

package shardserver_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

// Issue 18 items 3–6 on the public API: retry backoff, nacks with failed
// and released counters, time to live, max length.

func receiveOne(t *testing.T, c qv1.QueueServiceClient, queue string) *qv1.ReceivedMessage {
	t.Helper()
	r, err := c.ReceiveMessages(tctx(t), &qv1.ReceiveMessagesRequest{Queue: queue, WaitTime: durationpb.New(0)})
	if err != nil {
		t.Fatalf("receive %s: %v", queue, err)
	}
	if len(r.GetMessages()) > 1 {
		t.Fatalf("receive %s: %d messages", queue, len(r.GetMessages()))
	}
	if len(r.GetMessages()) == 0 {
		return nil
	}
	return r.GetMessages()[0]
}

// TestNackBackoff is issue 18's "done when": a message nacked as failed 4
// times with base 1s, factor 2 becomes visible 1, 2, 4 and 8 s after each
// nack. The leader's clock is a fake one, so "visible at" is exact: the
// message is not receivable a millisecond before and is at that time.
func TestNackBackoff(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	c, ctx := n.Client, tctx(t)
	fifoCreate(t, c, "retry", &qv1.QueueAttributes{RetryPolicy: &qv1.RetryPolicy{Base: durationpb.New(time.Second), Factor: 2}})
	q, err := c.GetQueue(ctx, &qv1.GetQueueRequest{Name: "retry"})
	if err != nil {
		t.Fatal(err)
	}
	if p := q.GetQueue().GetAttributes().GetRetryPolicy(); p.GetBase().AsDuration() != time.Second || p.GetFactor() != 2 || p.GetMax().AsDuration() != 12*time.Hour {
		t.Fatalf("retry policy %v, want base 1s, factor 2, max 12h", p)
	}
	fifoSend(t, c, &qv1.SendMessageRequest{Queue: "retry", Body: "job"})
	m := receiveOne(t, c, "retry")
	first := m.GetReceiptHandle()
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		if m == nil {
			t.Fatalf("nack %d: nothing received", i)
		}
		if m.GetFailedCount() != int32(i) {
			t.Fatalf("delivery %d: failed_count %d, want %d", i+1, m.GetFailedCount(), i)
		}
		nacked := clock.Now()
		r, err := c.NackMessage(ctx, &qv1.NackMessageRequest{Queue: "retry", ReceiptHandle: m.GetReceiptHandle(), Kind: qv1.NackKind_NACK_KIND_FAILED})
		if err != nil {
			t.Fatalf("nack %d: %v", i+1, err)
		}
		if got := r.GetVisibleAt().AsTime().Sub(nacked); got != want {
			t.Fatalf("nack %d: visible %v after the nack, want %v", i+1, got, want)
		}
		// Waiting for its redelivery, it counts as delayed, not in flight.
		if s := fifoStats(t, c, "retry"); s.GetDelayed() != 1 || s.GetInFlight() != 0 {
			t.Fatalf("nack %d: %s, want delayed=1", i+1, statsString(s))
		}
		clock.Advance(want - time.Millisecond)
		if early := receiveOne(t, c, "retry"); early != nil {
			t.Fatalf("nack %d: received %v before the backoff ended", i+1, want-time.Millisecond)
		}
		clock.Advance(time.Millisecond)
		m = receiveOne(t, c, "retry")
	}
	if m.GetFailedCount() != 4 || m.GetReceiveCount() != 5 || m.GetReleasedCount() != 0 {
		t.Fatalf("after 4 failed nacks: failed %d, receives %d, released %d", m.GetFailedCount(), m.GetReceiveCount(), m.GetReleasedCount())
	}
	// Peek shows the counters too.
	p, err := c.PeekMessages(ctx, &qv1.PeekMessagesRequest{Queue: "retry"})
	if err != nil || len(p.GetMessages()) != 1 || p.GetMessages()[0].GetFailedCount() != 4 {
		t.Fatalf("peek: %v %v, want failed_count 4", p, err)
	}

	// REST: POST /v1/queues/{queue}/messages:nack, released at once.
	code, body := doHTTP(t, n, http.MethodPost, "/v1/queues/retry/messages:nack",
		fmt.Sprintf(`{"receiptHandle":%q,"kind":"NACK_KIND_RELEASED"}`, m.GetReceiptHandle()))
	var rr struct{ VisibleAt time.Time }
	if code != http.StatusOK || json.Unmarshal([]byte(body), &rr) != nil || !rr.VisibleAt.Equal(clock.Now()) {
		t.Fatalf("REST nack: %d %s, want visibleAt now", code, body)
	}
	if m = receiveOne(t, c, "retry"); m.GetReleasedCount() != 1 || m.GetFailedCount() != 4 {
		t.Fatalf("after a released nack: %v", m)
	}
	// A stale handle is refused.
	_, err = c.NackMessage(ctx, &qv1.NackMessageRequest{Queue: "retry", ReceiptHandle: first})
	wantReason(t, err, codes.FailedPrecondition, server.ReasonStaleReceiptHandle)
}

// TestLeaseExpiryBacksOff: a lease that runs out is a failed delivery: the
// message comes back after the backoff from the lease's end.
func TestLeaseExpiryBacksOff(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	c := n.Client
	fifoCreate(t, c, "expiry", &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(time.Second),
		RetryPolicy: &qv1.RetryPolicy{Base: durationpb.New(5 * time.Second), Factor: 3}})
	fifoSend(t, c, &qv1.SendMessageRequest{Queue: "expiry", Body: "job"})
	if receiveOne(t, c, "expiry") == nil {
		t.Fatal("nothing received")
	}
	clock.Advance(time.Second) // the lease ends
	if m := receiveOne(t, c, "expiry"); m != nil {
		t.Fatalf("received at the lease's end: %v", m)
	}
	clock.Advance(5*time.Second - time.Millisecond)
	if m := receiveOne(t, c, "expiry"); m != nil {
		t.Fatalf("received before the backoff ended: %v", m)
	}
	clock.Advance(time.Millisecond)
	m := receiveOne(t, c, "expiry")
	if m.GetFailedCount() != 1 || m.GetReceiveCount() != 2 {
		t.Fatalf("after the backoff: %v, want failed_count 1, receive_count 2", m)
	}
}

// TestReleasedNacksDoNotCount: released deliveries do not use up the
// dead-letter policy's count; failed ones do, and the message is
// dead-lettered with reason MAX_RECEIVES.
func TestReleasedNacksDoNotCount(t *testing.T) {
	n := startNode(t, nodeOpts{})
	c, ctx := n.Client, tctx(t)
	fifoCreate(t, c, "rel-dlq", nil)
	fifoCreate(t, c, "rel", &qv1.QueueAttributes{DeadLetter: &qv1.DeadLetterPolicy{Queue: "rel-dlq", MaxReceiveCount: 1}})
	fifoSend(t, c, &qv1.SendMessageRequest{Queue: "rel", Body: "job"})
	for i := range 3 {
		m := receiveOne(t, c, "rel")
		if m == nil || m.GetReleasedCount() != int32(i) {
			t.Fatalf("receive %d: %v, want released_count %d", i+1, m, i)
		}
		r, err := c.NackMessageBatch(ctx, &qv1.NackMessageBatchRequest{Queue: "rel", Entries: []*qv1.NackMessageBatchEntry{
			{Id: "a", ReceiptHandle: m.GetReceiptHandle(), Kind: qv1.NackKind_NACK_KIND_RELEASED},
			{Id: "bad", ReceiptHandle: "!"},
		}})
		if err != nil || len(r.GetSuccessful()) != 1 || len(r.GetFailed()) != 1 || r.GetFailed()[0].GetReason() != server.ReasonInvalidReceiptHandle {
			t.Fatalf("batch nack %d: %v %v", i+1, r, err)
		}
	}
	m := receiveOne(t, c, "rel")
	if m == nil || m.GetReceiveCount() != 4 {
		t.Fatalf("fourth receive: %v", m)
	}
	if _, err := c.NackMessage(ctx, &qv1.NackMessageRequest{Queue: "rel", ReceiptHandle: m.GetReceiptHandle()}); err != nil {
		t.Fatalf("nack failed: %v", err)
	}
	if m := receiveOne(t, c, "rel"); m != nil {
		t.Fatalf("received after the delivery limit: %v", m)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		m := receiveOne(t, c, "rel-dlq")
		if m == nil {
			return errNotYet
		}
		if m.GetDeadLetterReason() != qv1.DeadLetterReason_DEAD_LETTER_REASON_MAX_RECEIVES || m.GetFailedCount() != 1 || m.GetReleasedCount() != 3 {
			t.Fatalf("dead-lettered: %v, want reason MAX_RECEIVES, failed 1, released 3", m)
		}
		return nil
	})
}

// TestMessageTTL: per-message and per-queue time to live; an expired
// message is dead-lettered with reason EXPIRED (or dropped without a DLQ).
func TestMessageTTL(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	c, ctx := n.Client, tctx(t)
	fifoCreate(t, c, "ttl-dlq", nil)
	fifoCreate(t, c, "ttl", &qv1.QueueAttributes{MessageTtl: durationpb.New(time.Minute),
		DeadLetter: &qv1.DeadLetterPolicy{Queue: "ttl-dlq", MaxReceiveCount: 5}})
	fifoSend(t, c, &qv1.SendMessageRequest{Queue: "ttl", Body: "short", Ttl: durationpb.New(2 * time.Second)})
	fifoSend(t, c, &qv1.SendMessageRequest{Queue: "ttl", Body: "queue's"})
	p, err := c.PeekMessages(ctx, &qv1.PeekMessagesRequest{Queue: "ttl"})
	if err != nil || len(p.GetMessages()) != 2 {
		t.Fatalf("peek: %v %v", p, err)
	}
	if got := p.GetMessages()[0].GetExpireTime().AsTime().Sub(clock.Now()); got != 2*time.Second {
		t.Fatalf("expire_time %v from now, want 2s", got)
	}
	if got := p.GetMessages()[1].GetExpireTime().AsTime().Sub(clock.Now()); got != time.Minute {
		t.Fatalf("queue ttl: expire_time %v from now, want 1m", got)
	}
	clock.Advance(2 * time.Second)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		m := receiveOne(t, c, "ttl-dlq")
		if m == nil {
			return errNotYet
		}
		if m.GetBody() != "short" || m.GetDeadLetterReason() != qv1.DeadLetterReason_DEAD_LETTER_REASON_EXPIRED || m.GetDeadLetterSource() != "ttl" {
			t.Fatalf("dead-lettered: %v, want short, reason EXPIRED", m)
		}
		return nil
	})
	if m := receiveOne(t, c, "ttl"); m.GetBody() != "queue's" {
		t.Fatalf("left in the queue: %v", m)
	}
	_, err = c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "ttl", Body: "x", Ttl: durationpb.New(5 * 24 * time.Hour)})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	_, err = c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "ttl-bad", Attributes: &qv1.QueueAttributes{
		MessageRetention: durationpb.New(time.Hour), MessageTtl: durationpb.New(time.Hour)}})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
}

// TestMaxLength: overflow REJECT answers QUEUE_FULL (gRPC, batch, REST
// 429); DROP_OLDEST dead-letters the oldest with reason OVERFLOW.
func TestMaxLength(t *testing.T) {
	n := startNode(t, nodeOpts{})
	c, ctx := n.Client, tctx(t)
	fifoCreate(t, c, "full", &qv1.QueueAttributes{MaxLength: 2})
	q, err := c.GetQueue(ctx, &qv1.GetQueueRequest{Name: "full"})
	if err != nil || q.GetQueue().GetAttributes().GetOverflow() != qv1.OverflowPolicy_OVERFLOW_POLICY_REJECT {
		t.Fatalf("get: %v %v, want overflow REJECT", q, err)
	}
	fifoSend(t, c, &qv1.SendMessageRequest{Queue: "full", Body: "1"})
	fifoSend(t, c, &qv1.SendMessageRequest{Queue: "full", Body: "2"})
	_, err = c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "full", Body: "3"})
	wantReason(t, err, codes.ResourceExhausted, server.ReasonQueueFull)
	b, err := c.SendMessageBatch(ctx, &qv1.SendMessageBatchRequest{Queue: "full", Entries: []*qv1.SendMessageBatchEntry{{Id: "a", Body: "3"}}})
	if err != nil || len(b.GetFailed()) != 1 || b.GetFailed()[0].GetReason() != server.ReasonQueueFull {
		t.Fatalf("batch: %v %v, want QUEUE_FULL", b, err)
	}
	code, body := doHTTP(t, n, http.MethodPost, "/v1/queues/full/messages", `{"body":"3"}`)
	if reason, _ := restErrorInfo(body); code != http.StatusTooManyRequests || reason != server.ReasonQueueFull {
		t.Fatalf("REST: %d %s, want 429 QUEUE_FULL", code, body)
	}

	fifoCreate(t, c, "drop-dlq", nil)
	fifoCreate(t, c, "drop", &qv1.QueueAttributes{MaxLength: 1, Overflow: qv1.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST,
		DeadLetter: &qv1.DeadLetterPolicy{Queue: "drop-dlq", MaxReceiveCount: 3}})
	fifoSend(t, c, &qv1.SendMessageRequest{Queue: "drop", Body: "old"})
	fifoSend(t, c, &qv1.SendMessageRequest{Queue: "drop", Body: "new"})
	if m := receiveOne(t, c, "drop"); m.GetBody() != "new" {
		t.Fatalf("left in the queue: %v, want new", m)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		m := receiveOne(t, c, "drop-dlq")
		if m == nil {
			return errNotYet
		}
		if m.GetBody() != "old" || m.GetDeadLetterReason() != qv1.DeadLetterReason_DEAD_LETTER_REASON_OVERFLOW {
			t.Fatalf("dead-lettered: %v, want old, reason OVERFLOW", m)
		}
		return nil
	})
}

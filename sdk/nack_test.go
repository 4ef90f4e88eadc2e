package quorumq_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	quorumq "github.com/quorumq/quorumq/sdk"
)

// TestNackAndRetryPolicy: Message.Nack as failed waits out the queue's
// retry policy, as released comes back at once; the counters come back on
// the redelivered message.
func TestNackAndRetryPolicy(t *testing.T) {
	c := dial(t, endpoints)
	ctx := tctx(t, 30*time.Second)
	policy := &quorumq.QueueRetryPolicy{Base: 200 * time.Millisecond, Factor: 2, Max: time.Minute}
	q := createQueue(t, c, queueName(t), quorumq.QueueAttributes{RetryPolicy: policy})
	info, err := c.GetQueue(ctx, q.Name())
	if err != nil || *info.Attributes.RetryPolicy != *policy {
		t.Fatalf("get queue: %+v %v, want retry policy %+v", info.Attributes.RetryPolicy, err, policy)
	}
	if _, err := q.Send(ctx, quorumq.OutgoingMessage{Body: "job"}); err != nil {
		t.Fatal(err)
	}
	got, err := q.Receive(ctx, quorumq.WaitTime(5*time.Second))
	if err != nil || len(got) != 1 {
		t.Fatalf("receive: %v %v", got, err)
	}
	before := time.Now()
	at, err := got[0].Nack(ctx, quorumq.NackFailed, 0)
	if err != nil {
		t.Fatalf("nack: %v", err)
	}
	if d := at.Sub(before); d < 100*time.Millisecond || d > 2*time.Second {
		t.Fatalf("visible %v after the nack, want about 200ms", d)
	}
	got, err = q.Receive(ctx, quorumq.WaitTime(5*time.Second))
	if err != nil || len(got) != 1 || got[0].FailedCount != 1 || got[0].ReceiveCount != 2 {
		t.Fatalf("redelivery: %+v %v, want failed 1, received 2", got, err)
	}
	if time.Now().Before(at) {
		t.Fatalf("redelivered before %v", at)
	}
	if _, err := got[0].Nack(ctx, quorumq.NackReleased, 0); err != nil {
		t.Fatalf("release: %v", err)
	}
	got, err = q.Receive(ctx, quorumq.WaitTime(5*time.Second))
	if err != nil || len(got) != 1 || got[0].ReleasedCount != 1 || got[0].FailedCount != 1 {
		t.Fatalf("after a release: %+v %v, want released 1, failed 1", got, err)
	}
	if err := q.NackBatch(ctx, []quorumq.Nack{{ReceiptHandle: got[0].ReceiptHandle, Kind: quorumq.NackFailed, RedeliverAfter: time.Hour}}); err != nil {
		t.Fatalf("nack batch: %v", err)
	}
	if st, err := stats(ctx, c, q.Name()); err != nil || st.Delayed != 1 || st.InFlight != 0 {
		t.Fatalf("stats: %+v %v, want one delayed", st, err)
	}
}

// TestConsumerServerBackoff: with NackBackoff ServerBackoff a failed
// handler nacks as failed, and the queue's policy times the redelivery.
func TestConsumerServerBackoff(t *testing.T) {
	c := dial(t, endpoints)
	ctx := tctx(t, 30*time.Second)
	q := createQueue(t, c, queueName(t), quorumq.QueueAttributes{RetryPolicy: &quorumq.QueueRetryPolicy{Base: 100 * time.Millisecond}})
	if _, err := q.Send(ctx, quorumq.OutgoingMessage{Body: "job"}); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		fails []int
	)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	err := q.NewConsumer(quorumq.ConsumerOptions{NackBackoff: quorumq.ServerBackoff, WaitTime: time.Second}).Run(runCtx, func(_ context.Context, m *quorumq.Message) error {
		mu.Lock()
		defer mu.Unlock()
		fails = append(fails, m.FailedCount)
		if len(fails) < 3 {
			return errors.New("not yet")
		}
		stop()
		return nil
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(fails) != 3 || fails[0] != 0 || fails[1] != 1 || fails[2] != 2 {
		t.Fatalf("failed counts seen by the handler: %v, want [0 1 2]", fails)
	}
}

// TestSendTTLAndQueueFull: a message's TTL, and ErrQueueFull at MaxLength.
func TestSendTTLAndQueueFull(t *testing.T) {
	c := dial(t, endpoints)
	ctx := tctx(t, 30*time.Second)
	q := createQueue(t, c, queueName(t), quorumq.QueueAttributes{MaxLength: 1, MessageTTL: time.Hour})
	info, err := c.GetQueue(ctx, q.Name())
	if err != nil || info.Attributes.MaxLength != 1 || info.Attributes.MessageTTL != time.Hour || info.Attributes.Overflow != quorumq.OverflowReject {
		t.Fatalf("get queue: %+v %v", info.Attributes, err)
	}
	if _, err := q.Send(ctx, quorumq.OutgoingMessage{Body: "short", TTL: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Send(ctx, quorumq.OutgoingMessage{Body: "more"}); !errors.Is(err, quorumq.ErrQueueFull) {
		t.Fatalf("send into a full queue: %v, want ErrQueueFull", err)
	}
	// The first expires (dropped: no DLQ), which makes room.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := q.Send(ctx, quorumq.OutgoingMessage{Body: "more"})
		if err == nil {
			break
		}
		if !errors.Is(err, quorumq.ErrQueueFull) || time.Now().After(deadline) {
			t.Fatalf("send after the ttl: %v", err)
		}
		<-time.After(50 * time.Millisecond)
	}
	got, err := q.Receive(ctx, quorumq.WaitTime(5*time.Second))
	if err != nil || len(got) != 1 || got[0].Body != "more" {
		t.Fatalf("receive: %+v %v, want more", got, err)
	}
}

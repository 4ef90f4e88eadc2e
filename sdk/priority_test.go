package quorumq_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	quorumq "github.com/quorumq/quorumq/sdk"
)

// TestSendPriorityAndFairness: OutgoingMessage.Priority orders receives
// (highest first) and comes back on Message and PeekedMessage; the queue
// attributes PriorityMode, PriorityWeight and Fairness round-trip.
func TestSendPriorityAndFairness(t *testing.T) {
	c := dial(t, endpoints)
	ctx := tctx(t, 20*time.Second)
	q := createQueue(t, c, queueName(t), quorumq.QueueAttributes{PriorityMode: "weighted", PriorityWeight: 5})
	info, err := c.GetQueue(ctx, q.Name())
	if err != nil || info.Attributes.PriorityMode != "weighted" || info.Attributes.PriorityWeight != 5 {
		t.Fatalf("get queue: %+v %v", info, err)
	}
	if _, err := q.SendBatch(ctx, []quorumq.OutgoingMessage{
		{Body: "low", Priority: quorumq.Priority(1)}, {Body: "default"}, {Body: "high", Priority: quorumq.Priority(8)},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Send(ctx, quorumq.OutgoingMessage{Body: "bad", Priority: quorumq.Priority(12)}); !errors.Is(err, quorumq.ErrInvalidArgument) {
		t.Fatalf("priority 12: %v, want ErrInvalidArgument", err)
	}
	page, err := q.Peek(ctx)
	if err != nil || len(page.Messages) != 3 || page.Messages[2].Priority != 8 || page.Messages[1].Priority != 4 {
		t.Fatalf("peek: %+v %v", page, err)
	}
	got, err := q.Receive(ctx, quorumq.MaxMessages(3))
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, m := range got {
		order = append(order, fmt.Sprintf("%s/%d", m.Body, m.Priority))
	}
	if fmt.Sprint(order) != "[high/8 default/4 low/1]" {
		t.Errorf("receive order %v", order)
	}

	fair := createQueue(t, c, queueName(t)+"-fair", quorumq.QueueAttributes{Fairness: "group"})
	if info, err := c.GetQueue(ctx, fair.Name()); err != nil || info.Attributes.Fairness != "group" {
		t.Fatalf("fair queue: %+v %v", info, err)
	}
}

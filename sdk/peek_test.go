package quorumq_test

import (
	"errors"
	"testing"
	"time"

	quorumq "github.com/quorumq/quorumq/sdk"
)

// TestQueuePeekAndGetMessage: Peek pages through the queue without
// leasing (a received message shows as in flight with its count, the rest
// stay receivable), and GetMessage finds a message by id or says
// ErrMessageNotFound.
func TestQueuePeekAndGetMessage(t *testing.T) {
	c := dial(t, endpoints)
	ctx := tctx(t, 20*time.Second)
	q := createQueue(t, c, queueName(t), quorumq.QueueAttributes{})
	var ids []string
	for _, b := range []string{"a", "b", "c"} {
		r, err := q.Send(ctx, quorumq.OutgoingMessage{Body: b, Tags: []string{"t-" + b}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.MessageID)
	}
	got, err := q.Receive(ctx, quorumq.MaxMessages(1), quorumq.VisibilityTimeout(time.Hour))
	if err != nil || len(got) != 1 || got[0].Body != "a" {
		t.Fatalf("receive: %v %v", got, err)
	}
	var seen []quorumq.PeekedMessage
	tok := ""
	for range 5 {
		page, err := q.Peek(ctx, quorumq.PageSize(2), quorumq.PageToken(tok))
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, page.Messages...)
		if tok = page.NextPageToken; tok == "" {
			break
		}
	}
	if len(seen) != 3 || seen[0].ID != ids[0] || seen[0].State != quorumq.StateInFlight || seen[0].ReceiveCount != 1 ||
		seen[1].State != quorumq.StateVisible || seen[2].Body != "c" {
		t.Fatalf("peeked %+v", seen)
	}
	page, err := q.Peek(ctx, quorumq.PeekStates(quorumq.StateVisible), quorumq.PeekFilter(quorumq.TagFilter{Any: []string{"t-a", "t-c"}}))
	if err != nil || len(page.Messages) != 1 || page.Messages[0].Body != "c" {
		t.Fatalf("filtered peek: %+v %v", page, err)
	}
	m, err := q.GetMessage(ctx, ids[1])
	if err != nil || m.Body != "b" || m.ReceiveCount != 0 {
		t.Fatalf("get: %+v %v", m, err)
	}
	if _, err := q.GetMessage(ctx, "00000000000000000000000000000000000000000000000000000"); !errors.Is(err, quorumq.ErrMessageNotFound) {
		t.Fatalf("get of an unknown id: %v, want ErrMessageNotFound", err)
	}
	rest, err := q.Receive(ctx, quorumq.MaxMessages(10))
	if err != nil || len(rest) != 2 {
		t.Fatalf("receive after peek: %d messages, %v; want b and c", len(rest), err)
	}
}

package quorumq_test

import (
	"errors"
	"testing"
	"time"

	quorumq "github.com/quorumq/quorumq/sdk"
)

func TestQueueCancelAndReschedule(t *testing.T) {
	c := dial(t, endpoints)
	ctx := tctx(t, 20*time.Second)
	q := createQueue(t, c, queueName(t), quorumq.QueueAttributes{MessageRetention: 24 * time.Hour})

	// A delayed message brought forward is received at once.
	sent, err := q.Send(ctx, quorumq.OutgoingMessage{Body: "soon", Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	at, err := q.Reschedule(ctx, sent.MessageID, time.Now().Add(-time.Minute))
	if err != nil || at.After(time.Now().Add(time.Minute)) {
		t.Fatalf("reschedule: %v %v, want visible now", at, err)
	}
	got, err := q.Receive(ctx, quorumq.WaitTime(5*time.Second))
	if err != nil || len(got) != 1 || got[0].ID != sent.MessageID {
		t.Fatalf("receive: %v %v, want %s", got, err, sent.MessageID)
	}
	if err := q.Cancel(ctx, sent.MessageID); !errors.Is(err, quorumq.ErrMessageAlreadyReceived) {
		t.Fatalf("cancel of a received message: %v, want ErrMessageAlreadyReceived", err)
	}

	// A scheduled message cancelled: gone, and a second cancel finds nothing.
	later, err := q.Send(ctx, quorumq.OutgoingMessage{Body: "later", Delay: 12 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Reschedule(ctx, later.MessageID, time.Now().Add(48*time.Hour)); !errors.Is(err, quorumq.ErrInvalidArgument) {
		t.Fatalf("reschedule past the retention: %v, want ErrInvalidArgument", err)
	}
	if err := q.Cancel(ctx, later.MessageID); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if err := q.Cancel(ctx, later.MessageID); !errors.Is(err, quorumq.ErrMessageNotFound) {
		t.Fatalf("second cancel: %v, want ErrMessageNotFound", err)
	}
	st, err := stats(ctx, c, q.Name())
	if err != nil || st.Delayed != 0 {
		t.Fatalf("stats after cancel: %+v %v, want nothing delayed", st, err)
	}
}

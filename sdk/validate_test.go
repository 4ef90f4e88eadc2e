package quorumq_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	quorumq "github.com/quorumq/quorumq/sdk"
)

// Entries whose text is not valid UTF-8 (protobuf cannot marshal them)
// fail alone with INVALID_ARGUMENT; the rest of the batch is stored. The
// same holds through the Producer and for a single Send.
func TestSendBatchInvalidEntryFailsAlone(t *testing.T) {
	c := dial(t, endpoints)
	name := queueName(t)
	q := createQueue(t, c, name, quorumq.QueueAttributes{})
	ctx := tctx(t, 30*time.Second)

	msgs := []quorumq.OutgoingMessage{
		{Body: "a"},
		{Body: "bad \xff body"},
		{Body: "b", Tags: []string{"t"}},
		{Body: "c", Attributes: map[string]string{"k": "\xc3"}},
		{Body: "d", Tags: []string{"\xfe"}},
		{Body: "e"},
	}
	res, err := q.SendBatch(ctx, msgs)
	var be *quorumq.BatchError
	if !errors.As(err, &be) || be.Failed != 3 {
		t.Fatalf("SendBatch: %v, want a BatchError of 3 entries", err)
	}
	for i, field := range map[int]string{1: "body", 3: "attributes", 4: "tags"} {
		var e *quorumq.Error
		if !errors.As(be.Errors[i], &e) || !errors.Is(e, quorumq.ErrInvalidArgument) || e.Code != codes.InvalidArgument || e.Field != field {
			t.Errorf("entry %d: %v, want INVALID_ARGUMENT on %s", i, be.Errors[i], field)
		}
	}
	for _, i := range []int{0, 2, 5} {
		if be.Errors[i] != nil || res[i].MessageID == "" {
			t.Errorf("entry %d: %v, result %+v", i, be.Errors[i], res[i])
		}
	}

	p := q.NewProducer(quorumq.ProducerOptions{Linger: 50 * time.Millisecond})
	var futures []*quorumq.Future
	for _, b := range []string{"f", "\xff", "g"} {
		f, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: b})
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i, f := range futures {
		_, err := f.Wait(ctx)
		if (i == 1) != errors.Is(err, quorumq.ErrInvalidArgument) || (i != 1 && err != nil) {
			t.Errorf("published %d: %v", i, err)
		}
	}

	_, err = q.Send(ctx, quorumq.OutgoingMessage{Body: "h", GroupID: "\xff"})
	if !errors.Is(err, quorumq.ErrInvalidArgument) || status.Code(err) != codes.InvalidArgument {
		t.Errorf("Send with an invalid group id: %v", err)
	}

	got := drainQueue(t, q)
	slices.Sort(got)
	if want := []string{"a", "b", "e", "f", "g"}; !slices.Equal(got, want) {
		t.Errorf("stored %q, want %q", got, want)
	}
}

// PurgeQueue is not idempotent (a second purge removes what was sent in
// between), so a failed attempt is not retried, even on a retryable code.
func TestPurgeNotRetried(t *testing.T) {
	var mu sync.Mutex
	attempts := 0
	f := &fakeServer{purge: func(context.Context, *qv1.PurgeQueueRequest) (*qv1.PurgeQueueResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		return nil, reasonStatus(codes.Unavailable, quorumq.ReasonLeadershipLost, 0)
	}}
	c := dial(t, []string{startFake(t, f)}, quorumq.WithRetryPolicy(quorumq.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}))
	err := c.PurgeQueue(tctx(t, 10*time.Second), "q")
	if !errors.Is(err, quorumq.ErrUnavailable) {
		t.Errorf("PurgeQueue: %v, want the LEADERSHIP_LOST error", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts != 1 {
		t.Errorf("PurgeQueue made %d attempts, want 1", attempts)
	}
}

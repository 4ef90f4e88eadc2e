package quorumq_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	quorumq "github.com/quorumq/quorumq/sdk"
)

// Five messages of one FIFO group, Concurrency 5, the first handler
// failing once: the group is handled strictly in order, one at a time, and
// nothing is deleted ahead of an earlier message of the group.
func TestConsumerFIFOGroupInOrder(t *testing.T) {
	var mu sync.Mutex
	bodyOf := map[string]string{} // receipt handle -> body
	var deleted []string          // bodies, in the order of the delete calls
	spy := quorumq.WithDialOptions(grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if r, ok := req.(*qv1.DeleteMessageBatchRequest); ok {
				mu.Lock()
				for _, e := range r.GetEntries() {
					deleted = append(deleted, bodyOf[e.GetReceiptHandle()])
				}
				mu.Unlock()
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}))
	c := dial(t, endpoints, spy)
	name := queueName(t) + ".fifo"
	q := createQueue(t, c, name, quorumq.QueueAttributes{FIFO: true, VisibilityTimeout: time.Minute})
	ctx := tctx(t, 60*time.Second)
	var msgs []quorumq.OutgoingMessage
	for i := 1; i <= 5; i++ {
		msgs = append(msgs, quorumq.OutgoingMessage{Body: fmt.Sprintf("m%d", i), GroupID: "g", DeduplicationID: fmt.Sprint(i)})
	}
	if _, err := q.SendBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	var handled []string // "m1!" for the failure
	var running, most atomic.Int32
	failed := false
	err := q.NewConsumer(quorumq.ConsumerOptions{
		// Unary: the spy sees delete calls (the stream path: TestConsumeStreamFIFO).
		Unary:       true,
		Concurrency: 5,
		// Short polls: a long poll is not woken when a delete of a group's
		// head makes the next message deliverable (store: Woken not set).
		WaitTime:    time.Second,
		NackBackoff: func(*quorumq.Message, error) time.Duration { return 100 * time.Millisecond },
		OnError:     func(*quorumq.Message, error) {},
	}).Run(runCtx, func(_ context.Context, m *quorumq.Message) error {
		n := running.Add(1)
		defer running.Add(-1)
		if n > most.Load() {
			most.Store(n)
		}
		// Give parallel handlers of the group (the defect) time to overlap.
		<-time.After(20 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		bodyOf[m.ReceiptHandle] = m.Body
		if m.Body == "m1" && !failed {
			failed = true
			handled = append(handled, "m1!")
			return errors.New("first attempt fails")
		}
		handled = append(handled, m.Body)
		if m.Body == "m5" {
			stop()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got, want := strings.Join(handled, " "), "m1! m1 m2 m3 m4 m5"; got != want {
		t.Errorf("handled %s, want %s", got, want)
	}
	if most.Load() != 1 {
		t.Errorf("up to %d handlers of one group ran at once, want 1", most.Load())
	}
	if got, want := strings.Join(deleted, " "), "m1 m2 m3 m4 m5"; got != want {
		t.Errorf("deleted %s, want %s", got, want)
	}
}

// A heartbeat that finds the lease lost (another receive took the
// message) cancels the handler's context, and the consumer neither
// deletes nor nacks what it no longer owns.
func TestConsumerLeaseLostCancelsHandler(t *testing.T) {
	c := dial(t, endpoints)
	name := queueName(t)
	q := createQueue(t, c, name, quorumq.QueueAttributes{VisibilityTimeout: time.Minute})
	ctx := tctx(t, 60*time.Second)
	if _, err := q.Send(ctx, quorumq.OutgoingMessage{Body: "job"}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	started := make(chan *quorumq.Message, 1)
	cancelled := make(chan struct{})
	var lost atomic.Bool
	runErr := make(chan error, 1)
	go func() {
		runErr <- q.NewConsumer(quorumq.ConsumerOptions{
			// Prefetch 1: no receive of ours in flight races the rival's.
			Concurrency: 1, Prefetch: 1, VisibilityTimeout: 5 * time.Second, HeartbeatInterval: 100 * time.Millisecond,
			OnError: func(_ *quorumq.Message, err error) {
				if errors.Is(err, quorumq.ErrStaleReceipt) {
					lost.Store(true)
				}
			},
		}).Run(runCtx, func(hctx context.Context, m *quorumq.Message) error {
			started <- m
			select {
			case <-hctx.Done():
				close(cancelled)
				return hctx.Err()
			case <-runCtx.Done():
				return nil // not cancelled: Run's end; the drain would wait for us
			}
		})
	}()
	var m *quorumq.Message
	select {
	case m = <-started:
	case <-ctx.Done():
		t.Fatal("handler never started")
	}

	// Another consumer takes the message: make it visible with the
	// handle, then receive it (repeat if a heartbeat extended it between).
	rival := dial(t, endpoints).Queue(name)
	var taken *quorumq.Message
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if err := rival.ChangeVisibility(ctx, m.ReceiptHandle, 0); err != nil {
			return err
		}
		got, err := rival.Receive(ctx, quorumq.WaitTime(0), quorumq.VisibilityTimeout(time.Minute))
		if err != nil {
			return err
		}
		if len(got) == 0 {
			return errors.New("rival received nothing")
		}
		taken = got[0]
		return nil
	})
	select {
	case <-cancelled:
	case <-time.After(20 * time.Second):
		t.Fatal("handler context not cancelled after its lease was lost")
	}
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !lost.Load() {
		t.Error("the lost lease was not reported")
	}
	// The rival's lease is intact: the cancelled handler did not nack it.
	st, err := stats(ctx, c, name)
	if err != nil || st.InFlight != 1 {
		t.Errorf("queue holds %+v (%v), want the rival's message in flight", st, err)
	}
	if err := taken.Delete(ctx); err != nil {
		t.Errorf("rival's delete: %v", err)
	}
}

// A receive that fails with a retryable error is replayed with the same
// receive_attempt_id (and size), so messages its lost answer leased come
// back instead of staying in flight; the next receive has a new id.
func TestConsumerReplaysFailedReceive(t *testing.T) {
	var mu sync.Mutex
	var attempts []*qv1.ReceiveMessagesRequest
	var deleted, handled []string
	// The run stops once the message is handled and the receive after the
	// replay has started (in either order: they run concurrently).
	ctx, stop := context.WithCancel(tctx(t, 20*time.Second))
	defer stop()
	stopWhenSeen := func() { // callers hold mu
		if len(handled) > 0 && len(attempts) >= 3 {
			stop()
		}
	}
	f := &fakeServer{
		receive: func(ctx context.Context, r *qv1.ReceiveMessagesRequest) (*qv1.ReceiveMessagesResponse, error) {
			mu.Lock()
			attempts = append(attempts, r)
			n := len(attempts)
			stopWhenSeen()
			mu.Unlock()
			switch n {
			case 1: // leased, but the answer is lost
				return nil, reasonStatus(codes.Unavailable, quorumq.ReasonLeadershipLost, 0)
			case 2:
				return &qv1.ReceiveMessagesResponse{Messages: []*qv1.ReceivedMessage{{MessageId: "m", ReceiptHandle: "h1", ReceiveCount: 1}}}, nil
			}
			if r.GetWaitTime().AsDuration() == 0 { // the replay at shutdown
				return &qv1.ReceiveMessagesResponse{}, nil
			}
			<-ctx.Done() // a long poll that finds nothing
			return nil, ctx.Err()
		},
		deletes: func(_ context.Context, r *qv1.DeleteMessageBatchRequest) (*qv1.DeleteMessageBatchResponse, error) {
			mu.Lock()
			defer mu.Unlock()
			for _, e := range r.GetEntries() {
				deleted = append(deleted, e.GetReceiptHandle())
			}
			return &qv1.DeleteMessageBatchResponse{}, nil
		},
		changes: func(context.Context, *qv1.ChangeMessageVisibilityBatchRequest) (*qv1.ChangeMessageVisibilityBatchResponse, error) {
			return &qv1.ChangeMessageVisibilityBatchResponse{}, nil
		},
		nacks: func(context.Context, *qv1.NackMessageBatchRequest) (*qv1.NackMessageBatchResponse, error) {
			return &qv1.NackMessageBatchResponse{}, nil
		},
	}
	c := dial(t, []string{startFake(t, f)}, quorumq.WithRetryPolicy(quorumq.RetryPolicy{MaxAttempts: 1, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}))
	err := c.Queue("q").NewConsumer(quorumq.ConsumerOptions{Concurrency: 4, Receives: 1, VisibilityTimeout: time.Minute, OnError: func(*quorumq.Message, error) {}}).Run(ctx,
		func(_ context.Context, m *quorumq.Message) error {
			mu.Lock()
			handled = append(handled, m.ID)
			stopWhenSeen()
			mu.Unlock()
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) < 3 {
		t.Fatalf("%d receives, want the failed one, its replay and a next one", len(attempts))
	}
	first, replay, next := attempts[0], attempts[1], attempts[2]
	if first.GetReceiveAttemptId() == "" || replay.GetReceiveAttemptId() != first.GetReceiveAttemptId() || replay.GetMaxMessages() != first.GetMaxMessages() {
		t.Errorf("receive after a failed one: attempt id %q max %d, want the failed one's %q max %d",
			replay.GetReceiveAttemptId(), replay.GetMaxMessages(), first.GetReceiveAttemptId(), first.GetMaxMessages())
	}
	if next.GetReceiveAttemptId() == first.GetReceiveAttemptId() {
		t.Errorf("the receive after a successful one reuses attempt id %q", first.GetReceiveAttemptId())
	}
	if !slices.Equal(handled, []string{"m"}) || !slices.Equal(deleted, []string{"h1"}) {
		t.Errorf("handled %v deleted %v, want [m] and [h1]", handled, deleted)
	}
}

// Different FIFO groups still run in parallel: a handler of group a waits
// for one of group b.
func TestConsumerFIFOGroupsInParallel(t *testing.T) {
	c := dial(t, endpoints)
	name := queueName(t) + ".fifo"
	q := createQueue(t, c, name, quorumq.QueueAttributes{FIFO: true, VisibilityTimeout: time.Minute})
	ctx := tctx(t, 30*time.Second)
	if _, err := q.SendBatch(ctx, []quorumq.OutgoingMessage{
		{Body: "a1", GroupID: "a", DeduplicationID: "a1"},
		{Body: "b1", GroupID: "b", DeduplicationID: "b1"},
	}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	bStarted := make(chan struct{})
	var done atomic.Int32
	err := q.NewConsumer(quorumq.ConsumerOptions{Concurrency: 2, WaitTime: time.Second}).Run(runCtx, func(hctx context.Context, m *quorumq.Message) error {
		if m.GroupID == "a" {
			select {
			case <-bStarted:
			case <-hctx.Done():
				return hctx.Err()
			case <-time.After(10 * time.Second):
				t.Error("group b did not start while group a's handler ran")
			}
		} else {
			close(bStarted)
		}
		if done.Add(1) == 2 {
			stop()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if done.Load() != 2 {
		t.Errorf("%d messages handled, want 2", done.Load())
	}
}

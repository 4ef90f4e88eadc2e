package quorumq_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	quorumq "github.com/quorumq/quorumq/sdk"
)

// A 5s handler on a message with a 2s visibility timeout keeps the lease
// by heartbeats: nobody else receives the message while it runs, and it
// is deleted afterwards.
func TestSlowHandlerKeepsLease(t *testing.T) {
	var cnt calls
	c := dial(t, endpoints, cnt.option())
	name := queueName(t)
	q := createQueue(t, c, name, quorumq.QueueAttributes{VisibilityTimeout: 2 * time.Second})
	ctx := tctx(t, 60*time.Second)
	if _, err := q.Send(ctx, quorumq.OutgoingMessage{Body: "slow job"}); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	started := make(chan *quorumq.Message, 1)
	var calls atomic.Int32
	runErr := make(chan error, 1)
	go func() {
		runErr <- q.NewConsumer(quorumq.ConsumerOptions{Concurrency: 1}).Run(runCtx, func(hctx context.Context, m *quorumq.Message) error {
			if calls.Add(1) == 1 {
				started <- m
			}
			select { // the work: five seconds
			case <-time.After(5 * time.Second):
				return nil
			case <-hctx.Done():
				return hctx.Err()
			}
		})
	}()
	var m *quorumq.Message
	select {
	case m = <-started:
	case <-ctx.Done():
		t.Fatal("handler never started")
	}
	handlerDone := time.Now().Add(5 * time.Second)

	// Meanwhile a rival consumer long-polls the queue: it must get
	// nothing while the handler runs (the 2s lease ends 2.5 times over).
	rival := dial(t, endpoints).Queue(name)
	for time.Until(handlerDone) > 600*time.Millisecond {
		wait := min(time.Until(handlerDone)-500*time.Millisecond, 3*time.Second).Truncate(time.Millisecond)
		got, err := rival.Receive(ctx, quorumq.WaitTime(wait), quorumq.VisibilityTimeout(0))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 0 {
			t.Fatalf("message redelivered while its handler runs (receive count %d)", got[0].ReceiveCount)
		}
	}
	if n := cnt.count("ChangeMessageVisibilityBatch"); n < 4 {
		t.Errorf("%d heartbeats in ~4.5s with a 2s lease, want at least 4", n)
	}

	// Deleted after the handler: the queue empties, and a receive finds nothing.
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		st, err := stats(ctx, c, name)
		if err != nil {
			return err
		}
		if st.Visible+st.InFlight+st.Delayed != 0 {
			return fmt.Errorf("queue still holds %+v", st)
		}
		return nil
	})
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if calls.Load() != 1 {
		t.Errorf("handler called %d times", calls.Load())
	}
	if m.ReceiveCount != 1 {
		t.Errorf("receive count %d", m.ReceiveCount)
	}
	if got := drainQueue(t, q); len(got) != 0 {
		t.Errorf("left in the queue: %q", got)
	}
}

// A failing handler's message comes back after the nack backoff and is
// handled again; a panic counts as a failure.
func TestHandlerErrorNacks(t *testing.T) {
	c := dial(t, endpoints)
	name := queueName(t)
	q := createQueue(t, c, name, quorumq.QueueAttributes{VisibilityTimeout: time.Minute})
	ctx := tctx(t, 30*time.Second)
	if _, err := q.SendBatch(ctx, []quorumq.OutgoingMessage{{Body: "fail"}, {Body: "panic"}}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var mu sync.Mutex
	seen := map[string][]int{}
	var reported atomic.Int32
	err := q.NewConsumer(quorumq.ConsumerOptions{
		Concurrency: 2,
		NackBackoff: func(*quorumq.Message, error) time.Duration { return 100 * time.Millisecond },
		OnError:     func(*quorumq.Message, error) { reported.Add(1) },
	}).Run(runCtx, func(_ context.Context, m *quorumq.Message) error {
		mu.Lock()
		defer mu.Unlock()
		seen[m.Body] = append(seen[m.Body], m.ReceiveCount)
		if m.ReceiveCount == 1 {
			if m.Body == "panic" {
				panic("boom")
			}
			return errors.New("try again")
		}
		if len(seen["fail"]) == 2 && len(seen["panic"]) == 2 {
			stop()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"fail", "panic"} {
		if fmt.Sprint(seen[b]) != "[1 2]" {
			t.Errorf("%s: receive counts %v, want [1 2]", b, seen[b])
		}
	}
	if reported.Load() != 2 {
		t.Errorf("%d errors reported, want 2", reported.Load())
	}
	checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		st, err := stats(ctx, c, name)
		if err == nil && st.Visible+st.InFlight != 0 {
			err = fmt.Errorf("queue holds %+v", st)
		}
		return err
	})
}

// Shutting a consumer down under load loses nothing and leaves nothing
// in flight: handlers running at the cancel finish and are deleted,
// messages received but not started are released at once.
func TestShutdownDuringLoad(t *testing.T) {
	c := dial(t, endpoints)
	name := queueName(t)
	// A long lease: anything left in flight after Run would stay so for a minute.
	q := createQueue(t, c, name, quorumq.QueueAttributes{VisibilityTimeout: time.Minute})
	ctx := tctx(t, 90*time.Second)

	const total = 400
	var mu sync.Mutex
	sent := map[string]bool{}
	handled := map[string]int{}
	p := q.NewProducer(quorumq.ProducerOptions{BatchSize: 20, Linger: 2 * time.Millisecond,
		OnResult: func(_ *quorumq.OutgoingMessage, r quorumq.SendResult, err error) {
			if err != nil {
				t.Errorf("send: %v", err)
				return
			}
			mu.Lock()
			sent[r.MessageID] = true
			mu.Unlock()
		}})
	producerDone := make(chan error, 1)
	go func() {
		for i := range total {
			if _, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: fmt.Sprint(i)}); err != nil {
				producerDone <- err
				return
			}
		}
		producerDone <- p.Close(ctx)
	}()

	handler := func(cancelAfter int, stop context.CancelFunc) quorumq.Handler {
		return func(hctx context.Context, m *quorumq.Message) error {
			select { // work of 1–20 ms
			case <-time.After(time.Duration(1+rand.IntN(20)) * time.Millisecond):
			case <-hctx.Done():
				return hctx.Err()
			}
			mu.Lock()
			handled[m.ID]++
			n := len(handled)
			mu.Unlock()
			if n == cancelAfter {
				stop()
			}
			return nil
		}
	}

	// First consumer: stopped mid-load, while sends still arrive.
	runCtx, stop := context.WithCancel(ctx)
	if err := q.NewConsumer(quorumq.ConsumerOptions{Concurrency: 8, WaitTime: 5 * time.Second}).Run(runCtx, handler(total/3, stop)); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// Nothing of the stopped consumer's stays in flight (the lease is a
	// minute; deletes and releases are sent before Run returns).
	checkFor(t, 2*time.Second, 20*time.Millisecond, func() error {
		st, err := stats(ctx, c, name)
		if err == nil && st.InFlight != 0 {
			err = fmt.Errorf("%d in flight after Run returned", st.InFlight)
		}
		return err
	})
	t.Logf("in flight 0 within %v of Run returning", time.Since(stopped))
	mu.Lock()
	first := len(handled)
	mu.Unlock()
	if first < total/3 || first >= total {
		t.Fatalf("first consumer handled %d of %d", first, total)
	}
	if err := <-producerDone; err != nil {
		t.Fatal(err)
	}

	// Second consumer: finishes the rest.
	runCtx, stop = context.WithCancel(ctx)
	if err := q.NewConsumer(quorumq.ConsumerOptions{Concurrency: 8, WaitTime: 5 * time.Second}).Run(runCtx, handler(total, stop)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != total {
		t.Fatalf("%d of %d sends acknowledged", len(sent), total)
	}
	for id := range sent {
		if handled[id] == 0 {
			t.Errorf("message %s never handled", id)
		}
	}
	dups := 0
	for _, n := range handled {
		dups += n - 1
	}
	t.Logf("first consumer handled %d, second %d; %d handled twice", first, len(handled)-first, dups)
	if dups > 0 {
		t.Errorf("%d messages handled twice: a finished handler's delete was lost", dups)
	}
	st, err := stats(ctx, c, name)
	if err != nil || st.Visible+st.InFlight+st.Delayed != 0 {
		t.Errorf("queue holds %+v (%v) at the end", st, err)
	}
}

// At the drain timeout, a handler that does not finish is cancelled and
// its message released at once.
func TestDrainTimeoutReleases(t *testing.T) {
	c := dial(t, endpoints)
	name := queueName(t)
	q := createQueue(t, c, name, quorumq.QueueAttributes{VisibilityTimeout: time.Minute})
	ctx := tctx(t, 30*time.Second)
	if _, err := q.Send(ctx, quorumq.OutgoingMessage{Body: "stuck"}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	cancelled := make(chan struct{})
	err := q.NewConsumer(quorumq.ConsumerOptions{Concurrency: 1, DrainTimeout: 200 * time.Millisecond}).Run(runCtx,
		func(hctx context.Context, m *quorumq.Message) error {
			stop()
			<-hctx.Done()
			close(cancelled)
			return hctx.Err()
		})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("handler context not cancelled at the drain timeout")
	}
	st, err := stats(ctx, c, name)
	if err != nil || st.Visible != 1 || st.InFlight != 0 {
		t.Errorf("after the drain timeout the queue holds %+v (%v), want the message visible", st, err)
	}
}

// A consumer of a queue that does not exist stops with ErrQueueNotFound.
func TestConsumerMissingQueue(t *testing.T) {
	c := dial(t, endpoints)
	err := c.Queue("nope").NewConsumer(quorumq.ConsumerOptions{}).Run(tctx(t, 10*time.Second), func(context.Context, *quorumq.Message) error { return nil })
	if !errors.Is(err, quorumq.ErrQueueNotFound) {
		t.Errorf("Run on a missing queue: %v", err)
	}
	err = c.Queue("nope").NewConsumer(quorumq.ConsumerOptions{VisibilityTimeout: time.Second}).Run(tctx(t, 10*time.Second), func(context.Context, *quorumq.Message) error { return nil })
	if !errors.Is(err, quorumq.ErrQueueNotFound) {
		t.Errorf("Run on a missing queue (no GetQueue): %v", err)
	}
}

// A receive interrupted by shutdown may have leased messages whose answer
// never arrived: the consumer replays the attempt (same id, no wait) and
// releases what it returns.
func TestShutdownReplaysInterruptedReceive(t *testing.T) {
	var mu sync.Mutex
	var attempts []*qv1.ReceiveMessagesRequest
	var released []string
	inPoll := make(chan struct{})
	f := &fakeServer{
		receive: func(ctx context.Context, r *qv1.ReceiveMessagesRequest) (*qv1.ReceiveMessagesResponse, error) {
			mu.Lock()
			attempts = append(attempts, r)
			n := len(attempts)
			mu.Unlock()
			if n == 1 { // the long poll: leases, then its answer is lost to the cancel
				close(inPoll)
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return &qv1.ReceiveMessagesResponse{Messages: []*qv1.ReceivedMessage{{MessageId: "m", ReceiptHandle: "h1", ReceiveCount: 1}}}, nil
		},
		nacks: func(_ context.Context, r *qv1.NackMessageBatchRequest) (*qv1.NackMessageBatchResponse, error) {
			mu.Lock()
			defer mu.Unlock()
			for _, e := range r.GetEntries() {
				if e.GetKind() == qv1.NackKind_NACK_KIND_RELEASED {
					released = append(released, e.GetReceiptHandle())
				}
			}
			return &qv1.NackMessageBatchResponse{}, nil
		},
	}
	c := dial(t, []string{startFake(t, f)})
	ctx, stop := context.WithCancel(tctx(t, 10*time.Second))
	go func() {
		<-inPoll
		stop()
	}()
	err := c.Queue("q").NewConsumer(quorumq.ConsumerOptions{Receives: 1, VisibilityTimeout: time.Minute}).Run(ctx, func(context.Context, *quorumq.Message) error {
		t.Error("handler started during shutdown")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != 2 {
		t.Fatalf("%d receives, want the poll and its replay", len(attempts))
	}
	poll, replay := attempts[0], attempts[1]
	if replay.GetReceiveAttemptId() == "" || replay.GetReceiveAttemptId() != poll.GetReceiveAttemptId() ||
		replay.GetWaitTime().AsDuration() != 0 || replay.GetVisibilityTimeout().AsDuration() != 0 {
		t.Errorf("replay %v of poll %v", replay, poll)
	}
	if fmt.Sprint(released) != "[h1]" {
		t.Errorf("released %v, want [h1]", released)
	}
}

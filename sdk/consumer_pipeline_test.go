package quorumq_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	quorumq "github.com/quorumq/quorumq/sdk"
)

// leaseFake is a queue of total messages that a fake server leases as
// asked, counting what is held (leased, neither deleted nor released),
// the receives and deletes in flight, and the delete batch sizes.
type leaseFake struct {
	mu                       sync.Mutex
	total, next              int
	held, maxHeld            int
	recvIn, maxRecvIn        int
	delIn, maxDelIn, biggest int
	deleted                  map[string]bool
	failDelete               func(handle string) bool
	deleteDelay              time.Duration
}

func (l *leaseFake) server() *fakeServer {
	return &fakeServer{
		receive: func(ctx context.Context, r *qv1.ReceiveMessagesRequest) (*qv1.ReceiveMessagesResponse, error) {
			l.mu.Lock()
			l.recvIn++
			l.maxRecvIn = max(l.maxRecvIn, l.recvIn)
			var out []*qv1.ReceivedMessage
			for len(out) < int(r.GetMaxMessages()) && l.next < l.total && r.GetVisibilityTimeout().AsDuration() > 0 {
				h := strconv.Itoa(l.next)
				out = append(out, &qv1.ReceivedMessage{MessageId: "m" + h, ReceiptHandle: h, ReceiveCount: 1})
				l.next++
			}
			l.held += len(out)
			l.maxHeld = max(l.maxHeld, l.held)
			l.mu.Unlock()
			defer func() {
				l.mu.Lock()
				l.recvIn--
				l.mu.Unlock()
			}()
			if len(out) == 0 && r.GetWaitTime().AsDuration() > 0 { // a long poll of an empty queue
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return &qv1.ReceiveMessagesResponse{Messages: out}, nil
		},
		deletes: func(_ context.Context, r *qv1.DeleteMessageBatchRequest) (*qv1.DeleteMessageBatchResponse, error) {
			l.mu.Lock()
			l.delIn++
			l.maxDelIn = max(l.maxDelIn, l.delIn)
			l.biggest = max(l.biggest, len(r.GetEntries()))
			l.mu.Unlock()
			time.Sleep(l.deleteDelay) // the server's work, so that batches overlap
			l.mu.Lock()
			defer l.mu.Unlock()
			l.delIn--
			resp := &qv1.DeleteMessageBatchResponse{}
			for _, e := range r.GetEntries() {
				if l.failDelete != nil && l.failDelete(e.GetReceiptHandle()) {
					resp.Failed = append(resp.Failed, &qv1.BatchResultError{Id: e.GetId(), Code: codes.FailedPrecondition.String(),
						Reason: quorumq.ReasonStaleReceiptHandle, Message: "stale"})
					continue
				}
				l.held--
				l.deleted[e.GetReceiptHandle()] = true
				resp.Successful = append(resp.Successful, &qv1.BatchResultOk{Id: e.GetId()})
			}
			return resp, nil
		},
		changes: func(_ context.Context, r *qv1.ChangeMessageVisibilityBatchRequest) (*qv1.ChangeMessageVisibilityBatchResponse, error) {
			l.mu.Lock()
			defer l.mu.Unlock()
			for _, e := range r.GetEntries() {
				if e.GetVisibilityTimeout().AsDuration() == 0 {
					l.held--
				}
			}
			return &qv1.ChangeMessageVisibilityBatchResponse{}, nil
		},
		nacks: func(_ context.Context, r *qv1.NackMessageBatchRequest) (*qv1.NackMessageBatchResponse, error) {
			l.mu.Lock()
			defer l.mu.Unlock()
			for _, e := range r.GetEntries() {
				if e.GetKind() == qv1.NackKind_NACK_KIND_RELEASED {
					l.held--
				}
			}
			return &qv1.NackMessageBatchResponse{}, nil
		},
	}
}

func (l *leaseFake) snapshot() leaseFake {
	l.mu.Lock()
	defer l.mu.Unlock()
	return leaseFake{held: l.held, maxHeld: l.maxHeld, recvIn: l.recvIn, maxRecvIn: l.maxRecvIn, maxDelIn: l.maxDelIn,
		biggest: l.biggest, next: l.next, deleted: map[string]bool{"n": len(l.deleted) > 0}}
}

// With its defaults (Concurrency 10) a consumer keeps 5 receives of up to
// 100 in flight and fills its prefetch window of 500 messages, never more,
// running 10 handlers; once the handlers run freely it drains the queue,
// deleting in batches of at most 100 with several batches in flight.
func TestConsumerPipelinesReceivesAndDeletes(t *testing.T) {
	l := &leaseFake{total: 2000, deleted: map[string]bool{}, deleteDelay: 30 * time.Millisecond}
	c := dial(t, []string{startFake(t, l.server())})
	ctx, stop := context.WithCancel(tctx(t, 60*time.Second))
	defer stop()
	gate := make(chan struct{})
	var mu sync.Mutex
	running, most := 0, 0
	cons := c.Queue("q").NewConsumer(quorumq.ConsumerOptions{VisibilityTimeout: time.Minute})
	runErr := make(chan error, 1)
	go func() {
		runErr <- cons.Run(ctx, func(context.Context, *quorumq.Message) error {
			mu.Lock()
			running++
			most = max(most, running)
			mu.Unlock()
			<-gate
			mu.Lock()
			running--
			mu.Unlock()
			return nil
		})
	}()

	// Handlers blocked: the consumer fills its window and stops there.
	checkFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		mu.Lock()
		r := running
		mu.Unlock()
		if s := l.snapshot(); s.held != 500 || r != 10 {
			return fmt.Errorf("held %d, handlers running %d; want 500 and 10", s.held, r)
		}
		return nil
	})
	if s := l.snapshot(); s.maxHeld != 500 || s.next != 500 {
		t.Fatalf("leased %d, at most %d held at once; want 500 (the prefetch window)", s.next, s.maxHeld)
	}

	close(gate)
	checkFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if st := cons.Stats(); st.Deleted != 2000 {
			return fmt.Errorf("stats %+v", st)
		}
		// The queue is empty: every receiver long-polls.
		if s := l.snapshot(); s.recvIn != 5 {
			return fmt.Errorf("%d receives in flight, want 5", s.recvIn)
		}
		return nil
	})
	s := l.snapshot() // before the shutdown's replays of the interrupted polls
	stop()
	if err := <-runErr; err != nil {
		t.Fatal(err)
	}
	if s.maxRecvIn != 5 || s.biggest > 100 || s.maxDelIn < 2 || s.maxDelIn > 4 || most > 10 {
		t.Errorf("receives in flight at most %d (want 5), biggest delete batch %d (≤ 100), deletes in flight at most %d (2-4), handlers at most %d (≤ 10)",
			s.maxRecvIn, s.biggest, s.maxDelIn, most)
	}
	if st := cons.Stats(); st != (quorumq.ConsumerStats{Received: 2000, Handled: 2000, Deleted: 2000}) {
		t.Errorf("stats %+v", st)
	}
}

// A delete that fails is reported to OnError with its message and counted,
// never dropped silently.
func TestConsumerReportsDeleteErrors(t *testing.T) {
	l := &leaseFake{total: 30, deleted: map[string]bool{}, failDelete: func(h string) bool {
		n, _ := strconv.Atoi(h)
		return n%3 == 0
	}}
	c := dial(t, []string{startFake(t, l.server())})
	ctx, stop := context.WithCancel(tctx(t, 30*time.Second))
	defer stop()
	var mu sync.Mutex
	reported := map[string]bool{}
	cons := c.Queue("q").NewConsumer(quorumq.ConsumerOptions{VisibilityTimeout: time.Minute,
		OnError: func(m *quorumq.Message, err error) {
			mu.Lock()
			defer mu.Unlock()
			if m != nil && errors.Is(err, quorumq.ErrStaleReceipt) {
				reported[m.ReceiptHandle] = true
			}
		}})
	runErr := make(chan error, 1)
	go func() {
		runErr <- cons.Run(ctx, func(context.Context, *quorumq.Message) error { return nil })
	}()
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if st := cons.Stats(); st.Deleted+st.DeleteErrors != 30 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	stop()
	if err := <-runErr; err != nil {
		t.Fatal(err)
	}
	if st := cons.Stats(); st.Deleted != 20 || st.DeleteErrors != 10 {
		t.Errorf("stats %+v, want 20 deleted and 10 delete errors", st)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < 30; i += 3 {
		if !reported[strconv.Itoa(i)] {
			t.Errorf("failed delete of %d not reported (reported: %v)", i, reported)
		}
	}
}

// The leases of the messages a consumer holds are extended together: one
// ChangeMessageVisibilityBatch call per heartbeat for all 60, not a call
// each. An entry that fails as stale cancels that handler alone, which
// beats no more; the others keep theirs and are deleted when done.
func TestConsumerHeartbeatsInBatches(t *testing.T) {
	const n, lostHandle = 60, "7"
	var (
		mu      sync.Mutex
		calls   []int // entries per call
		lostIn  int   // calls that named the lost message
		handout = n
	)
	deleted := map[string]bool{}
	f := &fakeServer{
		receive: func(ctx context.Context, r *qv1.ReceiveMessagesRequest) (*qv1.ReceiveMessagesResponse, error) {
			mu.Lock()
			var out []*qv1.ReceivedMessage
			for ; handout > 0 && len(out) < int(r.GetMaxMessages()); handout-- {
				h := strconv.Itoa(n - handout)
				out = append(out, &qv1.ReceivedMessage{MessageId: "m" + h, ReceiptHandle: h, ReceiveCount: 1})
			}
			mu.Unlock()
			if len(out) == 0 && r.GetWaitTime().AsDuration() > 0 {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return &qv1.ReceiveMessagesResponse{Messages: out}, nil
		},
		changes: func(_ context.Context, r *qv1.ChangeMessageVisibilityBatchRequest) (*qv1.ChangeMessageVisibilityBatchResponse, error) {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, len(r.GetEntries()))
			resp := &qv1.ChangeMessageVisibilityBatchResponse{}
			for _, e := range r.GetEntries() {
				if e.GetReceiptHandle() == lostHandle {
					lostIn++
					resp.Failed = append(resp.Failed, &qv1.BatchResultError{Id: e.GetId(), Code: codes.FailedPrecondition.String(),
						Reason: quorumq.ReasonStaleReceiptHandle, Message: "stale"})
					continue
				}
				resp.Successful = append(resp.Successful, &qv1.BatchResultOk{Id: e.GetId()})
			}
			return resp, nil
		},
		deletes: func(_ context.Context, r *qv1.DeleteMessageBatchRequest) (*qv1.DeleteMessageBatchResponse, error) {
			mu.Lock()
			defer mu.Unlock()
			resp := &qv1.DeleteMessageBatchResponse{}
			for _, e := range r.GetEntries() {
				deleted[e.GetReceiptHandle()] = true
				resp.Successful = append(resp.Successful, &qv1.BatchResultOk{Id: e.GetId()})
			}
			return resp, nil
		},
		nacks: func(context.Context, *qv1.NackMessageBatchRequest) (*qv1.NackMessageBatchResponse, error) {
			return &qv1.NackMessageBatchResponse{}, nil
		},
	}
	c := dial(t, []string{startFake(t, f)})
	ctx, stop := context.WithCancel(tctx(t, 60*time.Second))
	defer stop()
	gate := make(chan struct{})
	var reported, cancelled sync.Map
	cons := c.Queue("q").NewConsumer(quorumq.ConsumerOptions{
		Unary: true, Receives: 1, MaxMessages: n, Prefetch: n, Concurrency: n,
		VisibilityTimeout: 5 * time.Second, HeartbeatInterval: 100 * time.Millisecond,
		OnError: func(m *quorumq.Message, err error) {
			if m != nil && errors.Is(err, quorumq.ErrStaleReceipt) {
				reported.Store(m.ReceiptHandle, true)
			}
		},
	})
	runErr := make(chan error, 1)
	go func() {
		runErr <- cons.Run(ctx, func(hctx context.Context, m *quorumq.Message) error {
			select {
			case <-gate:
				return nil
			case <-hctx.Done():
				cancelled.Store(m.ReceiptHandle, true)
				return hctx.Err()
			}
		})
	}()
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(calls) < 5 {
			return fmt.Errorf("%d heartbeat calls", len(calls))
		}
		return nil
	})
	// The calls before the handlers return: all held messages beat.
	mu.Lock()
	held := slices.Clone(calls)
	mu.Unlock()
	close(gate)
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(deleted) < n-1 {
			return fmt.Errorf("%d deleted", len(deleted))
		}
		return nil
	})
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if held[0] != n {
		t.Errorf("first heartbeat extended %d leases in one call, want all %d", held[0], n)
	}
	for i, k := range held[1:] {
		if k != n-1 {
			t.Errorf("heartbeat call %d extended %d leases, want the %d still held (calls: %v)", i+2, k, n-1, held)
			break
		}
	}
	if lostIn != 1 {
		t.Errorf("the lost lease was sent %d times, want once (no beats after it was lost)", lostIn)
	}
	if _, ok := reported.Load(lostHandle); !ok {
		t.Error("the lost lease was not reported")
	}
	if _, ok := cancelled.Load(lostHandle); !ok {
		t.Error("the lost lease did not cancel its handler")
	}
	cancelled.Range(func(h, _ any) bool {
		if h != lostHandle {
			t.Errorf("handler of %v cancelled; only %s lost its lease", h, lostHandle)
		}
		return true
	})
	if deleted[lostHandle] || len(deleted) != n-1 {
		t.Errorf("deleted %d messages (lost one deleted: %v), want the %d others", len(deleted), deleted[lostHandle], n-1)
	}
}

package quorumq_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	quorumq "github.com/quorumq/quorumq/sdk"
)

// streamHook wraps the client's streams: onRecv, when set, runs before
// each RecvMsg of a stream (n counts that stream's receives) and may
// block or fail it.
type streamHook struct {
	opened atomic.Int64
	onRecv atomic.Pointer[func(method string, stream int64, n int) error]
}

func (h *streamHook) option() quorumq.Option {
	return quorumq.WithDialOptions(grpc.WithChainStreamInterceptor(
		func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			cs, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return &hookedStream{ClientStream: cs, h: h, method: method[strings.LastIndex(method, "/")+1:], id: h.opened.Add(1)}, nil
		}))
}

type hookedStream struct {
	grpc.ClientStream
	h      *streamHook
	method string
	id     int64
	n      int
}

func (s *hookedStream) RecvMsg(m any) error {
	s.n++
	if f := s.h.onRecv.Load(); f != nil {
		if err := (*f)(s.method, s.id, s.n); err != nil {
			return err
		}
	}
	return s.ClientStream.RecvMsg(m)
}

// A default Producer sends on a SendStream (no batch calls), every
// message once.
func TestProducerStream(t *testing.T) {
	var cnt calls
	var hook streamHook
	c := dial(t, endpoints, cnt.option(), hook.option())
	name := queueName(t)
	q := createQueue(t, c, name, quorumq.QueueAttributes{})
	ctx := tctx(t, 60*time.Second)
	p := q.NewProducer(quorumq.ProducerOptions{BatchSize: 7, Linger: time.Millisecond})
	var futures []*quorumq.Future
	for i := range 500 {
		f, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: fmt.Sprint("m", i)})
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for i, f := range futures {
		r, err := f.Result()
		if err != nil || r.MessageID == "" {
			t.Fatalf("message %d: %v %+v", i, err, r)
		}
		ids[r.MessageID] = true
	}
	if len(ids) != 500 {
		t.Fatalf("%d distinct ids for 500 messages", len(ids))
	}
	if n := cnt.count("SendMessageBatch"); n != 0 || hook.opened.Load() == 0 {
		t.Errorf("%d batch calls and %d streams, want the stream only", n, hook.opened.Load())
	}
	if st, err := stats(ctx, c, name); err != nil || st.Visible != 500 {
		t.Errorf("queue holds %+v (%v), want 500 visible", st, err)
	}
}

// When the send stream breaks, its unanswered messages go again by calls
// under their idempotency keys: every message is stored exactly once.
func TestProducerStreamBreakResendsOnce(t *testing.T) {
	var cnt calls
	var hook streamHook
	broken := func(method string, stream int64, n int) error {
		if method == "SendStream" && stream == 1 && n == 2 {
			return status.Error(codes.Unavailable, "injected: stream broken")
		}
		return nil
	}
	hook.onRecv.Store(&broken)
	c := dial(t, endpoints, cnt.option(), hook.option())
	name := queueName(t)
	q := createQueue(t, c, name, quorumq.QueueAttributes{})
	ctx := tctx(t, 60*time.Second)
	p := q.NewProducer(quorumq.ProducerOptions{BatchSize: 10, Linger: time.Millisecond})
	var futures []*quorumq.Future
	for i := range 300 {
		f, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: fmt.Sprint("m", i)})
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i, f := range futures {
		if r, err := f.Result(); err != nil || r.MessageID == "" {
			t.Fatalf("message %d: %v %+v", i, err, r)
		}
	}
	if cnt.count("SendMessageBatch") == 0 {
		t.Errorf("no batch call after the stream broke")
	}
	if st, err := stats(ctx, c, name); err != nil || st.Visible != 300 {
		t.Errorf("queue holds %+v (%v), want exactly 300 visible", st, err)
	}
}

// Publish blocks while the buffer is full of messages the stream has
// not answered, and resumes when answers come.
func TestProducerStreamBackpressure(t *testing.T) {
	var hook streamHook
	release := make(chan struct{})
	hold := func(method string, _ int64, _ int) error {
		if method == "SendStream" {
			<-release
		}
		return nil
	}
	hook.onRecv.Store(&hold)
	c := dial(t, endpoints, hook.option())
	q := createQueue(t, c, queueName(t), quorumq.QueueAttributes{})
	ctx := tctx(t, 30*time.Second)
	p := q.NewProducer(quorumq.ProducerOptions{BatchSize: 2, BufferSize: 4, Linger: time.Millisecond})
	for i := range 4 {
		if _, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: fmt.Sprint(i)}); err != nil {
			t.Fatalf("publish %d into a buffer of 4: %v", i, err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := p.Publish(short, quorumq.OutgoingMessage{Body: "overflow"})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish into a full buffer: %v, want it to block until the deadline", err)
	}
	close(release)
	f, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: "4"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// A default Consumer is pushed messages on a Consume stream (no receive
// calls), holds at most Prefetch, and deletes every handled message.
func TestConsumeStream(t *testing.T) {
	var cnt calls
	c := dial(t, endpoints, cnt.option())
	name := queueName(t)
	q := createQueue(t, c, name, quorumq.QueueAttributes{})
	ctx := tctx(t, 60*time.Second)
	msgs := make([]quorumq.OutgoingMessage, 300)
	for i := range msgs {
		msgs[i].Body = fmt.Sprint("m", i)
	}
	if _, err := q.SendBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var mu sync.Mutex
	seen := map[string]int{}
	var held, most atomic.Int64
	cons := q.NewConsumer(quorumq.ConsumerOptions{Concurrency: 8, Prefetch: 40})
	err := cons.Run(runCtx, func(_ context.Context, m *quorumq.Message) error {
		if n := held.Add(1); n > most.Load() {
			most.Store(n)
		}
		defer held.Add(-1)
		mu.Lock()
		defer mu.Unlock()
		seen[m.Body]++
		if len(seen) == 300 {
			stop()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 300 {
		t.Fatalf("handled %d distinct messages, want 300", len(seen))
	}
	if n := cnt.count("ReceiveMessages"); n != 0 {
		t.Errorf("%d receive calls, want the stream only", n)
	}
	if most.Load() > 8 {
		t.Errorf("%d handlers at once, want at most 8", most.Load())
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		st, err := stats(ctx, c, name)
		if err != nil || st.Visible+st.InFlight != 0 {
			return fmt.Errorf("queue holds %+v (%v) after every message was handled", st, err)
		}
		return nil
	})
	if s := cons.Stats(); s.Deleted != 300 || s.DeleteErrors != 0 {
		t.Errorf("stats %+v, want 300 deleted", s)
	}
}

// Five messages of one FIFO group on a Consume stream, the first handler
// failing once: handled strictly in order, one at a time.
func TestConsumeStreamFIFO(t *testing.T) {
	c := dial(t, endpoints)
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
	var mu sync.Mutex
	var handled []string
	var running, most atomic.Int32
	failed := false
	err := q.NewConsumer(quorumq.ConsumerOptions{
		Concurrency: 5,
		NackBackoff: func(*quorumq.Message, error) time.Duration { return 100 * time.Millisecond },
		OnError:     func(*quorumq.Message, error) {},
	}).Run(runCtx, func(_ context.Context, m *quorumq.Message) error {
		n := running.Add(1)
		defer running.Add(-1)
		if n > most.Load() {
			most.Store(n)
		}
		<-time.After(20 * time.Millisecond) // give parallel handlers of the group time to overlap
		mu.Lock()
		defer mu.Unlock()
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
}

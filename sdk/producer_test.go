package quorumq_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	quorumq "github.com/quorumq/quorumq/sdk"
)

// Full batches go out at once; the remainder waits for its linger, or for
// Close, which sends it.
func TestProducerBatchesAndFlushesOnClose(t *testing.T) {
	var cnt calls
	c := dial(t, endpoints, cnt.option())
	name := queueName(t)
	q := createQueue(t, c, name, quorumq.QueueAttributes{})
	ctx := tctx(t, 30*time.Second)

	var results atomic.Int64
	// Unary: this counts the batch calls (the stream path: TestProducerStream*).
	p := q.NewProducer(quorumq.ProducerOptions{BatchSize: 10, Linger: time.Hour, Unary: true,
		OnResult: func(_ *quorumq.OutgoingMessage, r quorumq.SendResult, err error) {
			if err == nil && r.MessageID != "" {
				results.Add(1)
			}
		}})
	var futures []*quorumq.Future
	for i := range 25 {
		f, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: fmt.Sprint("m", i)})
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	// Two full batches are sent without waiting for the (hour-long) linger.
	for _, f := range futures[:20] {
		if _, err := f.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-futures[24].Done():
		t.Fatal("the partial batch went out before its linger or Close")
	default:
	}
	if n := cnt.count("SendMessageBatch"); n != 2 {
		t.Errorf("%d batch calls for 20 messages in batches of 10", n)
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
	if len(ids) != 25 || results.Load() != 25 {
		t.Errorf("%d distinct ids, %d OnResult calls; want 25", len(ids), results.Load())
	}
	if n := cnt.count("SendMessageBatch"); n != 3 {
		t.Errorf("%d batch calls in all, want 3", n)
	}
	if st, err := stats(ctx, c, name); err != nil || st.Visible != 25 {
		t.Errorf("queue holds %+v (%v), want 25 visible", st, err)
	}
	if _, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: "late"}); !errors.Is(err, quorumq.ErrClosed) {
		t.Errorf("publish after close: %v", err)
	}
}

// A partial batch goes out after its linger; Flush sends at once.
func TestProducerLingerAndFlush(t *testing.T) {
	c := dial(t, endpoints)
	q := createQueue(t, c, queueName(t), quorumq.QueueAttributes{})
	ctx := tctx(t, 30*time.Second)

	p := q.NewProducer(quorumq.ProducerOptions{Linger: 20 * time.Millisecond})
	defer p.Close(ctx)
	f, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: "lonely"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Wait(ctx); err != nil {
		t.Fatalf("lingered message: %v", err)
	}

	slow := q.NewProducer(quorumq.ProducerOptions{Linger: time.Hour})
	defer slow.Close(ctx)
	f, err = slow.Publish(ctx, quorumq.OutgoingMessage{Body: "flushed"})
	if err != nil {
		t.Fatal(err)
	}
	if err := slow.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err := f.Result(); err != nil || r.MessageID == "" {
		t.Fatalf("after Flush: %+v %v", r, err)
	}
}

// Publish blocks while the buffer is full, until ctx ends; it resumes as
// sends complete.
func TestProducerBackpressure(t *testing.T) {
	var cnt calls
	c := dial(t, endpoints, cnt.option())
	name := queueName(t)
	q := createQueue(t, c, name, quorumq.QueueAttributes{})
	ctx := tctx(t, 30*time.Second)

	// Hold every batch call until released.
	release := make(chan struct{})
	hold := func(method string) {
		if method == "SendMessageBatch" {
			<-release
		}
	}
	cnt.before.Store(&hold)
	// Unary: this holds the batch calls (the stream path: TestProducerStreamBackpressure).
	p := q.NewProducer(quorumq.ProducerOptions{BatchSize: 2, BufferSize: 4, Linger: time.Millisecond, Unary: true})
	var futures []*quorumq.Future
	for i := range 4 {
		f, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: fmt.Sprint(i)})
		if err != nil {
			t.Fatalf("publish %d into a buffer of 4: %v", i, err)
		}
		futures = append(futures, f)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := p.Publish(short, quorumq.OutgoingMessage{Body: "overflow"})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish into a full buffer: %v, want it to block until the deadline", err)
	}
	// A publisher blocked now gets in once the sends go through.
	blocked := make(chan error, 1)
	go func() {
		f, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: "4"})
		if err == nil {
			_, err = f.Wait(ctx)
		}
		blocked <- err
	}()
	close(release)
	if err := <-blocked; err != nil {
		t.Fatalf("blocked publish: %v", err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, f := range futures {
		if _, err := f.Result(); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := stats(ctx, c, name); err != nil || st.Visible != 5 {
		t.Errorf("queue holds %+v (%v), want 5", st, err)
	}
}

// Entries the server refuses fail their own futures; the rest succeed.
func TestProducerPerMessageErrors(t *testing.T) {
	c := dial(t, endpoints)
	q := createQueue(t, c, queueName(t), quorumq.QueueAttributes{MaxMessageSize: 1024})
	ctx := tctx(t, 30*time.Second)
	p := q.NewProducer(quorumq.ProducerOptions{})
	good, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: "fine"})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 2048)
	for i := range big {
		big[i] = 'x'
	}
	bad, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: string(big)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := good.Result(); err != nil {
		t.Errorf("good message: %v", err)
	}
	if _, err := bad.Result(); !errors.Is(err, quorumq.ErrMessageTooLarge) {
		t.Errorf("oversized message: %v, want ErrMessageTooLarge", err)
	}
}

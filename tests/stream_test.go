package tests

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	quorumq "github.com/quorumq/quorumq/sdk"
)

// A Producer on a SendStream and a Consumer on a Consume stream keep
// going when the queue's leader is killed: every send the producer
// confirmed is received (at least once), none fails, and the queue ends
// empty (each message stored once, every delivery deleted or redelivered
// and deleted).
func TestStreamsSurviveLeaderKill(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.leader()
	// The leader first: the streams open there, and the kill breaks them.
	eps := []string{c.procs[leader].grpcAddr}
	for id := uint64(1); id <= 3; id++ {
		if id != leader {
			eps = append(eps, c.procs[id].grpcAddr)
		}
	}
	cl, err := quorumq.Dial(context.Background(), eps)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if _, err := cl.CreateQueue(ctx, "streamfail", quorumq.QueueAttributes{VisibilityTimeout: 5 * time.Second}, nil); err != nil {
		t.Fatal(err)
	}
	q := cl.Queue("streamfail")

	var mu sync.Mutex
	confirmed := map[string]bool{}
	received := map[string]int{}
	ids := map[string]map[string]bool{} // body -> message ids delivered
	const total = 4000
	var sendErrs []error
	prodDone := make(chan struct{})
	go func() {
		defer close(prodDone)
		p := q.NewProducer(quorumq.ProducerOptions{})
		var futures []*quorumq.Future
		for i := range total {
			f, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: fmt.Sprint("m", i)})
			if err != nil {
				mu.Lock()
				sendErrs = append(sendErrs, err)
				mu.Unlock()
				break
			}
			futures = append(futures, f)
			if i%200 == 199 { // spread the sends over the kill
				<-time.After(20 * time.Millisecond)
			}
		}
		_ = p.Close(ctx)
		for i, f := range futures {
			_, err := f.Result()
			mu.Lock()
			if err != nil {
				sendErrs = append(sendErrs, err)
			} else {
				confirmed[fmt.Sprint("m", i)] = true
			}
			mu.Unlock()
		}
	}()

	consCtx, stopCons := context.WithCancel(ctx)
	consDone := make(chan error, 1)
	var streamErrs atomic.Int64
	cons := q.NewConsumer(quorumq.ConsumerOptions{OnError: func(_ *quorumq.Message, err error) {
		if strings.Contains(err.Error(), "consume stream") {
			streamErrs.Add(1)
		}
	}})
	go func() {
		consDone <- cons.Run(consCtx, func(_ context.Context, m *quorumq.Message) error {
			mu.Lock()
			received[m.Body]++
			if ids[m.Body] == nil {
				ids[m.Body] = map[string]bool{}
			}
			ids[m.Body][m.ID] = true
			mu.Unlock()
			return nil
		})
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(received)
	}
	for count() < 500 && ctx.Err() == nil {
		<-time.After(10 * time.Millisecond)
	}
	c.kill(leader)
	t.Logf("killed leader %d after %d messages received", leader, count())
	<-prodDone
	missing := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for b := range confirmed {
			if received[b] == 0 {
				out = append(out, b)
			}
		}
		return out
	}
	for len(missing()) > 0 && ctx.Err() == nil { // at most one visibility timeout after the last send
		<-time.After(50 * time.Millisecond)
	}
	stopCons()
	if err := <-consDone; err != nil {
		t.Fatalf("consumer: %v", err)
	}
	// What the kill left leased comes back after its visibility timeout:
	// drain it, and the queue is empty.
	deadline := time.Now().Add(60 * time.Second)
	for {
		info, err := cl.GetQueue(ctx, "streamfail")
		if err == nil && info.Stats.Visible+info.Stats.InFlight+info.Stats.Delayed == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue not empty: %+v %v", info, err)
		}
		msgs, err := q.Receive(ctx, quorumq.MaxMessages(100), quorumq.WaitTime(time.Second))
		if err != nil {
			continue
		}
		mu.Lock()
		for _, m := range msgs {
			received[m.Body]++
			if ids[m.Body] == nil {
				ids[m.Body] = map[string]bool{}
			}
			ids[m.Body][m.ID] = true
			_ = m.Delete(ctx)
		}
		mu.Unlock()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sendErrs) > 0 {
		t.Errorf("%d sends failed across the leader change, first: %v", len(sendErrs), sendErrs[0])
	}
	if len(confirmed) != total {
		t.Errorf("%d of %d sends confirmed", len(confirmed), total)
	}
	redelivered := 0
	for b, n := range received {
		if !confirmed[b] {
			t.Errorf("received %s, which no send confirmed", b)
		}
		if len(ids[b]) != 1 {
			t.Errorf("%s stored %d times", b, len(ids[b]))
		}
		redelivered += n - 1
	}
	for b := range confirmed {
		if received[b] == 0 {
			t.Errorf("confirmed %s never received", b)
		}
	}
	if streamErrs.Load() == 0 {
		t.Errorf("the consumer's stream did not break: the test missed its point")
	}
	t.Logf("%d confirmed, %d received, %d redeliveries; consumer %+v; %d consume stream failures", len(confirmed), len(received), redelivered, cons.Stats(), streamErrs.Load())
}

// Streams through a stateless API-tier node: a Producer and a Consumer
// that know only the API node move every message of a partitioned queue
// (the API node forwards the streams' batches to the shard leaders).
func TestStreamsThroughAPITier(t *testing.T) {
	c := startCluster(t, 3, "--shards", "3")
	c.leader()
	api := c.startAPINode(100)
	cl, err := quorumq.Dial(context.Background(), []string{api.grpcAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := cl.CreateQueue(ctx, "apistream", quorumq.QueueAttributes{Partitions: 2}, nil); err != nil {
		t.Fatal(err)
	}
	q := cl.Queue("apistream")
	const total = 1000
	p := q.NewProducer(quorumq.ProducerOptions{})
	futures := make([]*quorumq.Future, total)
	for i := range futures {
		if futures[i], err = p.Publish(ctx, quorumq.OutgoingMessage{Body: fmt.Sprint("m", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i, f := range futures {
		if _, err := f.Result(); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	var mu sync.Mutex
	got := map[string]bool{}
	runCtx, stop := context.WithCancel(ctx)
	cons := q.NewConsumer(quorumq.ConsumerOptions{})
	if err := cons.Run(runCtx, func(_ context.Context, m *quorumq.Message) error {
		mu.Lock()
		defer mu.Unlock()
		got[m.Body] = true
		if len(got) == total {
			stop()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	stop()
	if len(got) != total {
		t.Fatalf("received %d of %d messages", len(got), total)
	}
	if s := cons.Stats(); s.Deleted < total {
		t.Errorf("consumer stats %+v, want %d deleted", s, total)
	}
}

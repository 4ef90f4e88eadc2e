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
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	quorumq "github.com/quorumq/quorumq/sdk"
)

func rawTopics(t *testing.T) qv1.TopicServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(endpoints[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return qv1.NewTopicServiceClient(conn)
}

// endOffsets is the partitions' end offsets.
func endOffsets(t *testing.T, topic string) []int64 {
	t.Helper()
	r, err := rawTopics(t).GetTopic(tctx(t, 10*time.Second), &qv1.GetTopicRequest{Name: topic})
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, p := range r.GetTopic().GetPartitions() {
		out = append(out, p.GetEndOffset())
	}
	return out
}

// A publish whose answer is lost is retried with its idempotency key and
// stored once; a batch beyond one call's 100 entries is split, its
// results aligned with the input, and a bad entry fails alone.
func TestPublisherRetriesAndBatches(t *testing.T) {
	var lose atomic.Bool
	lose.Store(true)
	c := dial(t, endpoints, quorumq.WithDialOptions(grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if err == nil && method == "/quorumq.v1.TopicService/Publish" && lose.Swap(false) {
				return status.Error(codes.Unavailable, "answer lost")
			}
			return err
		})))
	name := queueName(t)
	ctx := tctx(t, 30*time.Second)
	topic, err := c.CreateTopic(ctx, name, quorumq.TopicAttributes{Partitions: 2, MaxMessageSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	pub := topic.NewPublisher()
	r, err := pub.Publish(ctx, quorumq.TopicMessage{Body: "one", PartitionKey: "k", Tags: []string{"a"}, Attributes: map[string]string{"x": "y"}})
	if err != nil {
		t.Fatal(err)
	}
	if lose.Load() {
		t.Fatal("the interceptor did not lose an answer")
	}
	if ends := endOffsets(t, name); ends[r.Partition] != 1 || ends[0]+ends[1] != 1 {
		t.Fatalf("end offsets %v after one publish retried: want one message", ends)
	}

	msgs := make([]quorumq.TopicMessage, 230)
	for i := range msgs {
		msgs[i] = quorumq.TopicMessage{Body: fmt.Sprint("m", i), PartitionKey: fmt.Sprint("k", i%5)}
	}
	msgs[7].Body = strings.Repeat("x", 2000) // past the topic's 1 KiB
	msgs[150].Body = "\xff"                  // not UTF-8: refused before it is sent
	res, err := pub.PublishBatch(ctx, msgs)
	var be *quorumq.BatchError
	if !errors.As(err, &be) || be.Failed != 2 || !errors.Is(be.Errors[7], quorumq.ErrMessageTooLarge) ||
		!errors.Is(be.Errors[150], quorumq.ErrInvalidArgument) {
		t.Fatalf("batch error %v, want entry 7 too large and 150 invalid", err)
	}
	bad := func(i int) bool { return i == 7 || i == 150 }
	for i, pr := range res {
		if !bad(i) && pr.MessageID == "" {
			t.Fatalf("entry %d has no result", i)
		}
	}
	// Same key, same partition, increasing offsets in input order.
	last := map[string]int64{}
	for i, pr := range res {
		if bad(i) {
			continue
		}
		k := msgs[i].PartitionKey
		if o, ok := last[k]; ok && pr.Offset <= o {
			t.Fatalf("entry %d of key %s at offset %d after %d", i, k, pr.Offset, o)
		}
		last[k] = pr.Offset
	}
	if ends := endOffsets(t, name); ends[0]+ends[1] != 1+228 {
		t.Fatalf("end offsets %v, want 229 messages", ends)
	}
}

// consumed is what the handlers of a test saw.
type consumed struct {
	mu      sync.Mutex
	seen    map[string]int            // body -> times handled
	order   map[int32][]int64         // partition -> offsets handled, in order
	by      map[int32]map[string]bool // partition -> consumers that handled it
	events  []string                  // assigned / revoked, per consumer
	current map[string]map[int32]bool // consumer -> partitions held now
}

func newConsumed() *consumed {
	return &consumed{seen: map[string]int{}, order: map[int32][]int64{}, by: map[int32]map[string]bool{}, current: map[string]map[int32]bool{}}
}

func (c *consumed) handler(t *testing.T, who string) quorumq.GroupHandler {
	return func(_ context.Context, m *quorumq.GroupMessage) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.current[who][m.Partition] {
			t.Errorf("%s handled partition %d it does not hold", who, m.Partition)
		}
		for other, ps := range c.current {
			if other != who && ps[m.Partition] {
				t.Errorf("partition %d held by %s and %s at once", m.Partition, who, other)
			}
		}
		c.seen[m.Body]++
		c.order[m.Partition] = append(c.order[m.Partition], m.Offset)
		if c.by[m.Partition] == nil {
			c.by[m.Partition] = map[string]bool{}
		}
		c.by[m.Partition][who] = true
		return nil
	}
}

func (c *consumed) options(who string) quorumq.GroupConsumerOptions {
	return quorumq.GroupConsumerOptions{SessionTimeout: 3 * time.Second, WaitTime: 200 * time.Millisecond, MaxMessages: 7,
		OnAssigned: func(_ context.Context, ps []int32) {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.current[who] == nil {
				c.current[who] = map[int32]bool{}
			}
			for _, p := range ps {
				c.current[who][p] = true
			}
			c.events = append(c.events, fmt.Sprintf("%s assigned %v", who, ps))
		},
		OnRevoked: func(_ context.Context, ps []int32) {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, p := range ps {
				delete(c.current[who], p)
			}
			c.events = append(c.events, fmt.Sprintf("%s revoked %v", who, ps))
		}}
}

// waitAll waits until every body of bodies was handled.
func (c *consumed) waitAll(t *testing.T, bodies []string) {
	t.Helper()
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, b := range bodies {
			if c.seen[b] == 0 {
				return fmt.Errorf("%s not handled yet (%d handled)", b, len(c.seen))
			}
		}
		return nil
	})
}

func publishN(t *testing.T, p *quorumq.Publisher, prefix string, n int) []string {
	t.Helper()
	msgs := make([]quorumq.TopicMessage, n)
	bodies := make([]string, n)
	for i := range msgs {
		bodies[i] = fmt.Sprintf("%s%d", prefix, i)
		msgs[i] = quorumq.TopicMessage{Body: bodies[i], PartitionKey: fmt.Sprint("k", i)}
	}
	if _, err := p.PublishBatch(tctx(t, 30*time.Second), msgs); err != nil {
		t.Fatal(err)
	}
	return bodies
}

// Two consumers share a group: each partition is handled by one of them
// at a time, in offset order, and its offsets are committed; when one
// stops it leaves, and the other takes every partition at once and reads
// on from the committed offsets.
func TestGroupConsumerSharesAndRebalances(t *testing.T) {
	c := dial(t, endpoints)
	name := queueName(t)
	ctx := tctx(t, 60*time.Second)
	topic, err := c.CreateTopic(ctx, name, quorumq.TopicAttributes{Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := topic.CreateGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	pub := topic.NewPublisher()
	first := publishN(t, pub, "a", 120)

	got := newConsumed()
	ctx1, stop1 := context.WithCancel(ctx)
	ctx2, stop2 := context.WithCancel(ctx)
	done1, done2 := make(chan error, 1), make(chan error, 1)
	go func() { done1 <- topic.NewGroupConsumer("g", got.options("c1")).Run(ctx1, got.handler(t, "c1")) }()
	go func() { done2 <- topic.NewGroupConsumer("g", got.options("c2")).Run(ctx2, got.handler(t, "c2")) }()
	defer stop2()
	defer stop1()

	// Both hold two partitions once the group settled.
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		got.mu.Lock()
		defer got.mu.Unlock()
		if len(got.current["c1"]) != 2 || len(got.current["c2"]) != 2 {
			return fmt.Errorf("c1 holds %v, c2 %v (%v)", got.current["c1"], got.current["c2"], got.events)
		}
		return nil
	})
	got.waitAll(t, first)

	stop1()
	if err := <-done1; err != nil {
		t.Fatalf("c1's Run: %v", err)
	}
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		got.mu.Lock()
		defer got.mu.Unlock()
		if len(got.current["c2"]) != 4 || len(got.current["c1"]) != 0 {
			return fmt.Errorf("c1 holds %v, c2 %v (%v)", got.current["c1"], got.current["c2"], got.events)
		}
		return nil
	})
	second := publishN(t, pub, "b", 80)
	got.waitAll(t, second)

	got.mu.Lock()
	for b, n := range got.seen {
		if n != 1 {
			t.Errorf("%s handled %d times (no crash, every stop committed)", b, n)
		}
	}
	for p, offs := range got.order {
		if !slices.IsSorted(offs) {
			t.Errorf("partition %d handled out of order: %v", p, offs)
		}
	}
	t.Logf("rebalances: %v", got.events)
	got.mu.Unlock()

	// The offsets are committed: no lag.
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		r, err := rawTopics(t).GetGroup(tctx(t, 10*time.Second), &qv1.GetGroupRequest{Topic: name, Group: "g"})
		if err != nil {
			return err
		}
		for _, p := range r.GetGroup().GetPartitions() {
			if p.GetLag() != 0 {
				return fmt.Errorf("partition %d lags %d", p.GetPartition(), p.GetLag())
			}
		}
		return nil
	})
	stop2()
	if err := <-done2; err != nil {
		t.Fatalf("c2's Run: %v", err)
	}
}

// A failed message is handled again, and the partition waits for it: the
// messages after it come after it. A group that does not exist ends Run.
func TestGroupConsumerRetriesInOrder(t *testing.T) {
	c := dial(t, endpoints)
	name := queueName(t)
	ctx := tctx(t, 60*time.Second)
	topic, err := c.CreateTopic(ctx, name, quorumq.TopicAttributes{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := topic.CreateGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	publishN(t, topic.NewPublisher(), "m", 10)
	var mu sync.Mutex
	var bodies []string
	failed := false
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var errs atomic.Int64
	o := quorumq.GroupConsumerOptions{SessionTimeout: 3 * time.Second, RetryBackoff: 10 * time.Millisecond, WaitTime: 100 * time.Millisecond,
		OnError: func(error) { errs.Add(1) }}
	done := make(chan error, 1)
	go func() {
		done <- topic.NewGroupConsumer("g", o).Run(runCtx, func(_ context.Context, m *quorumq.GroupMessage) error {
			mu.Lock()
			defer mu.Unlock()
			if m.Body == "m4" && !failed {
				failed = true
				return errors.New("not yet")
			}
			bodies = append(bodies, m.Body)
			return nil
		})
	}()
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(bodies) < 10 {
			return fmt.Errorf("%d handled", len(bodies))
		}
		return nil
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"}
	if !slices.Equal(bodies, want) || errs.Load() == 0 {
		t.Fatalf("handled %v (errors reported %d), want %v", bodies, errs.Load(), want)
	}

	err = topic.NewGroupConsumer("nope", o).Run(ctx, func(context.Context, *quorumq.GroupMessage) error { return nil })
	if !errors.Is(err, quorumq.ErrGroupNotFound) {
		t.Fatalf("Run of a missing group: %v", err)
	}
	// A group deleted under a running member ends its Run.
	go func() {
		done <- topic.NewGroupConsumer("g", o).Run(ctx, func(context.Context, *quorumq.GroupMessage) error { return nil })
	}()
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if _, err := rawTopics(t).DeleteGroup(tctx(t, 10*time.Second), &qv1.DeleteGroupRequest{Topic: name, Group: "g"}); err != nil {
			return err
		}
		select {
		case err := <-done:
			if !errors.Is(err, quorumq.ErrGroupNotFound) {
				t.Fatalf("Run of a deleted group: %v", err)
			}
			return nil
		case <-time.After(500 * time.Millisecond):
			return errors.New("Run still running after the group was deleted")
		}
	})
}

package shardserver_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// A target whose backoff ends in the middle of a relay sweep stays passed
// over until the sweep ends: its entries behind the cursor are still
// pending, so delivering those ahead would break a FIFO group's order.
// The relay's pages are bounded by bytes (1 MiB), so 60 KiB messages make
// a sweep of several pages; the test clock ends the FIFO queue's backoff
// while the relay delivers the first page of the second burst.
func TestRelayKeepsFIFOOrderWhenBackoffEndsMidSweep(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	tc := topicClient(t, n.GRPCAddr())
	ctx := tctx(t)
	for _, q := range []*qv1.CreateQueueRequest{{Name: "order.fifo", Attributes: &qv1.QueueAttributes{Fifo: true}}, {Name: "plain"}} {
		if _, err := n.Client.CreateQueue(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tc.CreateTopic(ctx, &qv1.CreateTopicRequest{Name: "big", Attributes: &qv1.TopicAttributes{Partitions: 1}}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"order.fifo", "plain"} {
		if _, err := tc.Subscribe(ctx, &qv1.SubscribeRequest{Topic: "big", Queue: q}); err != nil {
			t.Fatal(err)
		}
	}

	srv := n.Server()
	real := srv.DelivererForTest()
	var (
		mu       sync.Mutex
		fifoDown = true  // the FIFO queue's shard "fails"
		advance  = false // the next delivery ends every backoff first
		failures int
	)
	srv.SetDeliverer(func(ctx context.Context, es []*storepb.OutboxEntry) (*storepb.AckOutbox, error) {
		mu.Lock()
		down := fifoDown
		if advance {
			advance = false
			clock.Advance(time.Minute)
		}
		var rest []*storepb.OutboxEntry
		for _, e := range es {
			if down && e.GetTargetQueue() == "order.fifo" {
				failures++
				continue
			}
			rest = append(rest, e)
		}
		mu.Unlock()
		ack, err := real(ctx, rest)
		if err == nil && len(rest) < len(es) {
			err = errors.New("order.fifo's shard is unreachable")
		}
		return ack, err
	})

	body := strings.Repeat("x", 60<<10)
	publish := func(from, count int) {
		t.Helper()
		var es []*qv1.PublishBatchEntry
		for i := from; i < from+count; i++ {
			es = append(es, &qv1.PublishBatchEntry{Id: fmt.Sprint(i), Body: fmt.Sprintf("%03d %s", i, body), PartitionKey: "k"})
		}
		r, err := tc.PublishBatch(ctx, &qv1.PublishBatchRequest{Topic: "big", Entries: es})
		if err != nil || len(r.GetFailed()) > 0 {
			t.Fatalf("publish %d..%d: %v %v", from, from+count-1, err, r.GetFailed())
		}
	}
	// First burst: the FIFO queue's copies fail once and back off; the
	// test clock stands still, so the backoff lasts until it moves.
	publish(0, 5)
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if failures == 0 {
			return errors.New("no failed delivery yet")
		}
		return nil
	})
	mu.Lock()
	fifoDown, advance = false, true
	mu.Unlock()
	// Second burst, in one command: 60 entries over several pages. The
	// first page holds the FIFO queue's pending copies (passed over) and
	// the plain queue's first new ones, whose delivery ends the backoff.
	publish(5, 30)

	got := drainQueue(t, n.Client, "order.fifo", 35)
	for i, m := range got {
		if want := fmt.Sprintf("%03d ", i); !strings.HasPrefix(m.GetBody(), want) {
			var order []string
			for _, m := range got {
				order = append(order, m.GetBody()[:3])
			}
			t.Fatalf("order.fifo: message %d is %q, want %q: order %v", i, m.GetBody()[:4], want, order)
		}
	}
	drainQueue(t, n.Client, "plain", 35)
}

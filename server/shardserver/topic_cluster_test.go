package shardserver_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server/node"
)

// On three nodes, publishes through every node while one node is cut off
// and healed: every acknowledged publish reaches each subscribed queue
// exactly once (the outbox relay and the target's delivered markers across
// leader changes on both sides), and the group reads every one of them in
// offset order without gaps (idempotent retries leave no duplicates in
// the log).
func TestTopicClusterExactlyOnceAcrossLeaderChanges(t *testing.T) {
	c := startMemCluster(t, 3, func(cfg *node.Config) { cfg.Shards = partShards })
	ids := []uint64{1, 2, 3}
	tcs := map[uint64]qv1.TopicServiceClient{}
	for _, id := range ids {
		tcs[id] = topicClient(t, c.Nodes[id].GRPCAddr())
	}
	ctx := tctx(t)
	if _, err := c.Clients[1].CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "all"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Clients[1].CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "ord.fifo", Attributes: &qv1.QueueAttributes{Fifo: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tcs[1].CreateTopic(ctx, &qv1.CreateTopicRequest{Name: "ha", Attributes: &qv1.TopicAttributes{Partitions: 3}}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"all", "ord.fifo"} {
		if _, err := tcs[2].Subscribe(ctx, &qv1.SubscribeRequest{Topic: "ha", Queue: q}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tcs[3].CreateGroup(ctx, &qv1.CreateGroupRequest{Topic: "ha", Group: "g"}); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	acked := map[string]string{} // message id -> body
	// The load runs until the phases below end it (each bounded), not
	// for a fixed time: under load a fixed time may see few publishes.
	var wg sync.WaitGroup
	defer wg.Wait()
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; loadCtx.Err() == nil; i++ {
				body := fmt.Sprintf("w%d-%d", w, i)
				// Retry with the idempotency key until acknowledged or the
				// load ends (then the outcome is unknown).
				for loadCtx.Err() == nil {
					cctx, cancel := context.WithTimeout(loadCtx, 3*time.Second)
					r, err := tcs[ids[rand.IntN(3)]].Publish(cctx, &qv1.PublishRequest{Topic: "ha", Body: body,
						PartitionKey: fmt.Sprintf("w%d", w), IdempotencyKey: body})
					cancel()
					if err == nil {
						mu.Lock()
						acked[r.GetMessageId()] = body
						mu.Unlock()
						break
					}
				}
			}
		}()
	}
	// Each phase lasts its time and until at least `least` more publishes
	// were acknowledged in it (so that the cut lands in a running load
	// and the load runs on after the heal), or fails after a minute.
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	phase := func(name string, d time.Duration, least int) {
		t.Helper()
		from, start := count(), time.Now()
		<-time.After(d)
		checkFor(t, 60*time.Second, 20*time.Millisecond, func() error {
			if n := count() - from; n < least {
				return fmt.Errorf("%s: %d publishes acknowledged in %v: the workload did not run", name, n, time.Since(start).Round(time.Millisecond))
			}
			return nil
		})
		t.Logf("%s: %d publishes acknowledged in %v", name, count()-from, time.Since(start).Round(time.Millisecond))
	}
	phase("before the cut", 2*time.Second, 25)
	cut := ids[rand.IntN(3)]
	c.Net.Partition(cut)
	t.Logf("node %d cut off", cut)
	phase("cut off", 3*time.Second, 0)
	c.Net.Heal()
	phase("healed", 2*time.Second, 25)
	stopLoad()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()

	for _, q := range []string{"all", "ord.fifo"} {
		got := map[string]int{}
		checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			r, err := c.Clients[1].ReceiveMessages(tctx(t), &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 100, VisibilityTimeout: durationpb.New(time.Hour)})
			if err != nil {
				return err
			}
			del := &qv1.DeleteMessageBatchRequest{Queue: q}
			for i, m := range r.GetMessages() {
				got[m.GetMessageId()]++
				del.Entries = append(del.Entries, &qv1.DeleteMessageBatchEntry{Id: fmt.Sprint(i), ReceiptHandle: m.GetReceiptHandle()})
			}
			if len(del.Entries) > 0 {
				if d, err := c.Clients[1].DeleteMessageBatch(tctx(t), del); err != nil || len(d.GetFailed()) > 0 {
					return fmt.Errorf("delete: %v %v", d, err)
				}
			}
			for id := range acked {
				if got[id] == 0 {
					return fmt.Errorf("%s: acknowledged %s not delivered yet (%d of %d)", q, id, len(got), len(acked))
				}
			}
			return nil
		})
		// Let any stray copy arrive, then check nothing came twice.
		r, err := c.Clients[1].ReceiveMessages(tctx(t), &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10, WaitTime: durationpb.New(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range r.GetMessages() {
			got[m.GetMessageId()]++
		}
		for id, n := range got {
			if n != 1 {
				t.Errorf("%s: message %s delivered %d times", q, id, n)
			}
		}
	}

	// The group reads every acknowledged message once, in offset order.
	read := map[string]int{}
	for p := int32(0); p < 3; p++ {
		for _, m := range readAll(t, tcs[2], "ha", "g", p, 0) {
			read[m.GetMessageId()]++
			if read[m.GetMessageId()] > 1 {
				t.Errorf("message %s twice in the log", m.GetMessageId())
			}
		}
	}
	for id := range acked {
		if read[id] != 1 {
			t.Errorf("acknowledged %s read %d times", id, read[id])
		}
	}
	t.Logf("%d publishes acknowledged, %d messages in the log", len(acked), len(read))
}

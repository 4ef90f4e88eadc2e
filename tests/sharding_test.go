package tests

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/router"
)

// startAPINode starts a stateless API-tier node routing to c's storage nodes.
func (c *cluster) startAPINode(id uint64) *proc {
	c.t.Helper()
	p := startServe(c.t, c.t.TempDir(), append([]string{"--role", "api", "--node-id", fmt.Sprint(id), "--peers", c.peers}, c.extra...)...)
	waitReady(c.t, p.client(c.t))
	return p
}

// shardLeaders returns node id's view of every shard's leader.
func (c *cluster) shardLeaders(via qv1.ClusterServiceClient) map[uint64]uint64 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := via.GetCluster(ctx, &qv1.GetClusterRequest{})
	if err != nil {
		c.t.Fatalf("GetCluster: %v", err)
	}
	out := map[uint64]uint64{}
	for _, sh := range r.GetShards() {
		out[sh.GetId()] = sh.GetLeader()
	}
	return out
}

// TestShardedClusterKeepsServingThroughKill is issue 4's acceptance test:
// three storage nodes with 8 Raft groups, one API node, 20 queues of 4
// partitions; producers and consumers go through the API node while a
// storage node (the metadata shard's leader) is killed with SIGKILL. No
// acknowledged message is lost, and every queue serves after the kill.
func TestShardedClusterKeepsServingThroughKill(t *testing.T) {
	c := startCluster(t, 3, "--shards", "8")
	c.leader()
	api := c.startAPINode(100)
	cl := api.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The API node sees 8 shards, each with a leader.
	leaders := c.shardLeaders(qv1.NewClusterServiceClient(api.grpcConn(t)))
	if len(leaders) != 8 {
		t.Fatalf("API node sees %d shards, want 8", len(leaders))
	}
	const queues, parts = 20, 4
	names := make([]string, queues)
	for i := range names {
		names[i] = fmt.Sprintf("orders-%02d", i)
		if _, err := cl.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: names[i], Attributes: &qv1.QueueAttributes{
			Partitions: parts, VisibilityTimeout: durationpb.New(5 * time.Second)}}); err != nil {
			t.Fatalf("create %s: %v", names[i], err)
		}
		// The partitions are on four different data shards.
		seen := map[uint64]bool{}
		for p := range parts {
			seen[router.ShardOf(8, server.DevTenant, names[i], p)] = true
		}
		if len(seen) != parts {
			t.Fatalf("%s: partitions on %d shards, want %d", names[i], len(seen), parts)
		}
	}

	var (
		mu        sync.Mutex
		acked     = map[string]bool{} // body -> acknowledged
		received  = map[string]int{}
		sendErrs  atomic.Int64
		afterKill = make([]atomic.Int64, queues) // successful sends per queue after the kill
		killed    atomic.Bool
	)
	loadCtx, stopLoad := context.WithTimeout(ctx, 12*time.Second)
	defer stopLoad()
	var wg sync.WaitGroup
	for p := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; loadCtx.Err() == nil && k < 100000; k++ {
				qi := (p*7 + k) % queues
				body := fmt.Sprintf("p%d-%d", p, k)
				cctx, ccancel := context.WithTimeout(loadCtx, 5*time.Second)
				_, err := cl.SendMessage(cctx, &qv1.SendMessageRequest{Queue: names[qi], Body: body, IdempotencyKey: body})
				ccancel()
				if err != nil {
					sendErrs.Add(1)
					continue
				}
				mu.Lock()
				acked[body] = true
				mu.Unlock()
				if killed.Load() {
					afterKill[qi].Add(1)
				}
			}
		}()
	}
	consume := func(ctx context.Context, q string) int {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		r, err := cl.ReceiveMessages(rctx, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10, WaitTime: durationpb.New(0)})
		if err != nil {
			return 0
		}
		var del []*qv1.DeleteMessageBatchEntry
		mu.Lock()
		for i, m := range r.GetMessages() {
			received[m.GetBody()]++
			del = append(del, &qv1.DeleteMessageBatchEntry{Id: fmt.Sprint(i), ReceiptHandle: m.GetReceiptHandle()})
		}
		mu.Unlock()
		if len(del) > 0 {
			_, _ = cl.DeleteMessageBatch(rctx, &qv1.DeleteMessageBatchRequest{Queue: q, Entries: del})
		}
		return len(del)
	}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; loadCtx.Err() == nil && k < 100000; k++ {
				consume(loadCtx, names[(w*5+k)%queues])
			}
		}()
	}

	time.Sleep(4 * time.Second)
	victim := c.shardLeaders(c.clusterClient(1))[0]
	t.Logf("killing node %d (leader of the metadata shard) under load", victim)
	c.kill(victim)
	killed.Store(true)
	wg.Wait()

	for i := range afterKill {
		if afterKill[i].Load() == 0 {
			t.Errorf("queue %s: no send succeeded after the kill", names[i])
		}
	}
	// Drain: every acknowledged message must come out (at least once).
	deadline := time.Now().Add(90 * time.Second)
	for {
		mu.Lock()
		missing := 0
		for b := range acked {
			if received[b] == 0 {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledged messages never received", missing)
		}
		got := 0
		for _, q := range names {
			got += consume(ctx, q)
		}
		if got == 0 {
			time.Sleep(200 * time.Millisecond) // leases of undeleted messages run out
		}
	}
	mu.Lock()
	dups := 0
	for _, n := range received {
		if n > 1 {
			dups++
		}
	}
	t.Logf("acknowledged %d sends (%d failed during failover), received all, %d received more than once", len(acked), sendErrs.Load(), dups)
	mu.Unlock()
	for id := range c.procs {
		if id != victim {
			waitReady(t, c.client(id))
		}
	}
}

// TestCrossShardDeadLetterExactlyOnce: the source queue and its dead-letter
// queue live on different shards; while poison messages are being moved,
// the dead-letter shard's leader is killed. Every poison message ends in
// the dead-letter queue exactly once.
func TestCrossShardDeadLetterExactlyOnce(t *testing.T) {
	const shards = 4
	c := startCluster(t, 3, "--shards", fmt.Sprint(shards))
	c.leader()
	api := c.startAPINode(100)
	cl := api.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	src, dlq := "poison-src", ""
	for i := 0; dlq == ""; i++ {
		if name := fmt.Sprintf("poison-dlq-%d", i); router.ShardOf(shards, server.DevTenant, name, 0) != router.ShardOf(shards, server.DevTenant, src, 0) {
			dlq = name
		}
	}
	srcShard, dlqShard := router.ShardOf(shards, server.DevTenant, src, 0), router.ShardOf(shards, server.DevTenant, dlq, 0)
	if _, err := cl.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: dlq}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: src, Attributes: &qv1.QueueAttributes{
		DeadLetter: &qv1.DeadLetterPolicy{Queue: dlq, MaxReceiveCount: 1}}}); err != nil {
		t.Fatal(err)
	}
	const n = 300
	for k := 0; k < n; k += 10 {
		req := &qv1.SendMessageBatchRequest{Queue: src}
		for j := k; j < k+10; j++ {
			req.Entries = append(req.Entries, &qv1.SendMessageBatchEntry{Id: fmt.Sprint(j), Body: fmt.Sprintf("poison-%d", j)})
		}
		if r, err := cl.SendMessageBatch(ctx, req); err != nil || len(r.GetFailed()) > 0 {
			t.Fatalf("send: %v %v", err, r.GetFailed())
		}
	}
	// First receive of each: its one allowed delivery, returned at once.
	for got := 0; got < n; {
		r, err := cl.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: src, MaxMessages: 100, VisibilityTimeout: durationpb.New(0)})
		if err != nil {
			t.Fatal(err)
		}
		got += len(r.GetMessages())
	}
	victim := c.shardLeaders(c.clusterClient(1))[dlqShard]
	t.Logf("source on shard %d, dead-letter queue on shard %d led by node %d", srcShard, dlqShard, victim)
	// Receives now move messages into the outbox; kill the DLQ leader while
	// the relay delivers them.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(150 * time.Millisecond)
		c.kill(victim)
	}()
	for k := 0; k < 200; k++ {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := cl.ReceiveMessages(rctx, &qv1.ReceiveMessagesRequest{Queue: src, MaxMessages: 20, WaitTime: durationpb.New(0)})
		rcancel()
		if err == nil && len(r.GetMessages()) > 0 {
			t.Fatalf("a message past its receive limit was delivered: %s", r.GetMessages()[0].GetBody())
		}
		st, qerr := cl.GetQueue(ctx, &qv1.GetQueueRequest{Name: src})
		if qerr == nil && st.GetQueue().GetStats().GetVisible() == 0 && st.GetQueue().GetStats().GetInFlight() == 0 && k > 5 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	c.start(victim)
	// Every poison message arrives in the DLQ exactly once.
	seen := map[string]int{}
	deadline := time.Now().Add(60 * time.Second)
	for len(seen) < n && time.Now().Before(deadline) {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := cl.ReceiveMessages(rctx, &qv1.ReceiveMessagesRequest{Queue: dlq, MaxMessages: 100, VisibilityTimeout: durationpb.New(time.Hour)})
		rcancel()
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for _, m := range r.GetMessages() {
			seen[m.GetBody()]++
			if m.GetDeadLetterSource() != src {
				t.Errorf("%s: dead_letter_source %q, want %q", m.GetBody(), m.GetDeadLetterSource(), src)
			}
		}
		if len(r.GetMessages()) == 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if len(seen) != n {
		t.Fatalf("%d of %d poison messages reached the dead-letter queue", len(seen), n)
	}
	for b, k := range seen {
		if k != 1 {
			t.Errorf("%s delivered %d times from the DLQ", b, k)
		}
	}
	// Nothing else is there: all n are in flight (hour lease), none visible.
	q, err := cl.GetQueue(ctx, &qv1.GetQueueRequest{Name: dlq})
	if err != nil {
		t.Fatal(err)
	}
	if st := q.GetQueue().GetStats(); st.GetInFlight() != n || st.GetVisible() != 0 || st.GetDelayed() != 0 {
		t.Fatalf("DLQ stats %v, want exactly %d in flight", st, n)
	}
}

package router_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/server/shardserver"
)

func TestPartitionedQueueSpreadsSendsAndGathersReceives(t *testing.T) {
	n := startSharded(t)
	ctx := tctx(t)
	createPartitioned(t, n.Client, "spread", 4, nil)
	for i := range 40 {
		if _, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "spread", Body: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		if d := partitionDepth(t, n, "spread", i); d != 10 {
			t.Errorf("partition %d holds %d messages, want 10 (round robin)", i, d)
		}
	}
	q, err := n.Client.GetQueue(ctx, &qv1.GetQueueRequest{Name: "spread"})
	if err != nil {
		t.Fatal(err)
	}
	if got := q.GetQueue().GetStats().GetVisible(); got != 40 || q.GetQueue().GetName() != "spread" {
		t.Fatalf("GetQueue: %s visible %d, want spread 40", q.GetQueue().GetName(), got)
	}
	shards := map[uint64]bool{}
	for i, sh := range q.GetQueue().GetPartitionShards() {
		if sh != router.ShardOf(partShards, server.DevTenant, "spread", i) || sh == router.MetadataShard {
			t.Fatalf("partition %d shown on shard %d", i, sh)
		}
		shards[sh] = true
	}
	if len(shards) != 4 {
		t.Fatalf("placement %v: want 4 distinct data shards", q.GetQueue().GetPartitionShards())
	}
	// One receive gathers over the partitions, from a rotating start.
	r, err := n.Client.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "spread", MaxMessages: 25})
	if err != nil {
		t.Fatal(err)
	}
	visited := map[uint16]int{}
	for _, m := range r.GetMessages() {
		visited[handlePartition(t, m.GetReceiptHandle())]++
	}
	if len(r.GetMessages()) != 25 || len(visited) != 3 {
		t.Fatalf("a receive of 25 got %d from partitions %v, want 25 from 3", len(r.GetMessages()), visited)
	}
	r2, err := n.Client.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "spread", MaxMessages: 40})
	if err != nil {
		t.Fatal(err)
	}
	msgs := append(r.GetMessages(), r2.GetMessages()...)
	if len(msgs) != 40 {
		t.Fatalf("two receives got %d of 40", len(msgs))
	}
	req := &qv1.DeleteMessageBatchRequest{Queue: "spread"}
	for i, m := range msgs {
		req.Entries = append(req.Entries, &qv1.DeleteMessageBatchEntry{Id: fmt.Sprint(i), ReceiptHandle: m.GetReceiptHandle()})
	}
	// Entries of several partitions in one batch, one more by the single call.
	last := req.Entries[len(req.Entries)-1]
	req.Entries = req.Entries[:len(req.Entries)-1]
	d, err := n.Client.DeleteMessageBatch(ctx, req)
	if err != nil || len(d.GetFailed()) != 0 || len(d.GetSuccessful()) != 39 {
		t.Fatalf("batch delete over partitions: %v failed=%v ok=%d", err, d.GetFailed(), len(d.GetSuccessful()))
	}
	if _, err := n.Client.DeleteMessage(ctx, &qv1.DeleteMessageRequest{Queue: "spread", ReceiptHandle: last.GetReceiptHandle()}); err != nil {
		t.Fatal(err)
	}
	q, _ = n.Client.GetQueue(ctx, &qv1.GetQueueRequest{Name: "spread"})
	if st := q.GetQueue().GetStats(); st.GetVisible()+st.GetInFlight()+st.GetDelayed() != 0 {
		t.Fatalf("after deleting all: %v", st)
	}
}

func TestPartitionKeyKeepsOrderOnOnePartition(t *testing.T) {
	n := startSharded(t)
	ctx := tctx(t)
	createPartitioned(t, n.Client, "keyed", 4, nil)
	for i := range 20 {
		if _, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "keyed", Body: fmt.Sprint(i), PartitionKey: "customer-7"}); err != nil {
			t.Fatal(err)
		}
	}
	nonEmpty := 0
	for i := range 4 {
		if partitionDepth(t, n, "keyed", i) > 0 {
			nonEmpty++
		}
	}
	if nonEmpty != 1 {
		t.Fatalf("one partition key spread over %d partitions", nonEmpty)
	}
	for want := range 20 {
		r, err := n.Client.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "keyed", MaxMessages: 1})
		if err != nil || len(r.GetMessages()) != 1 {
			t.Fatalf("receive %d: %v %v", want, err, r)
		}
		if m := r.GetMessages()[0]; m.GetBody() != fmt.Sprint(want) {
			t.Fatalf("got %s, want %d: a partition key keeps its order", m.GetBody(), want)
		} else if _, err := n.Client.DeleteMessage(ctx, &qv1.DeleteMessageRequest{Queue: "keyed", ReceiptHandle: m.GetReceiptHandle()}); err != nil {
			t.Fatal(err)
		}
	}
	long := string(make([]byte, 129))
	_, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "keyed", Body: "x", PartitionKey: long})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
}

func TestLongPollAcrossPartitionsWakesOnSend(t *testing.T) {
	n := startSharded(t)
	ctx := tctx(t)
	createPartitioned(t, n.Client, "poll", 4, &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(time.Second)})
	type result struct {
		r   *qv1.ReceiveMessagesResponse
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		r, err := n.Client.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "poll", MaxMessages: 5, WaitTime: durationpb.New(10 * time.Second)})
		done <- result{r, err, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond)
	sent := time.Now()
	for i := range 3 { // land on three different partitions
		if _, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "poll", Body: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if len(res.r.GetMessages()) == 0 || res.at.Sub(sent) > 3*time.Second {
		t.Fatalf("long poll answered %d messages %v after the send", len(res.r.GetMessages()), res.at.Sub(sent))
	}
	// Nothing is lost: what the poll did not return was never leased, so
	// the next receives get it (those sends may still be committing).
	got := len(res.r.GetMessages())
	checkFor(t, 8*time.Second, 100*time.Millisecond, func() error {
		r, err := n.Client.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "poll", MaxMessages: 10, VisibilityTimeout: durationpb.New(time.Hour)})
		if err != nil {
			return err
		}
		got += len(r.GetMessages())
		if got < 3 {
			return fmt.Errorf("%d of 3 received", got)
		}
		return nil
	})
}

func TestPartitionsGrowOnALiveQueue(t *testing.T) {
	n := startSharded(t)
	ctx := tctx(t)
	createPartitioned(t, n.Client, "grow", 2, nil)
	if _, err := n.Client.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "grow", Attributes: &qv1.QueueAttributes{Partitions: 4},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"partitions"}}}); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if _, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "grow", Body: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		if d := partitionDepth(t, n, "grow", i); d != 2 {
			t.Errorf("partition %d holds %d, want 2 after growing to 4", i, d)
		}
	}
	_, err := n.Client.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "grow", Attributes: &qv1.QueueAttributes{Partitions: 3},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"partitions"}}})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	if _, err := n.Client.PurgeQueue(ctx, &qv1.PurgeQueueRequest{Name: "grow"}); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if d := partitionDepth(t, n, "grow", i); d != 0 {
			t.Errorf("partition %d holds %d after purge", i, d)
		}
	}
	// Deleting the queue deletes its partitions; a new queue of that name
	// starts empty.
	if _, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "grow", Body: "old"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Client.DeleteQueue(ctx, &qv1.DeleteQueueRequest{Name: "grow"}); err != nil {
		t.Fatal(err)
	}
	createPartitioned(t, n.Client, "grow", 4, nil)
	q, err := n.Client.GetQueue(ctx, &qv1.GetQueueRequest{Name: "grow"})
	if err != nil {
		t.Fatal(err)
	}
	if st := q.GetQueue().GetStats(); st.GetVisible() != 0 {
		t.Fatalf("re-created queue has %v", st)
	}
}

func TestPartitionedDeadLetterAndRedrive(t *testing.T) {
	n := startSharded(t)
	ctx := tctx(t)
	createPartitioned(t, n.Client, "dlq", 1, nil)
	createPartitioned(t, n.Client, "work", 4, &qv1.QueueAttributes{DeadLetter: &qv1.DeadLetterPolicy{Queue: "dlq", MaxReceiveCount: 1}})
	ids := map[string]bool{}
	for i := range 8 {
		r, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "work", Body: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		ids[r.GetMessageId()] = true
	}
	for got := 0; got < 8; {
		r, err := n.Client.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "work", MaxMessages: 10, VisibilityTimeout: durationpb.New(0)})
		if err != nil {
			t.Fatal(err)
		}
		got += len(r.GetMessages())
	}
	r, err := n.Client.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "work", MaxMessages: 10})
	if err != nil || len(r.GetMessages()) != 0 {
		t.Fatalf("past the receive limit: %v %v", err, r.GetMessages())
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		q, err := n.Client.GetQueue(ctx, &qv1.GetQueueRequest{Name: "dlq"})
		if err != nil {
			return err
		}
		if v := q.GetQueue().GetStats().GetVisible(); v != 8 {
			return fmt.Errorf("DLQ holds %d of 8", v)
		}
		return nil
	})
	moved, err := n.Client.RedriveMessages(ctx, &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq"})
	if err != nil || moved.GetMoved() != 8 {
		t.Fatalf("redrive: %v moved %d", err, moved.GetMoved())
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		r, err := n.Client.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "work", MaxMessages: 10, VisibilityTimeout: durationpb.New(time.Hour)})
		if err != nil {
			return err
		}
		for _, m := range r.GetMessages() {
			if !ids[m.GetMessageId()] || m.GetReceiveCount() != 1 {
				return fmt.Errorf("redriven %s count %d", m.GetMessageId(), m.GetReceiveCount())
			}
			delete(ids, m.GetMessageId())
		}
		if len(ids) > 0 {
			return fmt.Errorf("%d not back yet", len(ids))
		}
		return nil
	})
	// The DLQ is another queue's: it cannot be deleted.
	_, err = n.Client.DeleteQueue(ctx, &qv1.DeleteQueueRequest{Name: "dlq"})
	wantReason(t, err, codes.FailedPrecondition, server.ReasonQueueInUse)
}

func TestClientCannotAddressAShardDirectly(t *testing.T) {
	n := startSharded(t)
	ctx := tctx(t)
	createPartitioned(t, n.Client, "direct", 2, nil)
	// A client's routing headers are dropped: "direct#1" is then just an
	// invalid queue name, not partition 1 on its shard.
	sh := router.ShardOf(partShards, server.DevTenant, "direct", 1)
	mctx := metadata.AppendToOutgoingContext(ctx, "x-quorumq-shard", fmt.Sprint(sh))
	_, err := n.Client.SendMessage(mctx, &qv1.SendMessageRequest{Queue: "direct#1", Body: "x"})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	// Nor can a client make a partition copy outside the queue quota.
	mctx = metadata.AppendToOutgoingContext(ctx, "x-quorumq-shard", fmt.Sprint(sh), "x-quorumq-incarnation", "1", "x-quorumq-partition", "1")
	if _, err := n.Client.CreateQueue(mctx, &qv1.CreateQueueRequest{Name: "sneaky"}); err != nil {
		t.Fatal(err)
	}
	for s := uint64(1); s < partShards; s++ {
		if _, err := n.ShardStore(s).GetQueue(server.DevTenant, "sneaky#1", 0); err == nil {
			t.Fatalf("a client's headers made a partition copy on shard %d", s)
		}
	}
	// Nor turn its receives into wait-only polls that never lease.
	if _, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "direct", Body: "waiting"}); err != nil {
		t.Fatal(err)
	}
	mctx = metadata.AppendToOutgoingContext(ctx, "x-quorumq-wait-only", "1")
	got, err := n.Client.ReceiveMessages(mctx, &qv1.ReceiveMessagesRequest{Queue: "direct", MaxMessages: 10, WaitTime: durationpb.New(0)})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.GetMessages()) != 1 || got.GetMessages()[0].GetBody() != "waiting" {
		t.Fatalf("a receive with a client's wait-only header got %v, want the one message", got.GetMessages())
	}
}

// A batch without partition keys stays one command on one partition, and a
// retried batch lands on the same partition, so its idempotency keys
// answer with the first results.
func TestBatchRetryOnPartitionedQueueIsIdempotent(t *testing.T) {
	n := startSharded(t)
	ctx := tctx(t)
	createPartitioned(t, n.Client, "batched", 4, nil)
	req := &qv1.SendMessageBatchRequest{Queue: "batched"}
	for i := range 10 {
		req.Entries = append(req.Entries, &qv1.SendMessageBatchEntry{Id: fmt.Sprint(i), Body: fmt.Sprint(i), IdempotencyKey: fmt.Sprintf("key-%d", i)})
	}
	first, err := n.Client.SendMessageBatch(ctx, req)
	if err != nil || len(first.GetSuccessful()) != 10 {
		t.Fatalf("%v %v", err, first.GetFailed())
	}
	again, err := n.Client.SendMessageBatch(ctx, req)
	if err != nil || len(again.GetSuccessful()) != 10 {
		t.Fatalf("%v %v", err, again.GetFailed())
	}
	ids := map[string]string{}
	for _, s := range first.GetSuccessful() {
		ids[s.GetId()] = s.GetMessageId()
	}
	for _, s := range again.GetSuccessful() {
		if ids[s.GetId()] != s.GetMessageId() {
			t.Fatalf("retried entry %s got %s, first %s", s.GetId(), s.GetMessageId(), ids[s.GetId()])
		}
	}
	nonEmpty := 0
	for i := range 4 {
		if d := partitionDepth(t, n, "batched", i); d > 0 {
			nonEmpty++
			if d != 10 {
				t.Fatalf("partition %d holds %d, want the whole batch once", i, d)
			}
		}
	}
	if nonEmpty != 1 {
		t.Fatalf("one batch spread over %d partitions", nonEmpty)
	}
}

// receivesProposed sums the receive commands proposed by the servers of
// the shards holding a queue's partitions.
func receivesProposed(srv func(shard uint64) *shardserver.Server, queue string, parts int) uint64 {
	var sum uint64
	for i := range parts {
		sum += srv(router.ShardOf(partShards, server.DevTenant, queue, i)).ReceivesProposed()
	}
	return sum
}

// longPollTakesOnlyWhatItReturns runs a long poll (max_messages 1) on an
// empty queue of 4 partitions while two messages arrive at once on two
// partitions: the poll returns one, and the other was never leased (a
// plain receive gets it at its first receive, and nothing is left in
// flight). proposed counts the receives proposed on the partitions' shards;
// with idle, the waiting poll must not have proposed any.
func longPollTakesOnlyWhatItReturns(t *testing.T, c qv1.QueueServiceClient, queue string, proposed func() uint64, idle bool) {
	t.Helper()
	ctx := tctx(t)
	createPartitioned(t, c, queue, 4, nil)
	before := proposed()
	type result struct {
		r   *qv1.ReceiveMessagesResponse
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: queue, MaxMessages: 1,
			WaitTime: durationpb.New(3 * time.Second), VisibilityTimeout: durationpb.New(time.Hour)})
		done <- result{r, err}
	}()
	// The gather makes one receive per partition; then the poll waits.
	checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := proposed() - before; got < 4 {
			return fmt.Errorf("%d receives proposed, want the gather's 4", got)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond)
	if idle {
		if got := proposed() - before; got != 4 {
			t.Fatalf("%d receives proposed before any send, want the gather's 4 only", got)
		}
	}
	// One batch, two partition keys: two sends in parallel, on partitions 0 and 2.
	b, err := c.SendMessageBatch(ctx, &qv1.SendMessageBatchRequest{Queue: queue, Entries: []*qv1.SendMessageBatchEntry{
		{Id: "a", Body: "a", PartitionKey: keyForPartition(4, 0)},
		{Id: "b", Body: "b", PartitionKey: keyForPartition(4, 2)},
	}})
	if err != nil || len(b.GetSuccessful()) != 2 {
		t.Fatalf("send: %v %v", err, b.GetFailed())
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if len(res.r.GetMessages()) != 1 {
		t.Fatalf("long poll of max 1 returned %d messages", len(res.r.GetMessages()))
	}
	first := res.r.GetMessages()[0]
	if first.GetReceiveCount() != 1 {
		t.Fatalf("polled message received %d times, want 1", first.GetReceiveCount())
	}
	// Nothing else is leased: the other message is visible, not in flight.
	q, err := c.GetQueue(ctx, &qv1.GetQueueRequest{Name: queue})
	if err != nil {
		t.Fatal(err)
	}
	if st := q.GetQueue().GetStats(); st.GetVisible() != 1 || st.GetInFlight() != 1 {
		t.Fatalf("after the poll: %d visible, %d in flight; want 1 and 1", st.GetVisible(), st.GetInFlight())
	}
	r, err := c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: queue, MaxMessages: 10, VisibilityTimeout: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetMessages()) != 1 || r.GetMessages()[0].GetMessageId() == first.GetMessageId() {
		t.Fatalf("plain receive got %v, want the other message", r.GetMessages())
	}
	if got := r.GetMessages()[0].GetReceiveCount(); got != 1 {
		t.Fatalf("the message the poll did not return was received %d times, want 1", got)
	}
}

// A long poll across partitions leases only the messages it returns: a
// message it did not return keeps its receive count and stays visible.
func TestPartitionLongPollLeasesOnlyWhatItReturns(t *testing.T) {
	n := startSharded(t)
	longPollTakesOnlyWhatItReturns(t, n.Client, "surplus", func() uint64 {
		return receivesProposed(n.ShardServer, "surplus", 4)
	}, false) // TestPartitionLongPollWaitsWithoutProposing checks that
}

// While a long poll across partitions waits, no partition proposes a
// receive: only the gather's one per partition, then one on the partition
// where a message arrived.
func TestPartitionLongPollWaitsWithoutProposing(t *testing.T) {
	n := startSharded(t)
	ctx := tctx(t)
	createPartitioned(t, n.Client, "idle", 4, nil)
	proposed := func() uint64 { return receivesProposed(n.ShardServer, "idle", 4) }

	// A poll that ends empty.
	before := proposed()
	start := time.Now()
	r, err := n.Client.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "idle", WaitTime: durationpb.New(500 * time.Millisecond)})
	if err != nil || len(r.GetMessages()) != 0 {
		t.Fatalf("poll of an empty queue: %v %v", err, r.GetMessages())
	}
	if el := time.Since(start); el < 500*time.Millisecond {
		t.Fatalf("answered after %v, before its 500ms wait", el)
	}
	if got := proposed() - before; got != 4 {
		t.Fatalf("an empty poll proposed %d receives, want the gather's 4", got)
	}

	// A poll that a send wakes.
	before = proposed()
	done := make(chan *qv1.ReceiveMessagesResponse, 1)
	go func() {
		r, err := n.Client.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "idle", WaitTime: durationpb.New(10 * time.Second)})
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if proposed()-before < 4 {
			return errNotYet
		}
		return nil
	})
	select {
	case r := <-done:
		t.Fatalf("long poll returned before any send: %v", r)
	case <-time.After(500 * time.Millisecond):
	}
	if got := proposed() - before; got != 4 {
		t.Fatalf("%d receives proposed while waiting, want the gather's 4 only", got)
	}
	sent, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "idle", Body: "wake up"})
	if err != nil {
		t.Fatal(err)
	}
	r = <-done
	if len(r.GetMessages()) != 1 || r.GetMessages()[0].GetMessageId() != sent.GetMessageId() {
		t.Fatalf("long poll got %v", r.GetMessages())
	}
	if got := proposed() - before; got != 5 {
		t.Fatalf("%d receives proposed, want 4 (gather) + 1 (where the message came)", got)
	}
}

// The same long poll through a node that leads none of the partitions:
// the wait-only calls and the receive are forwarded to their leaders.
func TestPartitionLongPollForwarded(t *testing.T) {
	c := startShardedCluster(t)
	const queue, leader = "remote", uint64(2)
	for i := range 4 {
		sh := router.ShardOf(partShards, server.DevTenant, queue, i)
		checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
			for id, n := range c.Nodes {
				st, err := n.Host().Status(sh)
				if err != nil {
					return err
				}
				if st.LeaderID == leader {
					continue
				}
				if cur := c.Nodes[st.LeaderID]; cur != nil { // hand it over, then look again
					tctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					_ = cur.Host().TransferLeadership(tctx, sh, leader)
				}
				return fmt.Errorf("node %d sees leader %d of shard %d", id, st.LeaderID, sh)
			}
			return nil
		})
	}
	longPollTakesOnlyWhatItReturns(t, c.Clients[1], queue, func() uint64 {
		return receivesProposed(c.Nodes[leader].ShardServer, queue, 4)
	}, true)
}

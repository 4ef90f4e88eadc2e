package router_test

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server/router"
)

// Issue 15.11: on a one-shard cluster the metadata shard stores a queue's
// partitions (name#i) beside the records; ListQueues shows queues only,
// on every page.
func TestListQueuesHidesPartitionCopies(t *testing.T) {
	n := startNode(t, nodeOpts{})
	createQueue(t, n, "a", nil)
	createPartitioned(t, n.Client, "p", 3, nil)
	createQueue(t, n, "z", nil)
	want := []string{"a", "p", "z"}
	l, err := n.Client.ListQueues(tctx(t), &qv1.ListQueuesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, q := range l.GetQueues() {
		got = append(got, q.GetName())
	}
	if !slices.Equal(got, want) || l.GetNextPageToken() != "" {
		t.Fatalf("ListQueues: %v (next %q), want %v", got, l.GetNextPageToken(), want)
	}
	// Page by page: the copies neither show nor make a page short.
	got = nil
	token := ""
	for range 10 {
		l, err := n.Client.ListQueues(tctx(t), &qv1.ListQueuesRequest{PageSize: 1, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.GetQueues()) != 1 {
			t.Fatalf("a page of 1 has %d queues: %v", len(l.GetQueues()), l.GetQueues())
		}
		got = append(got, l.GetQueues()[0].GetName())
		if token = l.GetNextPageToken(); token == "" {
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged ListQueues: %v, want %v", got, want)
	}
}

// Issue 15.8: growing a FIFO queue's partitions would move its groups to
// other partitions (order and deduplication broken): it is refused.
func TestFIFOPartitionsCannotGrow(t *testing.T) {
	n := startSharded(t)
	ctx := tctx(t)
	createPartitioned(t, n.Client, "g.fifo", 1, &qv1.QueueAttributes{Fifo: true, ContentBasedDeduplication: true})
	_, err := n.Client.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "g.fifo", Attributes: &qv1.QueueAttributes{Partitions: 8},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"partitions"}}})
	wantReason(t, err, codes.FailedPrecondition, "FIFO_PARTITIONS_FIXED")
	_, err = n.Client.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "g.fifo", Attributes: &qv1.QueueAttributes{Partitions: 2},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"attributes.partitions"}}})
	wantReason(t, err, codes.FailedPrecondition, "FIFO_PARTITIONS_FIXED")
	q, err := n.Client.GetQueue(ctx, &qv1.GetQueueRequest{Name: "g.fifo"})
	if err != nil {
		t.Fatal(err)
	}
	if p := q.GetQueue().GetAttributes().GetPartitions(); p != 1 {
		t.Fatalf("partitions %d after a refused growth, want 1", p)
	}
	// Other attributes still update, and a standard queue still grows.
	if _, err := n.Client.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "g.fifo", Attributes: &qv1.QueueAttributes{Partitions: 1},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"partitions"}}}); err != nil {
		t.Fatalf("same partition count on a FIFO queue: %v", err)
	}
	createPartitioned(t, n.Client, "std", 1, nil)
	if _, err := n.Client.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "std", Attributes: &qv1.QueueAttributes{Partitions: 8},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"partitions"}}}); err != nil {
		t.Fatalf("growing a standard queue: %v", err)
	}
}

// Issue 23.6: on a partitioned FIFO queue the group decides the partition;
// a partition key that differs from the group is refused (alone, in a
// batch), so one group's messages and dedup ids stay on one partition.
func TestFIFOGroupDecidesPartition(t *testing.T) {
	n := startSharded(t)
	ctx := tctx(t)
	createPartitioned(t, n.Client, "k.fifo", 4, &qv1.QueueAttributes{Fifo: true})
	for i := range 4 {
		_, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "k.fifo", Body: fmt.Sprint("x", i), GroupId: "g",
			DeduplicationId: "d", PartitionKey: keyForPartition(4, i)})
		if key := keyForPartition(4, i); key != "g" {
			wantField(t, err, "partition_key")
		}
	}
	b, err := n.Client.SendMessageBatch(ctx, &qv1.SendMessageBatchRequest{Queue: "k.fifo", Entries: []*qv1.SendMessageBatchEntry{
		{Id: "ok", Body: "m0", GroupId: "g", DeduplicationId: "d0"},
		{Id: "same", Body: "m1", GroupId: "g", DeduplicationId: "d1", PartitionKey: "g"},
		{Id: "bad", Body: "m2", GroupId: "g", DeduplicationId: "d2", PartitionKey: "other"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.GetSuccessful()) != 2 || len(b.GetFailed()) != 1 || b.GetFailed()[0].GetId() != "bad" || b.GetFailed()[0].GetCode() != "INVALID_ARGUMENT" {
		t.Fatalf("batch: ok %v failed %v, want ok, same / bad INVALID_ARGUMENT", b.GetSuccessful(), b.GetFailed())
	}
	// The same dedup id again with a different key: refused, not stored twice.
	_, err = n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "k.fifo", Body: "m0", GroupId: "g", DeduplicationId: "d0", PartitionKey: "elsewhere"})
	wantField(t, err, "partition_key")
	if _, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "k.fifo", Body: "m0", GroupId: "g", DeduplicationId: "d0"}); err != nil {
		t.Fatal(err)
	}
	home := router.PartitionOfKey("g", 4)
	for i := range 4 {
		want := int64(0)
		if i == home {
			want = 2
		}
		if d := partitionDepth(t, n, "k.fifo", i); d != want {
			t.Errorf("partition %d holds %d, want %d (group g lives on partition %d)", i, d, want, home)
		}
	}
	r := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: "k.fifo", MaxMessages: 10})
	if got := bodies(r); got != "m0 m1" {
		t.Fatalf("received %q, want m0 m1", got)
	}
}

// Issue 23.5: keyless sends and receive sweeps rotate per queue, and sends
// apart from receives. One counter for the node locked each of two queues
// sent to in turn onto every other partition ([0 20 0 20]), and a queue
// sent to and received from in turn likewise.
func TestRoutingCountersPerQueue(t *testing.T) {
	n := startSharded(t)
	ctx := tctx(t)
	for _, q := range []string{"c1", "c2", "c3"} {
		createPartitioned(t, n.Client, q, 4, nil)
	}
	for i := range 40 {
		for _, q := range []string{"c1", "c2"} {
			if _, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: q, Body: fmt.Sprint(i)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "c3", Body: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Client.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "c3"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{"c1", "c2", "c3"} {
		var depths []int64
		for i := range 4 {
			depths = append(depths, partitionDepth(t, n, q, i))
		}
		if !slices.Equal(depths, []int64{10, 10, 10, 10}) {
			t.Errorf("queue %s: partitions hold %v, want 10 each", q, depths)
		}
	}
}

// Issue 23.2: a receive retried with its receive_attempt_id returns what
// the first try leased, on a partitioned queue too (the sweep started at a
// rotating partition, so the retry leased fresh messages elsewhere).
func TestReceiveAttemptOnPartitionsReplays(t *testing.T) {
	n := startSharded(t)
	ctx := tctx(t)
	createPartitioned(t, n.Client, "att", 2, nil)
	for p := range 2 {
		for i := range 10 {
			if _, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "att", Body: fmt.Sprintf("p%d-%d", p, i),
				PartitionKey: keyForPartition(2, p)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	ids := func(r *qv1.ReceiveMessagesResponse) []string {
		var out []string
		for _, m := range r.GetMessages() {
			out = append(out, m.GetMessageId()+"/"+m.GetReceiptHandle())
		}
		return out
	}
	req := &qv1.ReceiveMessagesRequest{Queue: "att", MaxMessages: 10, ReceiveAttemptId: "attempt-1"}
	first, err := n.Client.ReceiveMessages(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.GetMessages()) != 10 {
		t.Fatalf("first try got %d, want 10", len(first.GetMessages()))
	}
	for try := range 3 {
		again, err := n.Client.ReceiveMessages(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(again), ids(first)) {
			t.Fatalf("retry %d returned %d other messages, want the first try's 10 with their handles", try+1, len(again.GetMessages()))
		}
	}
	q, err := n.Client.GetQueue(ctx, &qv1.GetQueueRequest{Name: "att"})
	if err != nil {
		t.Fatal(err)
	}
	if st := q.GetQueue().GetStats(); st.GetInFlight() != 10 || st.GetVisible() != 10 {
		t.Fatalf("after retries: %v, want 10 in flight and 10 visible", st)
	}
}

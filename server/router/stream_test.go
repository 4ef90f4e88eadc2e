package router_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/router"
)

// sendStreamAll writes the requests on one SendStream, half-closes it
// and returns every answer by id.
func sendStreamAll(t *testing.T, ctx context.Context, c qv1.QueueServiceClient, reqs []*qv1.SendStreamRequest) (map[string]*qv1.SendMessageBatchResult, map[string]*qv1.BatchResultError) {
	t.Helper()
	st, err := c.SendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for _, r := range reqs {
			if err := st.Send(r); err != nil {
				return
			}
		}
		_ = st.CloseSend()
	}()
	ok := map[string]*qv1.SendMessageBatchResult{}
	failed := map[string]*qv1.BatchResultError{}
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return ok, failed
		}
		if err != nil {
			t.Fatalf("send stream: %v", err)
		}
		for _, s := range resp.GetSuccessful() {
			if ok[s.GetId()] != nil || failed[s.GetId()] != nil {
				t.Fatalf("entry %s answered twice", s.GetId())
			}
			ok[s.GetId()] = s
		}
		for _, f := range resp.GetFailed() {
			if ok[f.GetId()] != nil || failed[f.GetId()] != nil {
				t.Fatalf("entry %s answered twice", f.GetId())
			}
			failed[f.GetId()] = f
		}
	}
}

func streamEntries(prefix string, n int) []*qv1.SendMessageBatchEntry {
	es := make([]*qv1.SendMessageBatchEntry, n)
	for i := range es {
		es[i] = &qv1.SendMessageBatchEntry{Id: fmt.Sprintf("%s%d", prefix, i), Body: fmt.Sprintf("%s body %d", prefix, i)}
	}
	return es
}

// Every entry of a SendStream is answered once, by its id, with the rules
// of SendMessageBatch per entry: writes to several queues, an invalid
// entry and a missing queue fail alone.
func TestSendStreamAnswersEveryEntry(t *testing.T) {
	n := startNode(t, nodeOpts{})
	ctx := tctx(t)
	createQueue(t, n, "ss-a", nil)
	createQueue(t, n, "ss-b", nil)
	var reqs []*qv1.SendStreamRequest
	for w := range 30 {
		q := "ss-a"
		if w%3 == 0 {
			q = "ss-b"
		}
		reqs = append(reqs, &qv1.SendStreamRequest{Queue: q, Entries: streamEntries(fmt.Sprintf("w%d-", w), 10)})
	}
	bad := streamEntries("bad-", 1)
	bad[0].Tags = []string{""} // a tag must be 1 – 128 bytes
	reqs = append(reqs, &qv1.SendStreamRequest{Queue: "ss-a", Entries: bad},
		&qv1.SendStreamRequest{Queue: "ss-missing", Entries: streamEntries("gone-", 2)})
	ok, failed := sendStreamAll(t, ctx, n.Client, reqs)
	if len(ok) != 300 {
		t.Fatalf("%d entries stored, want 300 (failed: %v)", len(ok), failed)
	}
	ids := map[string]bool{}
	for _, r := range ok {
		ids[r.GetMessageId()] = true
	}
	if len(ids) != 300 {
		t.Fatalf("%d distinct message ids for 300 entries", len(ids))
	}
	if f := failed["bad-0"]; f.GetCode() != "INVALID_ARGUMENT" {
		t.Errorf("invalid entry: %v, want INVALID_ARGUMENT", f)
	}
	for _, id := range []string{"gone-0", "gone-1"} {
		if f := failed[id]; f.GetReason() != server.ReasonQueueNotFound {
			t.Errorf("entry of a missing queue: %v, want QUEUE_NOT_FOUND", f)
		}
	}
	for q, want := range map[string]int64{"ss-a": 200, "ss-b": 100} {
		g, err := n.Client.GetQueue(ctx, &qv1.GetQueueRequest{Name: q})
		if err != nil || g.GetQueue().GetStats().GetVisible() != want {
			t.Errorf("%s: %v %v, want %d visible", q, g.GetQueue().GetStats(), err, want)
		}
	}
}

// Ids that cannot be told apart end the stream with INVALID_ARGUMENT.
func TestSendStreamRefusesDuplicateIDs(t *testing.T) {
	n := startNode(t, nodeOpts{})
	ctx := tctx(t)
	createQueue(t, n, "ss-dup", nil)
	st, err := n.Client.SendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	es := streamEntries("x", 2)
	es[1].Id = es[0].Id
	if err := st.Send(&qv1.SendStreamRequest{Queue: "ss-dup", Entries: es}); err != nil {
		t.Fatal(err)
	}
	_, err = st.Recv()
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
}

// A retried entry with its idempotency key is stored once, on a stream as
// by a call.
func TestSendStreamIdempotency(t *testing.T) {
	n := startNode(t, nodeOpts{})
	ctx := tctx(t)
	createQueue(t, n, "ss-idem", nil)
	first, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "ss-idem", Body: "once", IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	ok, failed := sendStreamAll(t, ctx, n.Client, []*qv1.SendStreamRequest{{Queue: "ss-idem",
		Entries: []*qv1.SendMessageBatchEntry{{Id: "a", Body: "once", IdempotencyKey: "k1"}}}})
	if len(failed) != 0 || ok["a"].GetMessageId() != first.GetMessageId() {
		t.Fatalf("stream retry answered %v %v, want the first send's id %s", ok, failed, first.GetMessageId())
	}
}

// consumeUntil reads a Consume stream until want messages arrived; it
// returns them and the ack answers seen meanwhile.
func consumeUntil(t *testing.T, st qv1.QueueService_ConsumeClient, want int) ([]*qv1.ReceivedMessage, map[string]string) {
	t.Helper()
	var msgs []*qv1.ReceivedMessage
	answers := map[string]string{}
	for len(msgs) < want {
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("consume: %v after %d messages", err, len(msgs))
		}
		msgs = append(msgs, resp.GetMessages()...)
		for _, o := range resp.GetSuccessful() {
			answers[o.GetId()] = "OK"
		}
		for _, f := range resp.GetFailed() {
			answers[f.GetId()] = f.GetReason()
		}
	}
	return msgs, answers
}

// The server pushes no more messages than the credit granted; acks are
// answered by id and delete; after a half-close it answers what is left
// and ends the stream, having pushed nothing beyond the credit.
func TestConsumeCreditBoundsPushesAndAcksDelete(t *testing.T) {
	n := startNode(t, nodeOpts{})
	ctx := tctx(t)
	createQueue(t, n, "cs-credit", nil)
	reqs := []*qv1.SendStreamRequest{}
	for w := range 25 {
		reqs = append(reqs, &qv1.SendStreamRequest{Queue: "cs-credit", Entries: streamEntries(fmt.Sprintf("w%d-", w), 10)})
	}
	if ok, _ := sendStreamAll(t, ctx, n.Client, reqs); len(ok) != 250 {
		t.Fatalf("%d sent, want 250", len(ok))
	}
	st, err := n.Client.Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&qv1.ConsumeRequest{Queue: "cs-credit", VisibilityTimeout: durationpb.New(time.Minute), Credit: 100}); err != nil {
		t.Fatal(err)
	}
	msgs, _ := consumeUntil(t, st, 100)
	if len(msgs) != 100 {
		t.Fatalf("pushed %d messages for a credit of 100", len(msgs))
	}
	// Ack the first 100 and grant 150 more: the rest arrives.
	var acks []*qv1.DeleteMessageBatchEntry
	for i, m := range msgs {
		acks = append(acks, &qv1.DeleteMessageBatchEntry{Id: fmt.Sprint("a", i), ReceiptHandle: m.GetReceiptHandle()})
	}
	if err := st.Send(&qv1.ConsumeRequest{Acks: acks, Credit: 150}); err != nil {
		t.Fatal(err)
	}
	more, answers := consumeUntil(t, st, 150)
	seen := map[string]bool{}
	for _, m := range append(msgs, more...) {
		if seen[m.GetMessageId()] {
			t.Fatalf("message %s pushed twice", m.GetMessageId())
		}
		seen[m.GetMessageId()] = true
	}
	acks = acks[:0]
	for i, m := range more {
		acks = append(acks, &qv1.DeleteMessageBatchEntry{Id: fmt.Sprint("b", i), ReceiptHandle: m.GetReceiptHandle()})
	}
	acks = append(acks, &qv1.DeleteMessageBatchEntry{Id: "bogus", ReceiptHandle: "not-a-handle"})
	if err := st.Send(&qv1.ConsumeRequest{Acks: acks[:100]}); err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&qv1.ConsumeRequest{Acks: acks[100:]}); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("after half-close: %v", err)
		}
		if len(resp.GetMessages()) > 0 {
			t.Fatalf("pushed %d messages beyond the credit of 250", len(resp.GetMessages()))
		}
		for _, o := range resp.GetSuccessful() {
			answers[o.GetId()] = "OK"
		}
		for _, f := range resp.GetFailed() {
			answers[f.GetId()] = f.GetReason()
		}
	}
	if len(answers) != 251 {
		t.Fatalf("%d acks answered, want 251", len(answers))
	}
	if answers["bogus"] != server.ReasonInvalidReceiptHandle {
		t.Errorf("bogus handle answered %q, want INVALID_RECEIPT_HANDLE", answers["bogus"])
	}
	g, err := n.Client.GetQueue(ctx, &qv1.GetQueueRequest{Name: "cs-credit"})
	if err != nil {
		t.Fatal(err)
	}
	if s := g.GetQueue().GetStats(); s.GetVisible()+s.GetInFlight() != 0 {
		t.Fatalf("queue holds %v after every message was acked", s)
	}
}

// A consumer of an empty queue is pushed a message sent after it opened
// its stream, and a visibility change of 0 (nack) gives it back to be
// pushed again.
func TestConsumeLongPollAndNack(t *testing.T) {
	n := startNode(t, nodeOpts{})
	ctx := tctx(t)
	createQueue(t, n, "cs-poll", nil)
	st, err := n.Client.Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&qv1.ConsumeRequest{Queue: "cs-poll", Credit: 1}); err != nil {
		t.Fatal(err)
	}
	send(t, n, "cs-poll", "late")
	msgs, _ := consumeUntil(t, st, 1)
	if msgs[0].GetBody() != "late" || msgs[0].GetReceiveCount() != 1 {
		t.Fatalf("pushed %v", msgs[0])
	}
	if err := st.Send(&qv1.ConsumeRequest{Credit: 1, VisibilityChanges: []*qv1.ChangeMessageVisibilityBatchEntry{
		{Id: "n", ReceiptHandle: msgs[0].GetReceiptHandle(), VisibilityTimeout: durationpb.New(0)}}}); err != nil {
		t.Fatal(err)
	}
	again, answers := consumeUntil(t, st, 1)
	if again[0].GetMessageId() != msgs[0].GetMessageId() || again[0].GetReceiveCount() != 2 {
		t.Fatalf("after the nack pushed %v, want the message again", again[0])
	}
	if _, ok := answers["n"]; !ok {
		// The answer may come after the push: read it.
		resp, err := st.Recv()
		if err != nil || len(resp.GetSuccessful()) != 1 || resp.GetSuccessful()[0].GetId() != "n" {
			t.Fatalf("nack answered %v %v", resp, err)
		}
	} else if answers["n"] != "OK" {
		t.Fatalf("nack answered %s", answers["n"])
	}
}

// A stream on a missing queue ends with QUEUE_NOT_FOUND; credit beyond
// the bound ends it with INVALID_ARGUMENT.
func TestConsumeErrors(t *testing.T) {
	n := startNode(t, nodeOpts{})
	ctx := tctx(t)
	st, err := n.Client.Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&qv1.ConsumeRequest{Queue: "cs-none", Credit: 10}); err != nil {
		t.Fatal(err)
	}
	_, err = st.Recv()
	wantReason(t, err, codes.NotFound, server.ReasonQueueNotFound)

	createQueue(t, n, "cs-much", nil)
	st, err = n.Client.Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&qv1.ConsumeRequest{Queue: "cs-much", Credit: 1001}); err != nil {
		t.Fatal(err)
	}
	_, err = st.Recv()
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
}

// Streams on a partitioned queue: sends spread over the partitions and a
// consumer drains every one of them.
func TestStreamsOnPartitionedQueue(t *testing.T) {
	n := startSharded(t)
	ctx := tctx(t)
	createPartitioned(t, n.Client, "cs-parts", 4, nil)
	var reqs []*qv1.SendStreamRequest
	for w := range 20 {
		reqs = append(reqs, &qv1.SendStreamRequest{Queue: "cs-parts", Entries: streamEntries(fmt.Sprintf("w%d-", w), 10)})
	}
	if ok, failed := sendStreamAll(t, ctx, n.Client, reqs); len(ok) != 200 {
		t.Fatalf("%d sent, want 200 (%v)", len(ok), failed)
	}
	spread := 0
	for i := range 4 {
		if partitionDepth(t, n, "cs-parts", i) > 0 {
			spread++
		}
	}
	if spread < 2 {
		t.Errorf("sends reached %d of 4 partitions", spread)
	}
	st, err := n.Client.Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&qv1.ConsumeRequest{Queue: "cs-parts", Credit: 1000}); err != nil {
		t.Fatal(err)
	}
	msgs, _ := consumeUntil(t, st, 200)
	parts := map[uint16]bool{}
	for _, m := range msgs {
		parts[handlePartition(t, m.GetReceiptHandle())] = true
	}
	if len(msgs) != 200 || len(parts) != spread {
		t.Fatalf("consumed %d messages from %d partitions, want 200 from %d", len(msgs), len(parts), spread)
	}
}

// A client's routing headers are dropped from streams too: a stream cannot
// address one shard.
func TestStreamsDropRoutingHeaders(t *testing.T) {
	n := startSharded(t)
	ctx := tctx(t)
	createPartitioned(t, n.Client, "cs-direct", 2, nil)
	sh := router.ShardOf(partShards, server.DevTenant, "cs-direct", 1)
	mctx := metadata.AppendToOutgoingContext(ctx, "x-quorumq-shard", fmt.Sprint(sh))
	_, failed := sendStreamAll(t, mctx, n.Client, []*qv1.SendStreamRequest{{Queue: "cs-direct#1", Entries: streamEntries("d", 1)}})
	if f := failed["d0"]; f.GetCode() != "INVALID_ARGUMENT" {
		t.Fatalf("a stream with a client's shard header sent to a partition by name: %v", f)
	}
}

package shardserver_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

func TestSendReceiveDelete(t *testing.T) {
	n := startNode(t, nodeOpts{})
	createQueue(t, n, "jobs", nil)
	sent := send(t, n, "jobs", "hello")
	msgs := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "jobs", MaxMessages: 10})
	if len(msgs) != 1 || msgs[0].GetMessageId() != sent.GetMessageId() || msgs[0].GetBody() != "hello" || msgs[0].GetReceiveCount() != 1 {
		t.Fatalf("received %v, want the sent message once", msgs)
	}
	if again := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "jobs"}); len(again) != 0 {
		t.Fatalf("leased message received again: %v", again)
	}
	if _, err := n.Client.DeleteMessage(tctx(t), &qv1.DeleteMessageRequest{Queue: "jobs", ReceiptHandle: msgs[0].GetReceiptHandle()}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	// Deleting an already deleted message succeeds.
	if _, err := n.Client.DeleteMessage(tctx(t), &qv1.DeleteMessageRequest{Queue: "jobs", ReceiptHandle: msgs[0].GetReceiptHandle()}); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	q, err := n.Client.GetQueue(tctx(t), &qv1.GetQueueRequest{Name: "jobs"})
	if err != nil {
		t.Fatal(err)
	}
	if s := q.GetQueue().GetStats(); s.GetVisible()+s.GetInFlight()+s.GetDelayed() != 0 {
		t.Fatalf("stats after delete: %v", s)
	}
}

func TestStaleReceiptHandleRejected(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	createQueue(t, n, "q", &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(10 * time.Second)})
	send(t, n, "q", "m")
	first := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "q"})
	clock.Advance(11 * time.Second) // the lease ends; another consumer takes it
	second := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "q"})
	if len(first) != 1 || len(second) != 1 || second[0].GetReceiveCount() != 2 {
		t.Fatalf("receives: %v then %v", first, second)
	}
	_, err := n.Client.DeleteMessage(tctx(t), &qv1.DeleteMessageRequest{Queue: "q", ReceiptHandle: first[0].GetReceiptHandle()})
	wantReason(t, err, codes.FailedPrecondition, server.ReasonStaleReceiptHandle)
	_, err = n.Client.ChangeMessageVisibility(tctx(t), &qv1.ChangeMessageVisibilityRequest{Queue: "q", ReceiptHandle: first[0].GetReceiptHandle(), VisibilityTimeout: durationpb.New(0)})
	wantReason(t, err, codes.FailedPrecondition, server.ReasonStaleReceiptHandle)
	// The current owner still can.
	if _, err := n.Client.DeleteMessage(tctx(t), &qv1.DeleteMessageRequest{Queue: "q", ReceiptHandle: second[0].GetReceiptHandle()}); err != nil {
		t.Fatalf("delete with current handle: %v", err)
	}
	// A forged handle is invalid, not stale.
	_, err = n.Client.DeleteMessage(tctx(t), &qv1.DeleteMessageRequest{Queue: "q", ReceiptHandle: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidReceiptHandle)
}

func TestDelayedMessageInvisibleUntilDue(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	createQueue(t, n, "d", nil)
	if _, err := n.Client.SendMessage(tctx(t), &qv1.SendMessageRequest{Queue: "d", Body: "later", Delay: durationpb.New(5 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	at := clock.Now().Add(8 * time.Second)
	if _, err := n.Client.SendMessage(tctx(t), &qv1.SendMessageRequest{Queue: "d", Body: "scheduled", DeliverAt: timestamppb.New(at)}); err != nil {
		t.Fatal(err)
	}
	q, _ := n.Client.GetQueue(tctx(t), &qv1.GetQueueRequest{Name: "d"})
	if got := q.GetQueue().GetStats().GetDelayed(); got != 2 {
		t.Fatalf("delayed = %d, want 2", got)
	}
	if m := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "d", MaxMessages: 10}); len(m) != 0 {
		t.Fatalf("delayed message received early: %v", m)
	}
	clock.Advance(4999 * time.Millisecond)
	if m := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "d", MaxMessages: 10}); len(m) != 0 {
		t.Fatalf("delayed message received 1ms early: %v", m)
	}
	clock.Advance(time.Millisecond)
	if m := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "d", MaxMessages: 10}); len(m) != 1 || m[0].GetBody() != "later" {
		t.Fatalf("at due time got %v, want 'later'", m)
	}
	clock.Advance(3 * time.Second)
	if m := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "d", MaxMessages: 10}); len(m) != 1 || m[0].GetBody() != "scheduled" {
		t.Fatalf("at deliver_at got %v, want 'scheduled'", m)
	}
}

func TestDeadLetterAfterMaxReceives(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	createQueue(t, n, "dlq", nil)
	createQueue(t, n, "work", &qv1.QueueAttributes{
		VisibilityTimeout: durationpb.New(time.Second),
		DeadLetter:        &qv1.DeadLetterPolicy{Queue: "dlq", MaxReceiveCount: 3},
	})
	sent := send(t, n, "work", "poison")
	for i := 1; i <= 3; i++ {
		m := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "work"})
		if len(m) != 1 || m[0].GetReceiveCount() != int32(i) {
			t.Fatalf("receive %d: %v", i, m)
		}
		clock.Advance(2 * time.Second)
	}
	// The 4th receive moves it instead of delivering it.
	if m := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "work"}); len(m) != 0 {
		t.Fatalf("message delivered past its limit: %v", m)
	}
	var got []*qv1.ReceivedMessage
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		got = receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "dlq"})
		if len(got) == 0 {
			return errNotYet
		}
		return nil
	})
	if got[0].GetMessageId() != sent.GetMessageId() || got[0].GetBody() != "poison" || got[0].GetDeadLetterSource() != "work" {
		t.Fatalf("DLQ message %v, want id %s from work", got[0], sent.GetMessageId())
	}
	// Redrive it back with its receive count reset.
	clock.Advance(time.Minute)
	r, err := n.Client.RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq"})
	if err != nil || r.GetMoved() != 1 {
		t.Fatalf("redrive: %v %v", r, err)
	}
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		m := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "work"})
		if len(m) == 0 {
			return errNotYet
		}
		if m[0].GetMessageId() != sent.GetMessageId() || m[0].GetReceiveCount() != 1 {
			return fmt.Errorf("redriven message %v", m[0])
		}
		return nil
	})
}

func TestChangeVisibilityAndNack(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	createQueue(t, n, "v", nil)
	send(t, n, "v", "m")
	m := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "v", VisibilityTimeout: durationpb.New(time.Hour)})
	if _, err := n.Client.ChangeMessageVisibility(tctx(t), &qv1.ChangeMessageVisibilityRequest{Queue: "v", ReceiptHandle: m[0].GetReceiptHandle(), VisibilityTimeout: durationpb.New(0)}); err != nil {
		t.Fatal(err)
	}
	again := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "v", VisibilityTimeout: durationpb.New(300 * time.Millisecond)})
	if len(again) != 1 || again[0].GetReceiveCount() != 2 {
		t.Fatalf("after nack: %v", again)
	}
	clock.Advance(299 * time.Millisecond)
	if x := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "v"}); len(x) != 0 {
		t.Fatalf("visible before its 300ms lease ended: %v", x)
	}
	clock.Advance(time.Millisecond)
	if x := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "v"}); len(x) != 1 {
		t.Fatalf("not visible after its lease: %v", x)
	}
}

func TestPurgeRemovesEverything(t *testing.T) {
	n := startNode(t, nodeOpts{})
	createQueue(t, n, "p", nil)
	send(t, n, "p", "visible")
	send(t, n, "p", "inflight")
	receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "p"})
	if _, err := n.Client.SendMessage(tctx(t), &qv1.SendMessageRequest{Queue: "p", Body: "delayed", Delay: durationpb.New(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Client.PurgeQueue(tctx(t), &qv1.PurgeQueueRequest{Name: "p"}); err != nil {
		t.Fatal(err)
	}
	q, _ := n.Client.GetQueue(tctx(t), &qv1.GetQueueRequest{Name: "p"})
	if s := q.GetQueue().GetStats(); s.GetVisible()+s.GetInFlight()+s.GetDelayed() != 0 {
		t.Fatalf("after purge: %v", s)
	}
}

func TestRetentionExpiry(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	createQueue(t, n, "r", &qv1.QueueAttributes{MessageRetention: durationpb.New(time.Minute)})
	send(t, n, "r", "old")
	clock.Advance(61 * time.Second)
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		q, err := n.Client.GetQueue(tctx(t), &qv1.GetQueueRequest{Name: "r"})
		if err != nil {
			return err
		}
		if s := q.GetQueue().GetStats(); s.GetVisible() != 0 {
			return fmt.Errorf("still %d visible", s.GetVisible())
		}
		return nil
	})
}

func TestIdempotentSend(t *testing.T) {
	n := startNode(t, nodeOpts{})
	createQueue(t, n, "i", nil)
	req := &qv1.SendMessageRequest{Queue: "i", Body: "once", IdempotencyKey: "k-1"}
	a, err := n.Client.SendMessage(tctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.Client.SendMessage(tctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if a.GetMessageId() != b.GetMessageId() || a.GetSequence() != b.GetSequence() {
		t.Fatalf("retry gave %v, first %v", b, a)
	}
	if m := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "i", MaxMessages: 10}); len(m) != 1 {
		t.Fatalf("%d messages stored, want 1", len(m))
	}
}

func TestTagFilteredReceive(t *testing.T) {
	n := startNode(t, nodeOpts{})
	createQueue(t, n, "t", nil)
	for i, tags := range [][]string{{"red"}, {"blue"}, {"red", "big"}, nil} {
		if _, err := n.Client.SendMessage(tctx(t), &qv1.SendMessageRequest{Queue: "t", Body: fmt.Sprint(i), Tags: tags}); err != nil {
			t.Fatal(err)
		}
	}
	m := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "t", MaxMessages: 10, TagFilter: &qv1.TagFilter{All: []string{"red"}, None: []string{"big"}}})
	if len(m) != 1 || m[0].GetBody() != "0" {
		t.Fatalf("all:red none:big got %v", m)
	}
	m = receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "t", MaxMessages: 10, TagFilter: &qv1.TagFilter{Any: []string{"blue", "big"}}})
	if len(m) != 2 {
		t.Fatalf("any:blue,big got %d messages, want 2", len(m))
	}
}

func TestCreateQueueSameAndDifferent(t *testing.T) {
	n := startNode(t, nodeOpts{})
	createQueue(t, n, "c", nil)
	createQueue(t, n, "c", nil) // same (default) attributes: returns it
	_, err := n.Client.CreateQueue(tctx(t), &qv1.CreateQueueRequest{Name: "c", Attributes: &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(time.Minute)}})
	wantReason(t, err, codes.AlreadyExists, server.ReasonQueueAlreadyExists)
	l, err := n.Client.ListQueues(tctx(t), &qv1.ListQueuesRequest{})
	if err != nil || len(l.GetQueues()) != 1 {
		t.Fatalf("list: %v %v", l, err)
	}
	if _, err := n.Client.DeleteQueue(tctx(t), &qv1.DeleteQueueRequest{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	_, err = n.Client.GetQueue(tctx(t), &qv1.GetQueueRequest{Name: "c"})
	wantReason(t, err, codes.NotFound, server.ReasonQueueNotFound)
}

func TestListQueuesPages(t *testing.T) {
	n := startNode(t, nodeOpts{})
	for i := 0; i < 5; i++ {
		createQueue(t, n, fmt.Sprintf("q%d", i), nil)
	}
	var names []string
	token := ""
	for pages := 0; ; pages++ {
		l, err := n.Client.ListQueues(tctx(t), &qv1.ListQueuesRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range l.GetQueues() {
			names = append(names, q.GetName())
		}
		if token = l.GetNextPageToken(); token == "" {
			break
		}
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if fmt.Sprint(names) != "[q0 q1 q2 q3 q4]" {
		t.Fatalf("pages gave %v", names)
	}
}

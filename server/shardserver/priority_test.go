package shardserver_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

// TestPrioritiesAPI (issue 18 item 2): priority on SendMessage, batch
// entries and REST; a receive returns the highest priority first and
// reports each message's priority, as does peek; out-of-range priorities
// and priorities on FIFO queues are INVALID_ARGUMENT; priority_mode and
// priority_weight are queue attributes.
func TestPrioritiesAPI(t *testing.T) {
	n := startNode(t, nodeOpts{})
	ctx, c := tctx(t), n.Client
	if _, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "prio"}); err != nil {
		t.Fatal(err)
	}
	send := func(body string, p *int32) {
		t.Helper()
		if _, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "prio", Body: body, Priority: p}); err != nil {
			t.Fatal(err)
		}
	}
	send("low", proto.Int32(0))
	send("default", nil)
	br, err := c.SendMessageBatch(ctx, &qv1.SendMessageBatchRequest{Queue: "prio", Entries: []*qv1.SendMessageBatchEntry{
		{Id: "a", Body: "mid", Priority: proto.Int32(6)},
		{Id: "b", Body: "bad", Priority: proto.Int32(10)},
	}})
	if err != nil || len(br.GetSuccessful()) != 1 || len(br.GetFailed()) != 1 || br.GetFailed()[0].GetCode() != "INVALID_ARGUMENT" {
		t.Fatalf("batch: %v %v", br, err)
	}
	if status, body := doHTTP(t, n, "POST", "/v1/queues/prio/messages", `{"body":"high","priority":9}`); status != http.StatusOK {
		t.Fatalf("REST send: %d %s", status, body)
	}
	_, err = c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "prio", Body: "x", Priority: proto.Int32(-1)})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)

	pk, err := c.PeekMessages(ctx, &qv1.PeekMessagesRequest{Queue: "prio"})
	if err != nil {
		t.Fatal(err)
	}
	var peeked []string
	for _, m := range pk.GetMessages() {
		peeked = append(peeked, fmt.Sprintf("%s/%d", m.GetBody(), m.GetPriority()))
	}
	if got := strings.Join(peeked, " "); got != "low/0 default/4 mid/6 high/9" {
		t.Errorf("peek: %s", got)
	}
	r, err := c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "prio", MaxMessages: 10})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range r.GetMessages() {
		got = append(got, fmt.Sprintf("%s/%d", m.GetBody(), m.GetPriority()))
	}
	if s := strings.Join(got, " "); s != "high/9 mid/6 default/4 low/0" {
		t.Errorf("receive order: %s", s)
	}

	// FIFO queues refuse priorities.
	if _, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "p.fifo", Attributes: &qv1.QueueAttributes{Fifo: true, ContentBasedDeduplication: true}}); err != nil {
		t.Fatal(err)
	}
	_, err = c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "p.fifo", Body: "x", GroupId: "g", Priority: proto.Int32(7)})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)

	// Attributes: weighted with a ratio; the default ratio reads back as 10.
	cr, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "weighted", Attributes: &qv1.QueueAttributes{PriorityMode: "weighted"}})
	q := cr.GetQueue()
	if err != nil || q.GetAttributes().GetPriorityMode() != "weighted" || q.GetAttributes().GetPriorityWeight() != 10 {
		t.Fatalf("create weighted: %v %v", q, err)
	}
	ur, err := c.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "weighted", Attributes: &qv1.QueueAttributes{PriorityWeight: 3},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"priority_weight"}}})
	q = ur.GetQueue()
	if err != nil || q.GetAttributes().GetPriorityWeight() != 3 || q.GetAttributes().GetPriorityMode() != "weighted" {
		t.Fatalf("update weight: %v %v", q, err)
	}
	_, err = c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "bad", Attributes: &qv1.QueueAttributes{PriorityMode: "loudest"}})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
}

// TestFairnessAPI (issue 18 item 8): fairness "group" is a queue
// attribute of standard queues, fixed at creation (an update without a
// mask keeps it); a receive favours a group with nothing outstanding over
// one that holds messages.
func TestFairnessAPI(t *testing.T) {
	n := startNode(t, nodeOpts{})
	ctx, c := tctx(t), n.Client
	cr, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "fair", Attributes: &qv1.QueueAttributes{Fairness: "group"}})
	q := cr.GetQueue()
	if err != nil || q.GetAttributes().GetFairness() != "group" {
		t.Fatalf("create: %v %v", q, err)
	}
	_, err = c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "fair.fifo", Attributes: &qv1.QueueAttributes{Fifo: true, Fairness: "group"}})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	if ur, err := c.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "fair", Attributes: &qv1.QueueAttributes{}}); err != nil || ur.GetQueue().GetAttributes().GetFairness() != "group" {
		t.Fatalf("update without mask: %v %v", ur, err)
	}
	_, err = c.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "fair", Attributes: &qv1.QueueAttributes{Fairness: "none"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"fairness"}}})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)

	var entries []*qv1.SendMessageBatchEntry
	for i := range 5 {
		entries = append(entries, &qv1.SendMessageBatchEntry{Id: fmt.Sprint(i), Body: fmt.Sprint("flood", i), GroupId: "flood"})
	}
	if _, err := c.SendMessageBatch(ctx, &qv1.SendMessageBatchRequest{Queue: "fair", Entries: entries}); err != nil {
		t.Fatal(err)
	}
	// The flood group now holds two messages; a quiet group's later
	// message goes before the flood's backlog.
	if r, err := c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "fair", MaxMessages: 2}); err != nil || len(r.GetMessages()) != 2 {
		t.Fatalf("receive: %v %v", r, err)
	}
	if _, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "fair", Body: "quiet", GroupId: "quiet"}); err != nil {
		t.Fatal(err)
	}
	r, err := c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "fair", MaxMessages: 2})
	if err != nil || len(r.GetMessages()) != 2 || r.GetMessages()[0].GetBody() != "quiet" || r.GetMessages()[1].GetBody() != "flood2" {
		t.Fatalf("fair receive: %v %v", r, err)
	}
}

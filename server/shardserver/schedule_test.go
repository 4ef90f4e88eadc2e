package shardserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

// Issue 18 item 7: delays of days, and CancelMessage / RescheduleMessage
// of a message not yet received, by id.

func sendDelayed(t *testing.T, c qv1.QueueServiceClient, queue string, delay time.Duration) string {
	t.Helper()
	r, err := c.SendMessage(tctx(t), &qv1.SendMessageRequest{Queue: queue, Body: "b", Delay: durationpb.New(delay)})
	if err != nil {
		t.Fatalf("send to %s: %v", queue, err)
	}
	return r.GetMessageId()
}

func TestCancelAndRescheduleMessage(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	c, ctx := n.Client, tctx(t)
	fifoCreate(t, c, "sched", &qv1.QueueAttributes{MessageRetention: durationpb.New(14 * 24 * time.Hour)})

	// A delay of days (up to the retention), then cancelled.
	days := sendDelayed(t, c, "sched", 10*24*time.Hour)
	if s := fifoStats(t, c, "sched"); s.GetDelayed() != 1 {
		t.Fatalf("after a 10-day delay: %s, want delayed=1", statsString(s))
	}
	if _, err := c.CancelMessage(ctx, &qv1.CancelMessageRequest{Queue: "sched", MessageId: days}); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if s := fifoStats(t, c, "sched"); s.GetDelayed() != 0 || s.GetVisible() != 0 {
		t.Fatalf("after cancel: %s, want empty", statsString(s))
	}
	_, err := c.CancelMessage(ctx, &qv1.CancelMessageRequest{Queue: "sched", MessageId: days})
	wantReason(t, err, codes.NotFound, server.ReasonMessageNotFound)

	// Reschedule a delayed message to now: the next receive returns it.
	id := sendDelayed(t, c, "sched", time.Hour)
	r, err := c.RescheduleMessage(ctx, &qv1.RescheduleMessageRequest{Queue: "sched", MessageId: id, Delay: durationpb.New(0)})
	if err != nil {
		t.Fatalf("reschedule: %v", err)
	}
	if !r.GetVisibleAt().AsTime().Equal(clock.Now()) {
		t.Fatalf("visible_at %v, want now %v", r.GetVisibleAt().AsTime(), clock.Now())
	}
	got := fifoReceive(t, c, &qv1.ReceiveMessagesRequest{Queue: "sched"})
	if len(got) != 1 || got[0].GetMessageId() != id {
		t.Fatalf("received %v, want %s", got, id)
	}
	// Received: neither cancel nor reschedule.
	_, err = c.CancelMessage(ctx, &qv1.CancelMessageRequest{Queue: "sched", MessageId: id})
	wantReason(t, err, codes.FailedPrecondition, server.ReasonMessageAlreadyReceived)
	_, err = c.RescheduleMessage(ctx, &qv1.RescheduleMessageRequest{Queue: "sched", MessageId: id, Delay: durationpb.New(time.Second)})
	wantReason(t, err, codes.FailedPrecondition, server.ReasonMessageAlreadyReceived)

	// Bounds: the retention from the send; one of delay and deliver_at.
	id = sendDelayed(t, c, "sched", time.Minute)
	clock.Advance(time.Hour)
	_, err = c.RescheduleMessage(ctx, &qv1.RescheduleMessageRequest{Queue: "sched", MessageId: id, Delay: durationpb.New(14 * 24 * time.Hour)})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	at := clock.Now().Add(14*24*time.Hour - time.Hour)
	r, err = c.RescheduleMessage(ctx, &qv1.RescheduleMessageRequest{Queue: "sched", MessageId: id, DeliverAt: timestamppb.New(at)})
	if err != nil || !r.GetVisibleAt().AsTime().Equal(at) {
		t.Fatalf("reschedule to the retention's end: %v %v, want %v", r, err, at)
	}
	if s := fifoStats(t, c, "sched"); s.GetDelayed() != 1 {
		t.Fatalf("after reschedule: %s, want delayed=1", statsString(s))
	}
	_, err = c.RescheduleMessage(ctx, &qv1.RescheduleMessageRequest{Queue: "sched", MessageId: id})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)

	// Ids that name nothing here.
	fifoCreate(t, c, "other", nil)
	elsewhere := sendDelayed(t, c, "other", time.Hour)
	_, err = c.CancelMessage(ctx, &qv1.CancelMessageRequest{Queue: "sched", MessageId: elsewhere})
	wantReason(t, err, codes.NotFound, server.ReasonMessageNotFound)
	_, err = c.CancelMessage(ctx, &qv1.CancelMessageRequest{Queue: "sched", MessageId: "not-an-id"})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	_, err = c.CancelMessage(ctx, &qv1.CancelMessageRequest{Queue: "missing", MessageId: elsewhere})
	wantReason(t, err, codes.NotFound, server.ReasonQueueNotFound)
}

func TestCancelMessageOnFifoQueue(t *testing.T) {
	n := startNode(t, nodeOpts{})
	c, ctx := n.Client, tctx(t)
	fifoCreate(t, c, "s.fifo", &qv1.QueueAttributes{Fifo: true})
	first := fifoSend(t, c, &qv1.SendMessageRequest{Queue: "s.fifo", Body: "1", GroupId: "g", DeduplicationId: "1"})
	second := fifoSend(t, c, &qv1.SendMessageRequest{Queue: "s.fifo", Body: "2", GroupId: "g", DeduplicationId: "2"})
	_, err := c.RescheduleMessage(ctx, &qv1.RescheduleMessageRequest{Queue: "s.fifo", MessageId: second.GetMessageId(), Delay: durationpb.New(time.Second)})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	// Cancelling the group's head hands the group to the next message.
	if _, err := c.CancelMessage(ctx, &qv1.CancelMessageRequest{Queue: "s.fifo", MessageId: first.GetMessageId()}); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	got := fifoReceive(t, c, &qv1.ReceiveMessagesRequest{Queue: "s.fifo", MaxMessages: 10})
	if len(got) != 1 || got[0].GetMessageId() != second.GetMessageId() {
		t.Fatalf("received %v, want only %s", got, second.GetMessageId())
	}
}

func TestCancelAndRescheduleOnPartitionedQueue(t *testing.T) {
	n := startSharded(t)
	c, ctx := n.Client, tctx(t)
	createPartitioned(t, c, "parts", 2, nil)
	var ids []string
	for range 4 { // round robin: two per partition
		ids = append(ids, sendDelayed(t, c, "parts", time.Hour))
	}
	for _, id := range ids[:2] {
		if _, err := c.RescheduleMessage(ctx, &qv1.RescheduleMessageRequest{Queue: "parts", MessageId: id, Delay: durationpb.New(0)}); err != nil {
			t.Fatalf("reschedule %s: %v", id, err)
		}
	}
	for _, id := range ids[2:] {
		if _, err := c.CancelMessage(ctx, &qv1.CancelMessageRequest{Queue: "parts", MessageId: id}); err != nil {
			t.Fatalf("cancel %s: %v", id, err)
		}
	}
	for i := range 2 {
		if d := partitionDepth(t, n, "parts", i); d != 1 {
			t.Errorf("partition %d holds %d messages, want 1", i, d)
		}
	}
	got := fifoReceive(t, c, &qv1.ReceiveMessagesRequest{Queue: "parts", MaxMessages: 10})
	if len(got) != 2 {
		t.Fatalf("received %d messages, want the 2 rescheduled", len(got))
	}
	for _, m := range got {
		_, err := c.CancelMessage(ctx, &qv1.CancelMessageRequest{Queue: "parts", MessageId: m.GetMessageId()})
		wantReason(t, err, codes.FailedPrecondition, server.ReasonMessageAlreadyReceived)
	}
	_, err := c.CancelMessage(ctx, &qv1.CancelMessageRequest{Queue: "parts", MessageId: ids[2]})
	wantReason(t, err, codes.NotFound, server.ReasonMessageNotFound)
}

func TestCancelAndRescheduleOverREST(t *testing.T) {
	n := startNode(t, nodeOpts{})
	fifoCreate(t, n.Client, "rest", nil)
	id := sendDelayed(t, n.Client, "rest", time.Hour)
	path := fmt.Sprintf("/v1/queues/rest/messages/%s", id)

	code, body := doHTTP(t, n, http.MethodPost, path+":reschedule", `{"delay":"0s"}`)
	var rr struct {
		VisibleAt time.Time `json:"visibleAt"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &rr) != nil || rr.VisibleAt.IsZero() {
		t.Fatalf("reschedule: HTTP %d %s", code, body)
	}
	code, body = doHTTP(t, n, http.MethodPost, path+":cancel", `{}`)
	if code != http.StatusOK {
		t.Fatalf("cancel: HTTP %d %s", code, body)
	}
	code, body = doHTTP(t, n, http.MethodPost, path+":cancel", `{}`)
	if reason, _ := restErrorInfo(body); code != http.StatusNotFound || reason != server.ReasonMessageNotFound {
		t.Fatalf("second cancel: HTTP %d %s, want 404 MESSAGE_NOT_FOUND", code, body)
	}
	id = sendDelayed(t, n.Client, "rest", 0)
	fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: "rest"})
	code, body = doHTTP(t, n, http.MethodPost, "/v1/queues/rest/messages/"+id+":reschedule", `{"deliverAt":"2030-01-01T00:00:00Z"}`)
	if reason, _ := restErrorInfo(body); code != http.StatusBadRequest || reason != server.ReasonMessageAlreadyReceived {
		t.Fatalf("reschedule of a received message: HTTP %d %s, want 400 MESSAGE_ALREADY_RECEIVED", code, body)
	}
}

// A long poll waiting on a queue whose only message is delayed an hour
// answers as soon as the message is rescheduled to now, not at its wait's end.
func TestRescheduleWakesLongPoll(t *testing.T) {
	n := startNode(t, nodeOpts{})
	fifoCreate(t, n.Client, "wake", nil)
	id := sendDelayed(t, n.Client, "wake", time.Hour)
	srv := n.Server()
	got := make(chan *qv1.ReceiveMessagesResponse, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		r, _ := n.Client.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "wake", WaitTime: durationpb.New(20 * time.Second)})
		got <- r
	}()
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if srv.PollWaiters() != 1 {
			return errors.New("the poll is not waiting yet")
		}
		return nil
	})
	start := time.Now()
	if _, err := n.Client.RescheduleMessage(tctx(t), &qv1.RescheduleMessageRequest{Queue: "wake", MessageId: id, Delay: durationpb.New(0)}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if len(r.GetMessages()) != 1 || r.GetMessages()[0].GetMessageId() != id {
			t.Fatalf("the poll returned %v, want %s", r, id)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the poll did not answer within %v of the reschedule", time.Since(start))
	}
}

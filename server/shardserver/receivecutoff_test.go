package shardserver_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/raftnode"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// carriesReceive reports whether a log entry's data holds a Receive
// command (behind the proposal's framing).
func carriesReceive(data []byte) bool {
	for off := 0; off <= 16 && off < len(data); off++ {
		var cmd storepb.Command
		if proto.Unmarshal(data[off:], &cmd) == nil && cmd.GetVersion() == 1 && cmd.GetReceive() != nil {
			return true
		}
	}
	return false
}

// Issue 15.5: a receive whose caller's deadline ends while its proposal
// commits must not leave the messages leased to nobody: the proposal runs
// to its outcome and the leases of a caller that left are handed back.
// (The receive's appends reach the followers late, so it commits after the
// caller's deadline; the queue's lease is 10 minutes.)
func TestReceiveCutOffByDeadlineLeasesNothing(t *testing.T) {
	c := startMemCluster(t, 3)
	leader := c.Leader(t, 1, 2, 3)
	cl := c.Clients[leader]
	sent := oneMessageOnLongLeaseQueue(t, cl)
	var armed atomic.Bool
	var delayed atomic.Int64
	armed.Store(true)
	c.Net.Delay(func(env raftnode.Envelope) time.Duration {
		if !armed.Load() || env.Msg.GetType() != raftpb.MsgApp {
			return 0
		}
		for _, e := range env.Msg.GetEntries() {
			if carriesReceive(e.GetData()) {
				delayed.Add(1)
				return 800 * time.Millisecond
			}
		}
		return 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	_, err := cl.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "cut"})
	armed.Store(false)
	if err == nil {
		t.Fatal("the receive answered within its deadline although its proposal was held up")
	}
	if delayed.Load() == 0 {
		t.Fatal("no append carrying the receive was held up")
	}
	// The message comes back at once, not after its 10-minute lease.
	checkFor(t, 8*time.Second, 50*time.Millisecond, func() error {
		r, err := cl.ReceiveMessages(tctx(t), &qv1.ReceiveMessagesRequest{Queue: "cut"})
		if err != nil {
			return err
		}
		if len(r.GetMessages()) != 1 || r.GetMessages()[0].GetMessageId() != sent.GetMessageId() {
			return errNotYet
		}
		return nil
	})
	c.Net.Delay(nil)
}

// Issue 18 (chaos seed 557053): a receive with a receive_attempt_id cut
// off while it commits is retried by its caller with the same id, and the
// retry is answered with the very leases the first try took. Those must
// not be handed back: if the retry's replay applied before the hand-back,
// the caller would hold a lease the store had ended, and another consumer
// would get the message during it. The first try's appends are held up
// 1.5 s, its caller gives up after 400 ms and retries at once, so the
// retry's entry follows the first try's in the log, ahead of any
// hand-back (proposed only once the first try committed).
func TestReceiveAttemptRetriedAfterCutOffKeepsItsLeases(t *testing.T) {
	c := startMemCluster(t, 3)
	leader := c.Leader(t, 1, 2, 3)
	cl := c.Clients[leader]
	sent := oneMessageOnLongLeaseQueue(t, cl)
	// Every append carrying a receive arrives no earlier than held: no
	// receive commits before then (a fixed instant, so that resent
	// appends are not held up again and again).
	held := time.Now().Add(1500 * time.Millisecond)
	var delayed atomic.Int64
	c.Net.Delay(func(env raftnode.Envelope) time.Duration {
		if env.Msg.GetType() != raftpb.MsgApp {
			return 0
		}
		for _, e := range env.Msg.GetEntries() {
			if carriesReceive(e.GetData()) {
				if d := time.Until(held); d > 0 {
					delayed.Add(1)
					return d
				}
			}
		}
		return 0
	})
	defer c.Net.Delay(nil)
	req := &qv1.ReceiveMessagesRequest{Queue: "cut", ReceiveAttemptId: "a1"}
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	if _, err := cl.ReceiveMessages(ctx, req); err == nil {
		t.Fatal("the receive answered within its deadline although its proposal was held up")
	}
	retry, err := cl.ReceiveMessages(tctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if delayed.Load() == 0 {
		t.Fatal("no append carrying the receive was held up")
	}
	ms := retry.GetMessages()
	if len(ms) != 1 || ms[0].GetMessageId() != sent.GetMessageId() || ms[0].GetReceiveCount() != 1 {
		t.Fatalf("retry got %v, want the first try's lease of %s (receive count 1)", ms, sent.GetMessageId())
	}
	// A hand-back would be proposed as the first try's proposal returned,
	// before the retry (committed after it) answered: within this window
	// it would have made the message visible.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		r, err := cl.ReceiveMessages(tctx(t), &qv1.ReceiveMessagesRequest{Queue: "cut"})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetMessages()) > 0 {
			t.Fatalf("received %s (count %d) again during the 10-minute lease the retried attempt returned",
				r.GetMessages()[0].GetMessageId(), r.GetMessages()[0].GetReceiveCount())
		}
		<-time.After(100 * time.Millisecond)
	}
	if _, err := cl.DeleteMessage(tctx(t), &qv1.DeleteMessageRequest{Queue: "cut", ReceiptHandle: ms[0].GetReceiptHandle()}); err != nil {
		t.Fatalf("delete with the retried attempt's handle: %v", err)
	}
}

// oneMessageOnLongLeaseQueue makes queue "cut" with a 10-minute lease and
// sends it one message, so a lease handed out by mistake cannot run out
// during the test.
func oneMessageOnLongLeaseQueue(t *testing.T, cl qv1.QueueServiceClient) *qv1.SendMessageResponse {
	t.Helper()
	if _, err := cl.CreateQueue(tctx(t), &qv1.CreateQueueRequest{Name: "cut", Attributes: &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(10 * time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	sent, err := cl.SendMessage(tctx(t), &qv1.SendMessageRequest{Queue: "cut", Body: "m"})
	if err != nil {
		t.Fatal(err)
	}
	return sent
}

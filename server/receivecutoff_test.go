package server_test

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
	leader := c.leader(t, 1, 2, 3)
	cl := c.clients[leader]
	if _, err := cl.CreateQueue(tctx(t), &qv1.CreateQueueRequest{Name: "cut", Attributes: &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(10 * time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	sent, err := cl.SendMessage(tctx(t), &qv1.SendMessageRequest{Queue: "cut", Body: "m"})
	if err != nil {
		t.Fatal(err)
	}
	var armed atomic.Bool
	var delayed atomic.Int64
	armed.Store(true)
	c.net.Delay(func(env raftnode.Envelope) time.Duration {
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
	_, err = cl.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "cut"})
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
	c.net.Delay(nil)
}

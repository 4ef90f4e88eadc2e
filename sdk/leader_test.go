package quorumq_test

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/quorumq/quorumq/raftnode"
	quorumq "github.com/quorumq/quorumq/sdk"
	"github.com/quorumq/quorumq/sdk/internal/testcluster"
)

// A send whose entry reaches the followers but whose leader is cut off
// before it learns of the commit fails on the old leader with an unknown
// outcome; the SDK retries it, with the same idempotency key, through
// another node once a new leader has committed the entry. The queue then
// holds the message exactly once, under the id of the first attempt.
func TestSendRetriedAcrossLeaderChangeEnqueuesOnce(t *testing.T) {
	cl := startCluster(t, testcluster.Config{Size: 3, ProposeTimeout: 2 * time.Second})
	var cnt calls
	c := dial(t, cl.Endpoints(), cnt.option(), quorumq.WithRetryPolicy(quorumq.RetryPolicy{MaxAttempts: 30}))
	ctx := tctx(t, 60*time.Second)
	name := "exactly-once"
	q := createQueue(t, c, name, quorumq.QueueAttributes{})
	leader, err := cl.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// When the leader ships the entry of our send to a follower, cut the
	// leader off: the entry still reaches the followers, but no
	// acknowledgement (and no heartbeat) gets back, so the old leader never
	// answers the send with success.
	marker := []byte("send-across-leader-change")
	var cut atomic.Bool
	var mu sync.Mutex
	entries := map[[2]uint64]bool{} // (term, index) of log entries carrying the send
	cl.Net.Drop(func(e raftnode.Envelope) bool {
		m := e.Msg
		carries := false
		if m.GetType() == pb.MsgApp {
			for _, ent := range m.GetEntries() {
				if bytes.Contains(ent.GetData(), marker) {
					carries = m.GetFrom() == leader
					mu.Lock()
					entries[[2]uint64{ent.GetTerm(), ent.GetIndex()}] = true
					mu.Unlock()
				}
			}
		}
		if carries {
			cut.Store(true)
			return false
		}
		return cut.Load() && (m.GetFrom() == leader || m.GetTo() == leader)
	})
	healed := make(chan struct{})
	go func() { // heal once a new leader is in place, so the old one rejoins
		defer close(healed)
		for !cut.Load() && ctx.Err() == nil {
			<-time.After(5 * time.Millisecond)
		}
		var others []uint64
		for id := uint64(1); id <= 3; id++ {
			if id != leader {
				others = append(others, id)
			}
		}
		for ctx.Err() == nil {
			if l, err := cl.Leader(ctx, others...); err == nil && l != leader {
				break
			}
		}
	}()

	start := time.Now()
	res, err := q.Send(ctx, quorumq.OutgoingMessage{Body: string(marker)})
	if err != nil {
		t.Fatalf("send across a leader change: %v", err)
	}
	t.Logf("send acknowledged after %v and %d attempts", time.Since(start), cnt.count("SendMessage"))
	if !cut.Load() {
		t.Fatal("the leader was never cut off: the test did not exercise a leader change")
	}
	if n := cnt.count("SendMessage"); n < 2 {
		t.Fatalf("%d send attempts: the send was not retried", n)
	}
	// The first attempt's entry reached both followers, so the new leader
	// has it and commits it; the retry appended a second entry. Both apply,
	// and the idempotency key makes the second one answer with the first's
	// message instead of storing another.
	mu.Lock()
	if len(entries) < 2 {
		t.Errorf("saw %d log entries carrying the send, want the first attempt's and the retry's", len(entries))
	}
	mu.Unlock()
	<-healed
	cl.Net.Heal()
	newLeader, err := cl.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if newLeader == leader {
		t.Logf("leadership went back to node %d after the heal", leader)
	}

	// Exactly one copy, with the acknowledged id.
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		_, err := stats(ctx, c, name)
		return err
	})
	msgs, err := q.Receive(ctx, quorumq.MaxMessages(100), quorumq.WaitTime(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("queue holds %d copies of the send, want exactly 1", len(msgs))
	}
	if msgs[0].ID != res.MessageID || msgs[0].Body != string(marker) {
		t.Errorf("stored %s %q, acknowledged %s", msgs[0].ID, msgs[0].Body, res.MessageID)
	}
	if more, err := q.Receive(ctx, quorumq.MaxMessages(100), quorumq.WaitTime(500*time.Millisecond)); err != nil || len(more) != 0 {
		t.Errorf("a second receive found %d more (%v)", len(more), err)
	}
}

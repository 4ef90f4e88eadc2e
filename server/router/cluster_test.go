package router_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// history is what the workload saw, for the checks after the run.
type history struct {
	mu       sync.Mutex
	acked    map[string]bool           // message ids of acknowledged sends
	received map[string]bool           // every message id ever received
	receives map[string][]receiveEvent // per message: receives in completion order
	deletes  []deleteEvent             // deletes accepted or of unknown outcome
}

type receiveEvent struct {
	count int32
	done  time.Time
}

type deleteEvent struct {
	id            string
	count         int32
	invoked, done time.Time
	// accepted: the delete returned OK. Otherwise its outcome is unknown
	// (a timeout or a lost leadership may still have committed it).
	accepted bool
}

// Under concurrent send / receive / delete on all three nodes, the leader is
// cut off and healed: no acknowledged send is lost, no delete is accepted
// with a superseded handle, and the majority commits again within 3 s.
func TestClusterLeaderPartition(t *testing.T) {
	c := startMemCluster(t, 3)
	// The phases below last until enough work was done in each, which on a
	// loaded machine under -race takes longer than tctx's 20 s.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := c.Clients[1].CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "ha", Attributes: &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(time.Second)}}); err != nil {
		t.Fatal(err)
	}
	h := &history{acked: map[string]bool{}, received: map[string]bool{}, receives: map[string][]receiveEvent{}}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	ids := []uint64{1, 2, 3}
	for p := 0; p < 3; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := 0; i < 5000 && loadCtx.Err() == nil; i++ {
				key := fmt.Sprintf("p%d-%d", p, i)
				// Retry a send with its idempotency key until it is
				// acknowledged or the load ends (outcome unknown).
				for loadCtx.Err() == nil {
					cctx, cancel := context.WithTimeout(loadCtx, 3*time.Second)
					r, err := c.Clients[ids[rand.IntN(3)]].SendMessage(cctx, &qv1.SendMessageRequest{Queue: "ha", Body: key, IdempotencyKey: key})
					cancel()
					if err == nil {
						h.mu.Lock()
						h.acked[r.GetMessageId()] = true
						h.mu.Unlock()
						break
					}
				}
			}
		}(p)
	}
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				_, _ = consume(loadCtx, c.Clients[ids[rand.IntN(3)]], h, rand.IntN(4) == 0)
			}
		}()
	}
	// run lets the load run for at least d and until 30 more sends were
	// acknowledged: a phase measured in time alone may see no work done
	// on a loaded machine, and then checks nothing.
	run := func(phase string, d time.Duration) {
		t.Helper()
		h.mu.Lock()
		before := len(h.acked)
		h.mu.Unlock()
		<-time.After(d)
		checkFor(t, time.Minute, 20*time.Millisecond, func() error {
			h.mu.Lock()
			defer h.mu.Unlock()
			if n := len(h.acked) - before; n < 30 {
				return fmt.Errorf("%s: %d sends acknowledged", phase, n)
			}
			return nil
		})
	}

	// Let the load run, then cut the leader off.
	run("before the partition", 2*time.Second)
	old := c.Leader(t, 1, 2, 3)
	var majority []uint64
	for _, id := range ids {
		if id != old {
			majority = append(majority, id)
		}
	}
	c.Net.Partition(old)
	cut := time.Now()
	// Time until a send through the majority side is acknowledged. A new
	// probe starts every 50 ms: one sent before the majority noticed the
	// cut is forwarded to the old leader and waits there for its whole
	// timeout, which would count that timeout into the measurement.
	recovered := make(chan time.Time, 1)
	var probes sync.WaitGroup
	probeCtx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	var recoveredAt time.Time
	for i := 0; recoveredAt.IsZero(); i++ {
		if time.Since(cut) > 10*time.Second {
			t.Fatalf("majority did not commit within 10s of the partition")
		}
		probes.Go(func() {
			cctx, cancel := context.WithTimeout(probeCtx, 2*time.Second)
			defer cancel()
			_, err := c.Clients[majority[0]].SendMessage(cctx, &qv1.SendMessageRequest{Queue: "ha", Body: "probe", IdempotencyKey: fmt.Sprint("probe-", i)})
			if err == nil {
				select {
				case recovered <- time.Now():
				default:
				}
			}
		})
		select {
		case recoveredAt = <-recovered:
		case <-time.After(50 * time.Millisecond):
		}
	}
	stopProbes()
	probes.Wait()
	recovery := recoveredAt.Sub(cut)
	t.Logf("old leader %d cut off; majority committed again after %v", old, recovery)
	if recovery > 3*time.Second {
		t.Errorf("majority took %v to commit again, want under 3s", recovery)
	}
	run("during the partition", 2*time.Second)
	c.Net.Heal()
	run("after the heal", 2*time.Second)
	stopLoad()
	wg.Wait()

	// Drain: every acknowledged message must have been received. Only a
	// receive that answered with nothing counts as empty (a failed one
	// says nothing about the queue).
	drainCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for empty := 0; empty < 3; {
		n, err := consume(drainCtx, c.Clients[1], h, false)
		switch {
		case drainCtx.Err() != nil:
			t.Fatalf("queue not drained within a minute: %v", err)
		case err != nil:
			empty = 0
		case n == 0:
			empty++
			<-time.After(400 * time.Millisecond) // leases of 1s end
		default:
			empty = 0
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	lost := 0
	for id := range h.acked {
		if !h.received[id] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged sends never received", lost, len(h.acked))
	}
	// A delete accepted with receive count k, invoked after a receive with a
	// higher count had completed, used a stale handle — unless the message
	// was already deleted then (deleting a deleted message succeeds).
	//
	// Another delete of the same message invoked before this one returned
	// may have been applied first, whether it returned OK, timed out or
	// has not returned yet: its completion time says nothing about when it
	// was applied. Such a delete makes an accepted stale delete legal.
	for i, d := range h.deletes {
		if !d.accepted {
			continue
		}
		concurrent := false
		for j, o := range h.deletes {
			if j != i && o.id == d.id && o.invoked.Before(d.done) {
				concurrent = true
				break
			}
		}
		if concurrent {
			continue
		}
		for _, r := range h.receives[d.id] {
			if r.count > d.count && r.done.Before(d.invoked) {
				t.Errorf("delete of %s with receive count %d accepted after receive %d completed", d.id, d.count, r.count)
				break
			}
		}
	}
	t.Logf("%d sends acknowledged, %d messages received, %d deletes accepted or of unknown outcome", len(h.acked), len(h.received), len(h.deletes))
	// Replicas converge.
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		var applied []uint64
		for _, id := range ids {
			st, _ := c.Nodes[id].Host().Status(0)
			applied = append(applied, st.Applied)
		}
		sort.Slice(applied, func(i, j int) bool { return applied[i] < applied[j] })
		if applied[0] != applied[2] {
			return fmt.Errorf("applied indexes %v", applied)
		}
		return nil
	})
}

// consume receives a few messages and deletes them (or, when slow, only
// after their lease may have ended), recording what happened. It returns
// how many it received, or the receive's error.
func consume(ctx context.Context, c qv1.QueueServiceClient, h *history, slow bool) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	r, err := c.ReceiveMessages(cctx, &qv1.ReceiveMessagesRequest{Queue: "ha", MaxMessages: 10, WaitTime: durationpb.New(200 * time.Millisecond)})
	if err != nil {
		return 0, err
	}
	done := time.Now()
	h.mu.Lock()
	for _, m := range r.GetMessages() {
		h.received[m.GetMessageId()] = true
		h.receives[m.GetMessageId()] = append(h.receives[m.GetMessageId()], receiveEvent{m.GetReceiveCount(), done})
	}
	h.mu.Unlock()
	if slow {
		<-time.After(1100 * time.Millisecond)
	}
	for _, m := range r.GetMessages() {
		invoked := time.Now()
		dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := c.DeleteMessage(dctx, &qv1.DeleteMessageRequest{Queue: "ha", ReceiptHandle: m.GetReceiptHandle()})
		cancel()
		// A refused handle (stale or invalid) was definitely not applied;
		// any other error leaves the outcome unknown.
		if code := status.Code(err); code != codes.FailedPrecondition && code != codes.InvalidArgument {
			h.mu.Lock()
			h.deletes = append(h.deletes, deleteEvent{m.GetMessageId(), m.GetReceiveCount(), invoked, time.Now(), err == nil})
			h.mu.Unlock()
		}
	}
	return len(r.GetMessages()), nil
}

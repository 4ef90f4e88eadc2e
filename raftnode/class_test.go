package raftnode

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestConsumeNotStarvedBySends: with the leader's loop held, thousands of
// 1 KiB proposals in ClassDefault queue up, then one in ClassConsume. Once
// the loop resumes, the consume proposal goes into the first round: fewer
// entries precede it than one round's budget, not the whole backlog. (One
// member: a held loop sends no heartbeats, and followers would elect
// another leader.)
func TestConsumeNotStarvedBySends(t *testing.T) {
	const g, sends = 1, 3000
	c := newCluster(t, 1, 0, g)
	lead := c.leader(g)
	sm := lead.sms[g]
	sm.blockOn, sm.blocked, sm.unblock = "block", make(chan struct{}), make(chan struct{})
	ctx := ctxTimeout(t, 60*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, sends+2)
	wg.Go(func() {
		if _, err := lead.host.Propose(ctx, g, []byte("block")); err != nil {
			errs <- fmt.Errorf("block: %w", err)
		}
	})
	select {
	case <-sm.blocked:
	case <-ctx.Done():
		t.Fatal("the blocking entry was never applied")
	}
	unblocked := false
	defer func() {
		if !unblocked {
			close(sm.unblock)
		}
	}()

	var mu sync.Mutex
	sendIdx := make([]uint64, 0, sends)
	body := bytes.Repeat([]byte("s"), 1024)
	for i := range sends {
		wg.Go(func() {
			v, err := lead.host.Propose(ctx, g, append(fmt.Appendf(nil, "send-%d-", i), body...))
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			sendIdx = append(sendIdx, v.(applyResult).Index)
			mu.Unlock()
		})
	}
	queued := func(c Class, n int) func() error {
		return func() error {
			grp, err := lead.host.lookup(g)
			if err != nil {
				return err
			}
			grp.mu.Lock()
			defer grp.mu.Unlock()
			if got := len(grp.props[c]); got != n {
				return fmt.Errorf("class %d: %d proposals queued, want %d", c, got, n)
			}
			return nil
		}
	}
	checkFor(t, 30*time.Second, queued(ClassDefault, sends))
	var consumeIdx uint64
	wg.Go(func() {
		v, err := lead.host.Propose(WithClass(ctx, ClassConsume), g, []byte("consume"))
		if err != nil {
			errs <- fmt.Errorf("consume: %w", err)
			return
		}
		consumeIdx = v.(applyResult).Index
	})
	checkFor(t, 10*time.Second, queued(ClassConsume, 1))
	close(sm.unblock)
	unblocked = true
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	before := 0
	for _, idx := range sendIdx {
		if idx < consumeIdx {
			before++
		}
	}
	perRound := roundProposalBytes / (len(body) + 16 + proposalOverhead)
	t.Logf("%d of %d queued sends applied before the consume proposal (one round takes at most %d)", before, sends, perRound)
	if before > perRound {
		t.Fatalf("%d sends applied before the consume proposal queued after them; a round takes at most %d", before, perRound)
	}
}

// TestClassQueuesBoundedSeparately: a full ClassDefault queue does not
// refuse a ClassConsume proposal.
func TestClassQueuesBoundedSeparately(t *testing.T) {
	g := newGroup(1, nil, nil, nil, testLogger(t))
	g.maxPropBytes = 10 << 10
	var err error
	n := 0
	for ; err == nil; n++ {
		err = g.enqueueProposal(&proposal{id: uint64(n + 1), data: make([]byte, 1000)})
	}
	if !errors.Is(err, ErrOverloaded) || n < 2 {
		t.Fatalf("after %d proposals: %v, want ErrOverloaded", n, err)
	}
	if err := g.enqueueProposal(&proposal{id: 1000, class: ClassConsume, data: make([]byte, 1000)}); err != nil {
		t.Fatalf("consume proposal refused by a full default queue: %v", err)
	}
	// Taking the queue frees its bytes: the default class accepts again.
	for g.takeInbox().propsLeft {
	}
	if err := g.enqueueProposal(&proposal{id: 2000, data: make([]byte, 1000)}); err != nil {
		t.Fatalf("after draining: %v", err)
	}
	if g.propBytes != [numClasses]int{1000 + proposalOverhead, 0} {
		t.Fatalf("queued bytes %v", g.propBytes)
	}
}

// TestTakeRound: round-robin one proposal at a time, highest class first,
// within the budget; dead proposals are dropped and their cost returned.
func TestTakeRound(t *testing.T) {
	mk := func(id uint64, size int) *proposal { return &proposal{id: id, data: make([]byte, size)} }
	var q [numClasses][]*proposal
	for i := range 10 {
		q[ClassDefault] = append(q[ClassDefault], mk(uint64(i), 600<<10))
	}
	for i := range 3 {
		q[ClassConsume] = append(q[ClassConsume], mk(uint64(100+i), 1<<10))
	}
	dead := mk(99, 5)
	q[ClassConsume] = append([]*proposal{dead}, q[ClassConsume]...)
	live := func(p *proposal) bool { return p != dead }
	taken, cost, left := takeRound(&q, 2<<20, live)
	var ids []uint64
	for _, p := range taken {
		ids = append(ids, p.id)
	}
	if want := []uint64{100, 101, 102, 0, 1, 2}; fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("took %v, want %v", ids, want)
	}
	if !left || len(q[ClassDefault]) != 7 || len(q[ClassConsume]) != 0 {
		t.Fatalf("left %v, queues %d/%d", left, len(q[ClassDefault]), len(q[ClassConsume]))
	}
	if want := 3*(1<<10+proposalOverhead) + 5 + proposalOverhead; cost[ClassConsume] != want {
		t.Fatalf("consume cost %d, want %d", cost[ClassConsume], want)
	}
	// A proposal larger than the budget still goes, alone in its class.
	q = [numClasses][]*proposal{{mk(1, 3<<20), mk(2, 1)}, nil}
	taken, _, left = takeRound(&q, 2<<20, func(*proposal) bool { return true })
	if len(taken) != 1 || taken[0].id != 1 || !left {
		t.Fatalf("oversized: took %d, left %v", len(taken), left)
	}
}

package raftnode

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumq/quorumq/internal/keys"
)

// keysIn counts the keys in [lo, hi).
func keysIn(t *testing.T, db *pebble.DB, lo, hi []byte) int {
	t.Helper()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	return n
}

// TestRemoveGroupThenAddAgain: a follower removed from group 1 drops its
// replica (RemoveGroup) while the group and another one keep taking
// proposals: its raft and state keys are gone, calls fail, the other
// group runs on; then the node joins group 1 again, empty, is added as a
// learner, catches up, is promoted, and every replica converges.
func TestRemoveGroupThenAddAgain(t *testing.T) {
	const g, other = 1, 2
	c := newCluster(t, 3, 0, g, other)
	lead := c.leader(g)
	checkResults(t, proposeAll(t, lead.host, g, "before", 20))
	f := c.follower(g, lead)
	if st, err := f.host.Status(g); err != nil || st.LeaderContact.IsZero() {
		t.Fatalf("a follower that heard its leader: contact %v, err %v", st.LeaderContact, err)
	}
	if err := lead.host.ChangeMembers(ctxTimeout(t, 10*time.Second), g, MemberChange{RemoveMember, f.id}); err != nil {
		t.Fatal(err)
	}
	f.host.RecordMembers(g, []uint64{1, 2, 3})
	rest := otherIDs(c, f.id)

	// Both groups keep the loop busy while the replica is removed.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, grp := range []uint64{g, other} {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				proposed := false
				for _, id := range rest { // the test goroutine owns c.nodes' map: it only reads it meanwhile
					if st, err := c.nodes[id].host.Status(grp); err == nil && st.IsLeader {
						_, _ = c.nodes[id].host.Propose(pctx, grp, []byte(fmt.Sprintf("load-%d-%d", grp, i)))
						proposed = true
					}
				}
				pcancel()
				if !proposed {
					<-time.After(time.Millisecond) // an election: do not spin
				}
			}
		})
	}
	if stored, err := f.host.HasStoredGroup(g); err != nil || !stored {
		t.Fatalf("HasStoredGroup before RemoveGroup: %v, %v", stored, err)
	}
	err := f.host.RemoveGroup(ctxTimeout(t, 10*time.Second), g, 0)
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if stored, err := f.host.HasStoredGroup(g); err != nil || stored {
		t.Fatalf("HasStoredGroup after RemoveGroup: %v, %v", stored, err)
	}
	if stored, err := f.host.HasStoredGroup(other); err != nil || !stored {
		t.Fatalf("HasStoredGroup of the group left alone: %v, %v", stored, err)
	}
	if _, err := f.host.Status(g); !errors.Is(err, ErrGroupNotFound) {
		t.Fatalf("Status after RemoveGroup: %v", err)
	}
	if _, err := f.host.Propose(ctxTimeout(t, time.Second), g, []byte("x")); !errors.Is(err, ErrGroupNotFound) {
		t.Fatalf("Propose after RemoveGroup: %v", err)
	}
	if err := f.host.RemoveGroup(ctxTimeout(t, time.Second), g, 0); !errors.Is(err, ErrGroupNotFound) {
		t.Fatalf("RemoveGroup twice: %v", err)
	}
	if f.host.recordedMember(g, lead.id) {
		t.Fatal("the recorded members of the removed group are kept")
	}
	for _, r := range [][2][]byte{{keys.RaftPrefix(g), keys.RaftEnd(g)}, {keys.StatePrefix(g), keys.StateEnd(g)}} {
		if n := keysIn(t, f.db, r[0], r[1]) + keysIn(t, f.sdb, r[0], r[1]); n != 0 {
			t.Fatalf("%d keys left in %s", n, keys.Pretty(r[0]))
		}
	}
	if f.sms[g].restored.Load() == 0 {
		t.Fatal("the state machine was not told its state is gone")
	}
	if keysIn(t, f.sdb, keys.StatePrefix(other), keys.StateEnd(other)) == 0 {
		t.Fatal("the other group's state went too")
	}
	checkResults(t, proposeAll(t, c.leader(other).host, other, "other", 10))
	c.converged(other)

	// Added back: empty, a learner, then a voter.
	sm := &testSM{group: g}
	f.sms[g] = sm
	if err := f.host.JoinGroup(g, sm); err != nil {
		t.Fatal(err)
	}
	lead = c.leader(g, rest...)
	if err := lead.host.ChangeMembers(ctxTimeout(t, 10*time.Second), g, MemberChange{AddLearner, f.id}); err != nil {
		t.Fatal(err)
	}
	checkResults(t, proposeAll(t, lead.host, g, "learner", 10))
	checkFor(t, 20*time.Second, func() error {
		if st, err := f.host.Status(g); err != nil || st.Applied < lead.appliedIndex(t, g) {
			return fmt.Errorf("re-added replica: applied %d, err %v", st.Applied, err)
		}
		return nil
	})
	if err := lead.host.ChangeMembers(ctxTimeout(t, 10*time.Second), g, MemberChange{AddVoter, f.id}); err != nil {
		t.Fatal(err)
	}
	checkResults(t, proposeAll(t, c.leader(g, 1, 2, 3).host, g, "voter", 10))
	c.converged(g)
	checkNoDoubleApply(t, c, g)
}

// TestRemoveGroupRefusesWhileLeaderTalks: RemoveGroup with a quiet period
// leaves a replica that heard from its leader within it as it was (a
// leader that added it back may already count its acknowledged appends):
// the follower stays a working member and no key goes.
func TestRemoveGroupRefusesWhileLeaderTalks(t *testing.T) {
	const g = 1
	c := newCluster(t, 3, 0, g)
	lead := c.leader(g)
	checkResults(t, proposeAll(t, lead.host, g, "before", 5))
	f := c.follower(g, lead)
	if err := f.host.RemoveGroup(ctxTimeout(t, 5*time.Second), g, time.Hour); err == nil {
		t.Fatal("RemoveGroup removed a replica its leader talks to")
	}
	if _, err := f.host.Status(g); err != nil {
		t.Fatalf("Status after a refused RemoveGroup: %v", err)
	}
	n := keysIn(t, f.db, keys.RaftPrefix(g), keys.RaftEnd(g))
	if n == 0 {
		t.Fatal("the refused removal deleted the replica's log")
	}
	checkResults(t, proposeAll(t, lead.host, g, "after", 5))
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := f.host.Status(g)
		lst, lerr := lead.host.Status(g)
		if err == nil && lerr == nil && st.Applied >= lst.Applied {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower stopped following after a refused removal: applied %d, leader %d (%v, %v)", st.Applied, lst.Applied, err, lerr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package raftnode

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// startJoin starts node id as a new, empty replica of the cluster's groups
// (JoinGroup): it waits for a leader to add it.
func (c *testCluster) startJoin(id uint64, fs vfs.FS) {
	o := c.opts
	o.transport = c.net.Transport(id)
	o.join = true
	n := startNode(c.t, id, fs, o)
	c.nodes[id] = n
	c.net.Attach(id, n.host)
}

func checkConfig(t *testing.T, st GroupStatus, voters, learners []uint64) {
	t.Helper()
	if !slices.Equal(st.Voters, voters) || !slices.Equal(st.Learners, learners) || st.Joint {
		t.Fatalf("configuration: voters %v learners %v joint %v; want voters %v learners %v",
			st.Voters, st.Learners, st.Joint, voters, learners)
	}
}

// TestMembersJoinPromoteReplace: a new empty node joins as a learner and
// catches up by snapshot (the log was truncated past its start), is
// promoted, and another voter is replaced in one joint change; the group
// keeps committing with the new configuration after the removed node stops.
func TestMembersJoinPromoteReplace(t *testing.T) {
	const g = 1
	c := newCluster(t, 3, 16, g)
	c.proposeUntilTruncated(g, 1)

	c.startJoin(4, vfs.NewMem())
	lead := c.leader(g, 1, 2, 3)
	if err := lead.host.ChangeMembers(ctxTimeout(t, 10*time.Second), g, MemberChange{AddLearner, 4}); err != nil {
		t.Fatal(err)
	}
	st, _ := lead.host.Status(g)
	checkConfig(t, st, []uint64{1, 2, 3}, []uint64{4})
	checkResults(t, proposeAll(t, lead.host, g, "learner", 10))
	c.converged(g)
	// The counter follows the round's log commit, after the snapshot's
	// state is in the state DB (which converged reads): wait for it.
	checkFor(t, 10*time.Second, func() error {
		if c.nodes[4].host.SnapshotsApplied() == 0 {
			return errors.New("the learner caught up without a snapshot; the log should have been truncated past its start")
		}
		return nil
	})
	if st, _ := c.nodes[4].host.Status(g); st.IsLeader {
		t.Fatal("a learner leads")
	}

	lead = c.leader(g, 1, 2, 3)
	if err := lead.host.ChangeMembers(ctxTimeout(t, 10*time.Second), g, MemberChange{AddVoter, 4}); err != nil {
		t.Fatal(err)
	}
	st, _ = lead.host.Status(g)
	checkConfig(t, st, []uint64{1, 2, 3, 4}, nil)

	// Replace voter 3 by 5: learner first, then promote 5 and remove 3 in
	// one change (joint consensus; raft leaves the joint state by itself).
	c.startJoin(5, vfs.NewMem())
	lead = c.leader(g, 1, 2, 3, 4)
	if err := lead.host.ChangeMembers(ctxTimeout(t, 10*time.Second), g, MemberChange{AddLearner, 5}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, func() error {
		if st, _ := c.nodes[5].host.Status(g); st.Applied < lead.appliedIndex(t, g) {
			return fmt.Errorf("learner 5 applied %d", st.Applied)
		}
		return nil
	})
	lead = c.leader(g, 1, 2, 3, 4)
	if err := lead.host.ChangeMembers(ctxTimeout(t, 10*time.Second), g,
		MemberChange{AddVoter, 5}, MemberChange{RemoveMember, 3}); err != nil {
		t.Fatal(err)
	}
	st, _ = lead.host.Status(g)
	checkConfig(t, st, []uint64{1, 2, 4, 5}, nil)

	c.stopNode(3)
	lead = c.leader(g, 1, 2, 4, 5)
	checkResults(t, proposeAll(t, lead.host, g, "replaced", 10))
	c.converged(g)
	checkNoDoubleApply(t, c, g)
}

func (n *testNode) appliedIndex(t *testing.T, g uint64) uint64 {
	t.Helper()
	st, err := n.host.Status(g)
	if err != nil {
		t.Fatal(err)
	}
	return st.Applied
}

// TestChangeMembersRefused: only the leader changes members, and an
// unknown kind or id 0 is refused before anything is proposed.
func TestChangeMembersRefused(t *testing.T) {
	const g = 1
	c := newCluster(t, 3, 0, g)
	lead := c.leader(g)
	f := c.follower(g, lead)
	err := f.host.ChangeMembers(ctxTimeout(t, 5*time.Second), g, MemberChange{AddLearner, 9})
	var nl *NotLeaderError
	if !errors.As(err, &nl) || nl.LeaderID != lead.id {
		t.Fatalf("ChangeMembers on a follower: %v; want NotLeaderError naming %d", err, lead.id)
	}
	for _, bad := range []MemberChange{{AddLearner, 0}, {MemberChangeKind(99), 4}} {
		if err := lead.host.ChangeMembers(ctxTimeout(t, 5*time.Second), g, bad); err == nil {
			t.Fatalf("ChangeMembers(%+v) succeeded", bad)
		}
	}
	st, _ := lead.host.Status(g)
	checkConfig(t, st, []uint64{1, 2, 3}, nil)
}

// TestWipedMemberCannotVoteTwice is the double vote a wiped disk allowed:
// W votes for L in term T, loses its disk, comes back with the same id
// (bootstrapping again, as a restart with the same --peers did) and, having
// forgotten its vote, helps elect another leader of term T. Node 2 first
// leads (so it has heard from every member), is then cut off while 1 and 3
// elect L in a term 2 never saw; L stops, W is wiped and restarted, and 2
// and W are reconnected. With incarnation fencing, 2 refuses the new W;
// before it, 2 and W elected leaders term after term (leadership is handed
// back and forth) until term T had two leaders.
func TestWipedMemberCannotVoteTwice(t *testing.T) {
	const g = 1
	c := newCluster(t, 3, 0, g)
	if lead := c.leader(g); lead.id != 2 {
		if err := lead.host.TransferLeadership(ctxTimeout(t, 10*time.Second), g, 2); err != nil {
			t.Fatal(err)
		}
	}
	checkResults(t, proposeAll(t, c.leader(g).host, g, "a", 5))
	c.converged(g)

	c.net.Partition(2)
	st2, _ := c.nodes[2].host.Status(g)
	l := c.leader(g, 1, 3)
	if st, _ := l.host.Status(g); st.Term <= st2.Term {
		other := uint64(4) - l.id // the other of 1 and 3
		if err := l.host.TransferLeadership(ctxTimeout(t, 10*time.Second), g, other); err != nil {
			t.Fatal(err)
		}
		l = c.leader(g, 1, 3)
	}
	stL, _ := l.host.Status(g)
	L, T := l.id, stL.Term
	W := uint64(4) - L
	t.Logf("node %d leads term %d with the vote of node %d; node 2 is at term %d", L, T, W, st2.Term)

	checkFor(t, 10*time.Second, func() error { // CheckQuorum: the cut-off 2 steps down
		if st, _ := c.nodes[2].host.Status(g); st.IsLeader {
			return errors.New("node 2 still leads")
		}
		return nil
	})
	c.stopNode(L)
	c.stopNode(W)
	c.start(W, vfs.NewMem()) // wiped: same id, bootstrapped again
	c.net.Heal()

	leaders := map[uint64]uint64{T: L} // term -> leader
	deadline := time.Now().Add(60 * time.Second)
	for {
		var lead *testNode
		var term uint64
		checkFor(t, 30*time.Second, func() error {
			if c.nodes[2].host.Fenced() >= 20 {
				return nil // 2 refuses the wiped W, which keeps asking
			}
			for _, id := range []uint64{2, W} {
				st, err := c.nodes[id].host.Status(g)
				if err != nil {
					return err
				}
				if st.IsLeader && st.Term > st2.Term { // elected after the partition
					lead, term = c.nodes[id], st.Term
					return nil
				}
			}
			return errors.New("no leader among 2 and the wiped node yet")
		})
		if lead == nil {
			break
		}
		if was, ok := leaders[term]; ok && was != lead.id {
			t.Fatalf("two leaders in term %d: node %d (before the wipe) and node %d (after): node %d voted twice", term, was, lead.id, W)
		}
		leaders[term] = lead.id
		if term >= T || time.Now().After(deadline) {
			break
		}
		other := 2 + W - lead.id
		_ = lead.host.TransferLeadership(ctxTimeout(t, 10*time.Second), g, other)
	}
	if len(leaders) != 1 {
		t.Fatalf("the wiped node helped elect leaders %v", leaders)
	}
	if got, want := c.nodes[2].host.PinnedIncarnation(W), c.nodes[W].host.Incarnation(); got == want || got == 0 {
		t.Fatalf("node 2 pinned incarnation %x of node %d; the wiped node is %x", got, W, want)
	}
}

// TestRemoveLearnerRefusesAVoter: RemoveLearner removes a learner, and
// refuses (ErrNotLearner, nothing proposed) a node the applied
// configuration counts as a voter, as after a promotion applied since the
// caller looked.
func TestRemoveLearnerRefusesAVoter(t *testing.T) {
	const g = 1
	c := newCluster(t, 3, 0, g)
	c.startJoin(4, vfs.NewMem())
	lead := c.leader(g, 1, 2, 3)
	if err := lead.host.ChangeMembers(ctxTimeout(t, 10*time.Second), g, MemberChange{AddLearner, 4}); err != nil {
		t.Fatal(err)
	}
	if err := lead.host.ChangeMembers(ctxTimeout(t, 10*time.Second), g, MemberChange{AddVoter, 4}); err != nil {
		t.Fatal(err)
	}
	lead = c.leader(g, 1, 2, 3, 4)
	err := lead.host.ChangeMembers(ctxTimeout(t, 10*time.Second), g, MemberChange{RemoveLearner, 4})
	if !errors.Is(err, ErrNotLearner) {
		t.Fatalf("RemoveLearner of a voter: %v, want ErrNotLearner", err)
	}
	st, _ := lead.host.Status(g)
	checkConfig(t, st, []uint64{1, 2, 3, 4}, nil)

	c.startJoin(5, vfs.NewMem())
	if err := lead.host.ChangeMembers(ctxTimeout(t, 10*time.Second), g, MemberChange{AddLearner, 5}); err != nil {
		t.Fatal(err)
	}
	if err := lead.host.ChangeMembers(ctxTimeout(t, 10*time.Second), g, MemberChange{RemoveLearner, 5}); err != nil {
		t.Fatalf("RemoveLearner of a learner: %v", err)
	}
	st, _ = lead.host.Status(g)
	checkConfig(t, st, []uint64{1, 2, 3, 4}, nil)
}

package raftnode

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// learnerCluster is three voters and node 4, a caught-up learner of g.
func learnerCluster(t *testing.T, g uint64) *testCluster {
	c := newCluster(t, 3, 0, g)
	c.startJoin(4, vfs.NewMem())
	lead := c.leader(g, 1, 2, 3)
	if err := lead.host.ChangeMembers(ctxTimeout(t, 10*time.Second), g, MemberChange{AddLearner, 4}); err != nil {
		t.Fatal(err)
	}
	checkResults(t, proposeAll(t, lead.host, g, "learner", 5))
	c.converged(g)
	return c
}

// TestJointChangeSurvivesTransfer is the stall of a move: the shard's
// leader proposes the joint change (promote a learner, remove a voter),
// and a leadership transfer (the leader balancer's) starts before the
// change is applied, to a voter that cannot take over. Raft drops its
// automatic leave of the joint configuration during the transfer and,
// the group being idle afterwards, never tries again: the change never
// finished. The host now skips a transfer while a change is under way.
func TestJointChangeSurvivesTransfer(t *testing.T) {
	const g = 1
	c := learnerCluster(t, g)
	lead := c.leader(g, 1, 2, 3)
	var a, b uint64 // a: the transfer target, cut off; b: removed
	for id := uint64(1); id <= 3; id++ {
		switch {
		case id == lead.id:
		case a == 0:
			a = id
		default:
			b = id
		}
	}
	// Commit the joint entry without a (incoming {L a 4}: L and 4;
	// outgoing {L a b}: L and b), slowly enough that the transfer (which
	// raft gives an election timeout) is under way when it is applied.
	c.net.Drop(func(e Envelope) bool { return e.Msg.GetTo() == a })
	c.net.Delay(func(e Envelope) time.Duration { // half an election timeout
		if e.Msg.GetTo() == lead.id && e.Msg.GetType() == pb.MsgAppResp {
			return 50 * time.Millisecond
		}
		return 0
	})
	before, _ := lead.host.Status(g)
	errc := make(chan error, 1)
	go func() {
		errc <- lead.host.ChangeMembers(ctxTimeout(t, 20*time.Second), g, MemberChange{AddVoter, 4}, MemberChange{RemoveMember, b})
	}()
	checkFor(t, 10*time.Second, func() error {
		if st, _ := lead.host.Status(g); st.LastIndex <= before.LastIndex {
			return errors.New("the joint change is not appended yet")
		}
		return nil
	})
	terr := lead.host.TransferLeadership(ctxTimeout(t, 2*time.Second), g, a)
	t.Logf("transfer to the cut-off node %d: %v", a, terr)
	if err := <-errc; err != nil {
		st, _ := lead.host.Status(g)
		t.Fatalf("joint change (promote 4, remove %d) did not finish: %v; configuration voters %v joint %v", b, err, st.Voters, st.Joint)
	}
	c.net.Drop(nil)
	c.net.Delay(nil)
	st, _ := lead.host.Status(g)
	checkConfig(t, st, sortedIDs(lead.id, a, 4), nil)
}

// TestLeaveJoint: a group left in a joint configuration (here by an
// explicit joint change, which raft never leaves by itself) leaves it on
// LeaveJoint; on a group not joint it does nothing.
func TestLeaveJoint(t *testing.T) {
	const g = 1
	c := learnerCluster(t, g)
	lead := c.leader(g, 1, 2, 3)
	if err := lead.host.LeaveJoint(ctxTimeout(t, 5*time.Second), g); err != nil {
		t.Fatalf("LeaveJoint on a group not joint: %v", err)
	}
	four, three := uint64(4), uint64(3)
	if lead.id == 3 {
		three = 2
	}
	cc := &pb.ConfChangeV2{Transition: pb.ConfChangeTransitionJointExplicit.Enum(), Changes: []*pb.ConfChangeSingle{
		{Type: pb.ConfChangeAddNode.Enum(), NodeId: &four},
		{Type: pb.ConfChangeRemoveNode.Enum(), NodeId: &three},
	}}
	grp, err := lead.host.group(g)
	if err != nil {
		t.Fatal(err)
	}
	r := &ccReq{cc: cc, ch: make(chan error, 1)}
	if err := grp.enqueueConfChange(r); err != nil {
		t.Fatal(err)
	}
	lead.host.signal()
	if err := <-r.ch; err != nil {
		t.Fatal(err)
	}
	if err := lead.host.waitStatus(ctxTimeout(t, 10*time.Second), g, func(st GroupStatus) bool { return st.Joint }); err != nil {
		t.Fatalf("not joint: %v", err)
	}
	if err := lead.host.TransferLeadership(ctxTimeout(t, 5*time.Second), g, 4); !errors.Is(err, ErrConfChangeInProgress) {
		t.Fatalf("transfer in a joint configuration: %v; want ErrConfChangeInProgress", err)
	}
	f := c.follower(g, lead)
	var nl *NotLeaderError
	if err := f.host.LeaveJoint(ctxTimeout(t, 5*time.Second), g); !errors.As(err, &nl) {
		t.Fatalf("LeaveJoint on a follower: %v; want NotLeaderError", err)
	}
	if err := lead.host.LeaveJoint(ctxTimeout(t, 10*time.Second), g); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, func() error {
		st, _ := lead.host.Status(g)
		if st.Joint {
			return fmt.Errorf("still joint: voters %v", st.Voters)
		}
		return nil
	})
	var want []uint64
	for id := uint64(1); id <= 4; id++ {
		if id != three {
			want = append(want, id)
		}
	}
	st, _ := lead.host.Status(g)
	checkConfig(t, st, want, nil)
}

func sortedIDs(ids ...uint64) []uint64 {
	slices.Sort(ids)
	return ids
}

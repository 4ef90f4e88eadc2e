package node

import (
	"context"
	"slices"
	"time"

	"github.com/quorumq/quorumq/raftnode"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// The shard leaders' part of a membership pass: carry out the change the
// replica set records for each shard this node leads.

// stepKind is what a shard's leader does next for its recorded change.
type stepKind int

const (
	stepNone       stepKind = iota // nothing (done, catching up, or for the coordinator to settle)
	stepLeaveJoint                 // leave a joint configuration raft left behind
	stepHandOff                    // hand leadership over (to a voter other than skip)
	stepChange                     // propose changes
)

// execStep is one shard leader's next step.
type execStep struct {
	kind    stepKind
	skip    uint64 // stepHandOff: not to this node
	changes []raftnode.MemberChange
}

// nextStep decides, from the leader's applied configuration st (self is
// this node), the next step of replica set rs's change.
func nextStep(self uint64, st raftnode.GroupStatus, rs *storepb.ReplicaSetRecord) execStep {
	p := rs.GetPending()
	if st.Joint {
		// Raft leaves a joint configuration by itself once applied, but
		// drops that if a leadership transfer is under way then and tries
		// again only on the next entry: an idle shard stays joint.
		return execStep{kind: stepLeaveJoint}
	}
	x, y := p.GetNodeId(), p.GetRemoveNodeId()
	switch {
	case !p.GetAdd() && !slices.Contains(st.Members, x):
		return execStep{} // removed
	case learnerRemoval(rs) && slices.Contains(st.Voters, x):
		// A rollback of an add whose promotion raft applied meanwhile:
		// removing the voter would leave the shard one short. The
		// coordinator records the configuration as it is instead.
		return execStep{}
	case !p.GetAdd() && x == self:
		return execStep{kind: stepHandOff}
	case learnerRemoval(rs):
		// RemoveLearner: the loop refuses it should raft apply the add's
		// promotion between this Status and the proposal.
		return execStep{kind: stepChange, changes: []raftnode.MemberChange{{Kind: raftnode.RemoveLearner, ID: x}}}
	case !p.GetAdd():
		return execStep{kind: stepChange, changes: []raftnode.MemberChange{{Kind: raftnode.RemoveMember, ID: x}}}
	case !slices.Contains(st.Members, x):
		return execStep{kind: stepChange, changes: []raftnode.MemberChange{{Kind: raftnode.AddLearner, ID: x}}}
	case p.GetLearner():
		return execStep{} // done
	case y != 0 && y == self && (slices.Contains(st.Voters, x) || caughtUp(st, x)):
		return execStep{kind: stepHandOff, skip: x} // the next leader replaces this replica
	case y != 0 && !slices.Contains(st.Members, y) && !slices.Contains(st.Voters, x):
		return execStep{} // a move of a replica the shard no longer has: the coordinator cancels it
	case slices.Contains(st.Learners, x) && caughtUp(st, x):
		changes := []raftnode.MemberChange{{Kind: raftnode.AddVoter, ID: x}}
		if y != 0 {
			changes = append(changes, raftnode.MemberChange{Kind: raftnode.RemoveMember, ID: y})
		}
		return execStep{kind: stepChange, changes: changes}
	case slices.Contains(st.Voters, x) && y != 0 && slices.Contains(st.Members, y):
		return execStep{kind: stepChange, changes: []raftnode.MemberChange{{Kind: raftnode.RemoveMember, ID: y}}}
	}
	return execStep{} // catching up, or done
}

// learnerRemoval reports whether rs's change removes a node the record
// does not count among the voters: the rollback of an add (a learner
// that did not catch up), or an observer leaving. It removes a learner
// only, never a voter: raft may have applied the add's promotion (which
// was in the log) after the rollback was recorded.
func learnerRemoval(rs *storepb.ReplicaSetRecord) bool {
	p := rs.GetPending()
	return p != nil && !p.GetAdd() && !slices.Contains(rs.GetVoters(), p.GetNodeId())
}

// executeChanges carries out, on the shards this node leads, the change
// recorded for each: a learner first; a voter once caught up (replacing
// the moved-away replica in the same, joint, change); a removal (a leader
// hands leadership over rather than remove itself). Each pass reads the
// applied configuration and proposes only what is still missing, so a
// proposal that was dropped or timed out is simply made again.
func (n *Node) executeChanges(ctx context.Context, sets []*storepb.ReplicaSetRecord) {
	for _, rs := range sets {
		p := rs.GetPending()
		if p == nil {
			continue
		}
		g := rs.GetShard()
		st, err := n.host.Status(g)
		if err != nil || !st.IsLeader {
			continue
		}
		step := nextStep(n.cfg.NodeID, st, rs)
		switch step.kind {
		case stepNone:
			continue
		case stepLeaveJoint:
			// Leaving is idempotent (refused while one is pending).
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := n.host.LeaveJoint(lctx, g)
			cancel()
			n.log.Debug("membership: leaving a joint configuration", "shard", g, "err", err)
			continue
		case stepHandOff:
			n.handOff(ctx, g, st, step.skip)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = n.host.ChangeMembers(cctx, g, step.changes...)
		cancel()
		if err != nil {
			n.log.Debug("membership change", "shard", g, "changes", step.changes, "err", err)
			continue
		}
		n.log.Info("membership change applied", "shard", g, "changes", step.changes)
	}
}

// handOff transfers the leadership of group g to another voter that is
// replicating (not skip), before this node's replica is removed.
func (n *Node) handOff(ctx context.Context, g uint64, st raftnode.GroupStatus, skip uint64) {
	for _, p := range st.Peers {
		if p.ID == n.cfg.NodeID || p.ID == skip || !slices.Contains(st.Voters, p.ID) || !p.RecentActive || p.State != "StateReplicate" {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := n.host.TransferLeadership(tctx, g, p.ID)
		cancel()
		n.log.Info("membership: handing leadership over before this replica is removed", "shard", g, "to", p.ID, "err", err)
		return
	}
}

// caughtUp reports whether the leader's view of learner x is close to its
// own applied index.
func caughtUp(st raftnode.GroupStatus, x uint64) bool {
	for _, p := range st.Peers {
		if p.ID == x {
			return p.RecentActive && p.State == "StateReplicate" && p.Match+catchUpLag >= st.Applied
		}
	}
	return false
}

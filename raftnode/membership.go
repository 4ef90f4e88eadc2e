package raftnode

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	pb "go.etcd.io/raft/v3/raftpb"
)

// MemberChangeKind is one kind of membership change.
type MemberChangeKind int

const (
	// AddLearner adds a non-voting member: it receives the log (or a
	// snapshot) but counts for no quorum and never campaigns.
	AddLearner MemberChangeKind = iota + 1
	// AddVoter adds a voter, or promotes a learner.
	AddVoter
	// RemoveMember removes a voter or learner.
	RemoveMember
	// RemoveLearner removes a learner and refuses (ErrNotLearner) when the
	// applied configuration, with no change pending, counts it as a voter:
	// checked on the loop just before proposing, so a promotion applied
	// after the caller read Status is never undone.
	RemoveLearner
)

func (k MemberChangeKind) String() string {
	switch k {
	case AddLearner:
		return "add-learner"
	case AddVoter:
		return "add-voter"
	case RemoveMember:
		return "remove"
	case RemoveLearner:
		return "remove-learner"
	}
	return fmt.Sprintf("MemberChangeKind(%d)", int(k))
}

// MemberChange changes one member of a group.
type MemberChange struct {
	Kind MemberChangeKind
	ID   uint64
}

// ccReq is a membership change queued for the loop.
type ccReq struct {
	cc       *pb.ConfChangeV2
	leave    bool       // cc is empty: leave the joint configuration
	learners []uint64   // removed only if still learners (RemoveLearner)
	ch       chan error // cap 1: the outcome of proposing (not of applying)
}

// ChangeMembers changes the group's members with one ConfChangeV2 (etcd
// raft's joint consensus when more than one voter changes; raft leaves the
// joint configuration by itself once it is applied) and waits until this
// node has applied the resulting configuration. Only the leader proposes
// (*NotLeaderError otherwise). Raft takes one change at a time: while one is
// appended but not applied, or the group is in a joint configuration, it
// fails with ErrConfChangeInProgress. If ctx ends first the change may still
// be applied later: read Status to learn the outcome.
//
// A new member's host must run the group already (JoinGroup), so the leader
// can bring it up to date, from the log or by snapshot.
func (h *Host) ChangeMembers(ctx context.Context, group uint64, changes ...MemberChange) error {
	if len(changes) == 0 {
		return errors.New("raftnode: no membership change")
	}
	cc := &pb.ConfChangeV2{}
	var learners []uint64
	for _, c := range changes {
		if c.ID == 0 {
			return errors.New("raftnode: member id 0")
		}
		var t pb.ConfChangeType
		switch c.Kind {
		case AddLearner:
			t = pb.ConfChangeAddLearnerNode
		case AddVoter:
			t = pb.ConfChangeAddNode
		case RemoveMember:
			t = pb.ConfChangeRemoveNode
		case RemoveLearner:
			t = pb.ConfChangeRemoveNode
			learners = append(learners, c.ID)
		default:
			return fmt.Errorf("raftnode: unknown membership change %v", c.Kind)
		}
		cc.Changes = append(cc.Changes, &pb.ConfChangeSingle{Type: t.Enum(), NodeId: &c.ID})
	}
	return h.confChange(ctx, group, &ccReq{cc: cc, learners: learners, ch: make(chan error, 1)}, func(st GroupStatus) bool { return changesApplied(st, changes) })
}

// confChange hands r to the group's raft loop and, once proposed, waits
// until this node's status satisfies applied.
func (h *Host) confChange(ctx context.Context, group uint64, r *ccReq, applied func(GroupStatus) bool) error {
	g, err := h.group(group)
	if err != nil {
		return err
	}
	if err := g.enqueueConfChange(r); err != nil {
		return err
	}
	h.signal()
	select {
	case err := <-r.ch:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	return h.waitStatus(ctx, group, applied)
}

// changesApplied reports whether st's configuration reflects every change
// and is not joint.
func changesApplied(st GroupStatus, changes []MemberChange) bool {
	if st.Joint {
		return false
	}
	for _, c := range changes {
		switch c.Kind {
		case AddLearner:
			if !slices.Contains(st.Learners, c.ID) {
				return false
			}
		case AddVoter:
			if !slices.Contains(st.Voters, c.ID) {
				return false
			}
		case RemoveMember, RemoveLearner:
			if slices.Contains(st.Members, c.ID) {
				return false
			}
		}
	}
	return true
}

// LeaveJoint leaves a joint configuration the group is stuck in, and waits
// until this node has applied the result. Raft leaves a joint
// configuration by itself once it applied it, but its one attempt is
// dropped if a leadership transfer is under way then, and it tries again
// only when the next entry is applied: an idle group stays joint. Nothing
// to do if the configuration is not joint; ErrConfChangeInProgress while a
// change is appended but not applied (raft's own leave, maybe);
// *NotLeaderError on a follower.
func (h *Host) LeaveJoint(ctx context.Context, group uint64) error {
	return h.confChange(ctx, group, &ccReq{cc: &pb.ConfChangeV2{}, leave: true, ch: make(chan error, 1)}, func(st GroupStatus) bool { return !st.Joint })
}

func (g *group) enqueueConfChange(r *ccReq) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed != nil {
		return g.closed
	}
	g.confChanges = append(g.confChanges, r)
	return nil
}

// proposeConfChanges proposes the round's membership changes on a leader
// (loop only) and reports whether it proposed any. Raft silently turns a
// conf change into an empty entry while another is pending or the
// configuration is joint, so that is checked first and reported as
// ErrConfChangeInProgress.
func (h *Host) proposeConfChanges(g *group, reqs []*ccReq, leader bool, lead uint64) (proposed bool) {
	for _, r := range reqs {
		var err error
		joint := len(g.st.appliedConfStateRef().GetVotersOutgoing()) > 0
		switch {
		case !leader:
			err = &NotLeaderError{Group: g.id, LeaderID: lead}
		case r.leave && !joint:
			// nothing to leave
		default:
			err = h.confChangePending(g, r.leave)
			if err == nil {
				err = stillLearners(g.id, g.st.appliedConfStateRef(), r.learners)
			}
			if err == nil {
				if perr := g.rn.ProposeConfChange(r.cc); perr != nil {
					err = fmt.Errorf("%w: group %d: %v", ErrProposalDropped, g.id, perr)
				} else {
					proposed = true
				}
			}
		}
		r.ch <- err
	}
	return proposed
}

// stillLearners returns ErrNotLearner if the applied configuration cs
// (final: confChangePending found no change pending) counts one of ids as
// a voter.
func stillLearners(group uint64, cs *pb.ConfState, ids []uint64) error {
	for _, id := range ids {
		if slices.Contains(cs.GetVoters(), id) || slices.Contains(cs.GetVotersOutgoing(), id) {
			return fmt.Errorf("%w: group %d: node %d", ErrNotLearner, group, id)
		}
	}
	return nil
}

// confChangePending returns ErrConfChangeInProgress if the group's applied
// configuration is joint (unless leaving is what the caller asks), or a
// conf change entry is in the log beyond the applied index (raft would
// drop another one). The log read is the stored one: a change appended in
// this round is not in it.
func (h *Host) confChangePending(g *group, leaving bool) error {
	if cs := g.st.appliedConfStateRef(); len(cs.GetVotersOutgoing()) > 0 && !leaving {
		return fmt.Errorf("%w: group %d: joint configuration", ErrConfChangeInProgress, g.id)
	}
	_, last, applied := g.st.bounds()
	if last <= applied {
		return nil
	}
	ents, err := g.st.Entries(applied+1, last+1, math.MaxUint64)
	if err != nil {
		return fmt.Errorf("raftnode: group %d: read log: %w", g.id, err)
	}
	for _, e := range ents {
		if t := e.GetType(); t == pb.EntryConfChange || t == pb.EntryConfChangeV2 {
			return fmt.Errorf("%w: group %d: change at index %d not yet applied", ErrConfChangeInProgress, g.id, e.GetIndex())
		}
	}
	return nil
}

// JoinGroup runs a replica of a group that already exists on other nodes:
// on first start it stays empty (no bootstrap) until the group's leader,
// which has added this node (ChangeMembers), sends it the log or a
// snapshot; until then it never campaigns (it is in no configuration).
// Afterwards it is AddGroup: state is loaded from Pebble.
func (h *Host) JoinGroup(group uint64, sm StateMachine) error {
	return h.addGroup(group, nil, sm, true)
}

// confSets splits a ConfState into sorted voters (incoming and outgoing)
// and learners (current and next), and reports whether it is joint.
func confSets(cs *pb.ConfState) (voters, learners []uint64, joint bool) {
	voters = append(slices.Clone(cs.GetVoters()), cs.GetVotersOutgoing()...)
	slices.Sort(voters)
	voters = slices.Compact(voters)
	learners = append(slices.Clone(cs.GetLearners()), cs.GetLearnersNext()...)
	slices.Sort(learners)
	learners = slices.Compact(learners)
	return voters, learners, len(cs.GetVotersOutgoing()) > 0
}

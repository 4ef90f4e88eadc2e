package raftnode

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers match them with errors.Is; server/ maps them to
// gRPC statuses.
var (
	// ErrNotLeader: the operation needs the group's leader and this node is
	// not it. Returned errors are *NotLeaderError, which carries the leader
	// hint and matches ErrNotLeader.
	ErrNotLeader = errors.New("raftnode: not the leader")
	// ErrStopped: the host is stopped (or stopping); nothing more is accepted.
	ErrStopped = errors.New("raftnode: host stopped")
	// ErrGroupNotFound: no group with that id on this host.
	ErrGroupNotFound = errors.New("raftnode: group not found")
	// ErrGroupExists: AddGroup was called twice for one group (or while
	// RemoveGroup removes it).
	ErrGroupExists = errors.New("raftnode: group already added")
	// ErrGroupRemoved: RemoveGroup removed the group while the call waited.
	ErrGroupRemoved = errors.New("raftnode: group removed")
	// ErrNotLearner: a RemoveLearner change names a node the applied
	// configuration counts as a voter; nothing was proposed.
	ErrNotLearner = errors.New("raftnode: not a learner")
	// ErrProposalDropped: raft refused the proposal (a leadership transfer
	// is in progress, or the group is overloaded: see ErrOverloaded). The
	// entry was not appended; retrying is safe.
	ErrProposalDropped = errors.New("raftnode: proposal dropped")
	// ErrOverloaded: the group's backlog is at its byte limit, either the
	// proposals queued for the loop (Config.MaxQueuedProposalBytes) or the
	// leader's appended but uncommitted log tail (Config.MaxUncommittedBytes).
	// The entry was not appended; retrying after a backoff is safe. Returned
	// errors match ErrProposalDropped too.
	ErrOverloaded = errors.New("raftnode: group overloaded")
	// ErrLeadershipLost: the leader stepped down (or its term changed) after
	// appending the proposal and before applying it. The outcome is unknown:
	// the entry may still commit under the next leader.
	ErrLeadershipLost = errors.New("raftnode: leadership lost, outcome unknown")
	// ErrHalted: the group stopped processing after a storage failure (a
	// failed Pebble write, a failed Apply, or a raft invariant violation).
	// The wrapped cause says which. The node's other groups keep running.
	ErrHalted = errors.New("raftnode: group halted")
	// ErrFenced: a peer's messages are refused because it speaks for an
	// incarnation of its node id other than the one this host pinned (its
	// disk was wiped: it must join again under a new id; see fence.go).
	ErrFenced = errors.New("raftnode: peer incarnation fenced")
	// ErrConfChangeInProgress: the group has a membership change that is
	// not yet applied (raft takes one at a time); retry later.
	ErrConfChangeInProgress = errors.New("raftnode: membership change in progress")
)

// NotLeaderError reports a request that reached a follower. LeaderID is the
// leader this node knows of, 0 if none.
type NotLeaderError struct {
	Group    uint64
	LeaderID uint64
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == 0 {
		return fmt.Sprintf("raftnode: group %d: not the leader (leader unknown)", e.Group)
	}
	return fmt.Sprintf("raftnode: group %d: not the leader (leader is node %d)", e.Group, e.LeaderID)
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

package shardserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Replica moves (issue 17). MoveReplica only records the move in the
// shard's replica set (metadata shard); the shard's leader carries it out
// and the coordinator records its end (server/node/membership.go).

// MoveReplica records a move of shard's replica (ClusterService, metadata
// shard).
func (s *Server) MoveReplica(ctx context.Context, req *qv1.MoveReplicaRequest) (*qv1.MoveReplicaResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	switch {
	case req.GetFromNode() == 0:
		return nil, server.FieldError("from_node", "required")
	case req.GetToNode() == 0:
		return nil, server.FieldError("to_node", "required")
	case req.GetFromNode() == req.GetToNode():
		return nil, server.FieldError("to_node", "must differ from from_node")
	}
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	sets, err := s.store.ReplicaSets()
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(sets, func(rs *storepb.ReplicaSetRecord) bool { return rs.GetShard() == req.GetShard() })
	if i < 0 {
		return nil, server.StatusError(codes.NotFound, server.ReasonNodeNotFound, fmt.Sprintf("shard %d has no replica set", req.GetShard()), nil)
	}
	rs := sets[i]
	nodes, err := s.store.Nodes()
	if err != nil {
		return nil, err
	}
	to := slices.IndexFunc(nodes, func(n *storepb.NodeRecord) bool { return n.GetId() == req.GetToNode() })
	switch {
	case to < 0 || nodes[to].GetState() != storepb.NodeState_NODE_STATE_ACTIVE:
		return nil, server.StatusError(codes.FailedPrecondition, server.ReasonNodeConflict, fmt.Sprintf("node %d is not an active node", req.GetToNode()), nil)
	case !slices.Contains(rs.GetVoters(), req.GetFromNode()):
		return nil, server.StatusError(codes.FailedPrecondition, server.ReasonNodeConflict,
			fmt.Sprintf("node %d holds no voting replica of shard %d", req.GetFromNode(), req.GetShard()), nil)
	case slices.Contains(rs.GetVoters(), req.GetToNode()):
		return nil, server.StatusError(codes.FailedPrecondition, server.ReasonNodeConflict,
			fmt.Sprintf("node %d already holds a voting replica of shard %d", req.GetToNode(), req.GetShard()), nil)
	case rs.GetPending() != nil:
		return nil, changeInProgress(rs.GetShard())
	}
	rs.Pending = &storepb.ReplicaChange{NodeId: req.GetToNode(), Add: true, RemoveNodeId: req.GetFromNode(), StartedAtMs: s.cfg.Now().UnixMilli()}
	if _, err := s.propose(ctx, SetReplicaSetCommand(rs, nil)); err != nil {
		return nil, membershipStatus(err)
	}
	return &qv1.MoveReplicaResponse{ReplicaSet: ReplicaSetToAPI(rs)}, nil
}

func changeInProgress(shard uint64) error {
	return server.StatusError(codes.FailedPrecondition, server.ReasonChangeInProgress,
		fmt.Sprintf("a membership change of shard %d is under way: retry once it is done", shard), map[string]string{"shard": fmt.Sprint(shard)})
}

// SetReplicaSetCommand writes rs if the shard's change under way is still
// expect (nil: none), the one its writer read.
func SetReplicaSetCommand(rs *storepb.ReplicaSetRecord, expect *storepb.ReplicaChange) *storepb.Command {
	return &storepb.Command{Op: &storepb.Command_SetReplicaSet{SetReplicaSet: &storepb.SetReplicaSet{
		ReplicaSet: rs, CheckPending: true, ExpectPending: expect,
	}}}
}

// ReplicaSetToAPI converts a replica set record.
func ReplicaSetToAPI(rs *storepb.ReplicaSetRecord) *qv1.ReplicaSet {
	out := &qv1.ReplicaSet{Shard: rs.GetShard(), ReplicationFactor: rs.GetReplicationFactor(), Voters: rs.GetVoters(), Learners: rs.GetLearners()}
	if p := rs.GetPending(); p != nil {
		out.PendingNode, out.PendingAdd = p.GetNodeId(), p.GetAdd()
		out.PendingRemoveNode, out.PendingLearner = p.GetRemoveNodeId(), p.GetLearner()
		out.PendingSince = timestamppb.New(time.UnixMilli(p.GetStartedAtMs()))
	}
	return out
}

// isReplicaSetChanged reports a checked SetReplicaSet that lost a race.
func isReplicaSetChanged(err error) bool { return errors.Is(err, store.ErrReplicaSetChanged) }

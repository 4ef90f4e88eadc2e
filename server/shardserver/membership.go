package shardserver

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Membership RPCs. The records live in the metadata shard (store/
// membership.go); these calls read or change them on its leader. The
// coordinator that turns records into raft configuration changes runs in
// server/node (membership.go).

const maxPeerAddr = 256

// ListNodes returns the membership records (ClusterService, metadata shard).
func (s *Server) ListNodes(ctx context.Context, _ *qv1.ListNodesRequest) (*qv1.ListNodesResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	nodes, err := s.store.Nodes()
	if err != nil {
		return nil, err
	}
	sets, err := s.store.ReplicaSets()
	if err != nil {
		return nil, err
	}
	resp := &qv1.ListNodesResponse{}
	for _, n := range nodes {
		resp.Nodes = append(resp.Nodes, NodeToAPI(n))
	}
	for _, rs := range sets {
		resp.ReplicaSets = append(resp.ReplicaSets, ReplicaSetToAPI(rs))
	}
	return resp, nil
}

// JoinCluster admits a new node (ClusterService, metadata shard): its id is
// the one its peer certificate names, if any, else the next unused one.
func (s *Server) JoinCluster(ctx context.Context, req *qv1.JoinClusterRequest) (*qv1.JoinClusterResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	switch {
	case req.GetPeerAddress() == "" || len(req.GetPeerAddress()) > maxPeerAddr:
		return nil, server.FieldError("peer_address", "must be 1 to 256 bytes")
	case len(req.GetClientAddress()) > maxPeerAddr:
		return nil, server.FieldError("client_address", "must be at most 256 bytes")
	case req.GetIncarnation() == 0:
		return nil, server.FieldError("incarnation", "required")
	}
	var id uint64
	if pid, err := server.PeerIdentityFrom(ctx); err == nil && pid.Role == server.PeerRoleNode {
		id = pid.ID
	}
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_AdmitNode{AdmitNode: &storepb.AdmitNode{Node: &storepb.NodeRecord{
		Id: id, PeerAddr: req.GetPeerAddress(), ClientAddr: req.GetClientAddress(), Incarnation: req.GetIncarnation(),
	}}}})
	if err != nil {
		return nil, membershipStatus(err)
	}
	nodes, err := s.store.Nodes()
	if err != nil {
		return nil, err
	}
	resp := &qv1.JoinClusterResponse{Node: NodeToAPI(res.Node)}
	for _, n := range nodes {
		if n.GetState() != storepb.NodeState_NODE_STATE_REMOVED {
			resp.Nodes = append(resp.Nodes, NodeToAPI(n))
		}
	}
	return resp, nil
}

// ProposeMembership proposes a membership command on this shard (the
// metadata shard; the caller is its leader: the coordinator).
func (s *Server) ProposeMembership(ctx context.Context, cmd *storepb.Command) (*store.Result, error) {
	switch cmd.GetOp().(type) {
	case *storepb.Command_BootstrapMembership, *storepb.Command_RegisterNode, *storepb.Command_AdmitNode,
		*storepb.Command_SetNodeState, *storepb.Command_SetReplicaSet:
	default:
		return nil, fmt.Errorf("not a membership command: %T", cmd.GetOp())
	}
	return s.propose(ctx, cmd)
}

// membershipStatus maps the membership outcomes to statuses.
func membershipStatus(err error) error {
	switch {
	case errors.Is(err, store.ErrNoMembership):
		return server.StatusError(codes.Unavailable, server.ReasonMembershipNotReady, err.Error(), nil)
	case errors.Is(err, store.ErrNodeNotFound):
		return server.StatusError(codes.NotFound, server.ReasonNodeNotFound, err.Error(), nil)
	case errors.Is(err, store.ErrNodeRemoved), errors.Is(err, store.ErrNodeExists), errors.Is(err, store.ErrIncarnationMismatch):
		return server.StatusError(codes.FailedPrecondition, server.ReasonNodeConflict, err.Error(), nil)
	case isReplicaSetChanged(err):
		return server.StatusError(codes.FailedPrecondition, server.ReasonChangeInProgress, err.Error(), nil)
	case errors.Is(err, store.ErrShardCountChanged):
		return server.StatusError(codes.FailedPrecondition, server.ReasonShardCountChanged, err.Error(), nil)
	}
	return err
}

// NodeToAPI converts a node record.
func NodeToAPI(n *storepb.NodeRecord) *qv1.NodeInfo {
	if n == nil {
		return nil
	}
	return &qv1.NodeInfo{Id: n.GetId(), PeerAddress: n.GetPeerAddr(), ClientAddress: n.GetClientAddr(),
		State: qv1.NodeState(n.GetState()), Incarnation: n.GetIncarnation()}
}

// RemoveNode starts retiring a node (ClusterService, metadata shard): it
// becomes DRAINING; the coordinator removes it from every shard.
func (s *Server) RemoveNode(ctx context.Context, req *qv1.RemoveNodeRequest) (*qv1.RemoveNodeResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	if req.GetNodeId() == 0 {
		return nil, server.FieldError("node_id", "required")
	}
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	nodes, err := s.store.Nodes()
	if err != nil {
		return nil, err
	}
	live := 0
	var rec *storepb.NodeRecord
	for _, n := range nodes {
		if n.GetId() == req.GetNodeId() {
			rec = n
		}
		if n.GetState() == storepb.NodeState_NODE_STATE_ACTIVE || n.GetState() == storepb.NodeState_NODE_STATE_JOINING {
			live++
		}
	}
	switch {
	case rec == nil:
		return nil, server.StatusError(codes.NotFound, server.ReasonNodeNotFound, fmt.Sprintf("node %d not found", req.GetNodeId()), nil)
	case rec.GetState() == storepb.NodeState_NODE_STATE_REMOVED || rec.GetState() == storepb.NodeState_NODE_STATE_DRAINING:
		return &qv1.RemoveNodeResponse{Node: NodeToAPI(rec)}, nil
	case live <= 1:
		return nil, server.StatusError(codes.FailedPrecondition, server.ReasonNodeConflict, "the last node cannot be removed", nil)
	}
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_SetNodeState{SetNodeState: &storepb.SetNodeState{
		NodeId: req.GetNodeId(), State: storepb.NodeState_NODE_STATE_DRAINING,
	}}})
	if err != nil {
		return nil, membershipStatus(err)
	}
	return &qv1.RemoveNodeResponse{Node: NodeToAPI(res.Node)}, nil
}

// AddShards records new shards (ClusterService, metadata shard): the store
// places their replica sets; every node named starts its replica
// (server/node). Nodes the leader has not heard from lately are chosen
// last.
func (s *Server) AddShards(ctx context.Context, req *qv1.AddShardsRequest) (*qv1.AddShardsResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	if req.GetCount() == 0 || req.GetCount() > store.MaxShards {
		return nil, server.FieldError("count", fmt.Sprintf("must be 1 to %d", store.MaxShards))
	}
	var quiet []uint64
	if st, err := s.raft.Status(s.shard); err == nil && st.IsLeader {
		for _, p := range st.Peers {
			if !p.RecentActive || p.State != "StateReplicate" {
				quiet = append(quiet, p.ID)
			}
		}
	}
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_AddShards{AddShards: &storepb.AddShards{
		Count: req.GetCount(), ExpectShards: req.GetExpectShards(), AvoidNodes: quiet,
	}}})
	if err != nil {
		if errors.Is(err, store.ErrShardCountChanged) && res != nil && res.Layout != nil {
			return nil, server.StatusError(codes.FailedPrecondition, server.ReasonShardCountChanged,
				fmt.Sprintf("the cluster has %d shards, not %d", res.Layout.GetShards(), req.GetExpectShards()),
				map[string]string{"shard_count": fmt.Sprint(res.Layout.GetShards())})
		}
		return nil, membershipStatus(err)
	}
	sets, err := s.store.ReplicaSets()
	if err != nil {
		return nil, err
	}
	resp := &qv1.AddShardsResponse{ShardCount: res.Layout.GetShards()}
	for _, rs := range sets {
		if rs.GetShard() >= uint64(res.Layout.GetShards()-req.GetCount()) && rs.GetShard() < uint64(res.Layout.GetShards()) {
			resp.ReplicaSets = append(resp.ReplicaSets, ReplicaSetToAPI(rs))
		}
	}
	return resp, nil
}

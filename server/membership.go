package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"google.golang.org/grpc/codes"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
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
	if _, err := require(ctx, ScopeClusterAdmin); err != nil {
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
	if _, err := require(ctx, ScopeClusterAdmin); err != nil {
		return nil, err
	}
	switch {
	case req.GetPeerAddress() == "" || len(req.GetPeerAddress()) > maxPeerAddr:
		return nil, fieldError("peer_address", "must be 1 to 256 bytes")
	case len(req.GetClientAddress()) > maxPeerAddr:
		return nil, fieldError("client_address", "must be at most 256 bytes")
	case req.GetIncarnation() == 0:
		return nil, fieldError("incarnation", "required")
	}
	var id uint64
	if pid, err := PeerIdentityFrom(ctx); err == nil && pid.Role == PeerRoleNode {
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
		return statusError(codes.Unavailable, ReasonMembershipNotReady, err.Error(), nil)
	case errors.Is(err, store.ErrNodeNotFound):
		return statusError(codes.NotFound, ReasonNodeNotFound, err.Error(), nil)
	case errors.Is(err, store.ErrNodeRemoved), errors.Is(err, store.ErrNodeExists), errors.Is(err, store.ErrIncarnationMismatch):
		return statusError(codes.FailedPrecondition, ReasonNodeConflict, err.Error(), nil)
	case isReplicaSetChanged(err):
		return statusError(codes.FailedPrecondition, ReasonChangeInProgress, err.Error(), nil)
	case errors.Is(err, store.ErrShardCountChanged):
		return statusError(codes.FailedPrecondition, ReasonShardCountChanged, err.Error(), nil)
	}
	return err
}

// Membership reasons (ErrorInfo).
const (
	ReasonNodeNotFound = "NODE_NOT_FOUND"
	// ReasonNodeConflict: the node was removed, its id is taken by another
	// incarnation, or it is not the incarnation its record names.
	ReasonNodeConflict = "NODE_CONFLICT"
	// ReasonMembershipNotReady: the cluster has not recorded its bootstrap
	// nodes yet (its first seconds): retry.
	ReasonMembershipNotReady = "MEMBERSHIP_NOT_READY"
	// ReasonShardCountChanged: AddShards' expect_shards is not the
	// cluster's shard count.
	ReasonShardCountChanged = "SHARD_COUNT_CHANGED"
)

// NodeToAPI converts a node record.
func NodeToAPI(n *storepb.NodeRecord) *qv1.NodeInfo {
	if n == nil {
		return nil
	}
	return &qv1.NodeInfo{Id: n.GetId(), PeerAddress: n.GetPeerAddr(), ClientAddress: n.GetClientAddr(),
		State: qv1.NodeState(n.GetState()), Incarnation: n.GetIncarnation()}
}

// ListNodes routes to the metadata shard's leader.
func (r *Router) ListNodes(ctx context.Context, req *qv1.ListNodesRequest) (*qv1.ListNodesResponse, error) {
	if _, err := require(ctx, ScopeClusterAdmin); err != nil {
		return nil, err
	}
	return call(ctx, r, target{shard: MetadataShard}, clusterMethod+"ListNodes", req, (*Server).ListNodes)
}

// JoinCluster routes to the metadata shard's leader and adds the shard
// count.
func (r *Router) JoinCluster(ctx context.Context, req *qv1.JoinClusterRequest) (*qv1.JoinClusterResponse, error) {
	if _, err := require(ctx, ScopeClusterAdmin); err != nil {
		return nil, err
	}
	resp, err := call(ctx, r, target{shard: MetadataShard}, clusterMethod+"JoinCluster", req, (*Server).JoinCluster)
	if err != nil {
		return nil, err
	}
	resp.Shards = uint32(r.baseShards()) // shards added since: from the metadata shard
	return resp, nil
}

// ListNodes implements ClusterService.
func (c *ClusterServer) ListNodes(ctx context.Context, req *qv1.ListNodesRequest) (*qv1.ListNodesResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*Server).ListNodes)
	}
	return c.router.ListNodes(ctx, req)
}

// JoinCluster implements ClusterService.
func (c *ClusterServer) JoinCluster(ctx context.Context, req *qv1.JoinClusterRequest) (*qv1.JoinClusterResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*Server).JoinCluster)
	}
	return c.router.JoinCluster(ctx, req)
}

// SetPeer adds node id's peer address, or moves it (membership records
// name nodes that joined after start). A connection to an old address is
// closed.
func (f *Forwarder) SetPeer(id uint64, addr string) {
	if id == f.self {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.peers[id] == addr {
		return
	}
	f.peers = maps.Clone(f.peers) // the map passed to NewForwarder is shared
	if f.peers == nil {
		f.peers = map[uint64]string{}
	}
	f.peers[id] = addr
	if c, ok := f.conns[id]; ok {
		_ = c.Close()
		delete(f.conns, id)
	}
}

// RemoveNode starts retiring a node (ClusterService, metadata shard): it
// becomes DRAINING; the coordinator removes it from every shard.
func (s *Server) RemoveNode(ctx context.Context, req *qv1.RemoveNodeRequest) (*qv1.RemoveNodeResponse, error) {
	if _, err := require(ctx, ScopeClusterAdmin); err != nil {
		return nil, err
	}
	if req.GetNodeId() == 0 {
		return nil, fieldError("node_id", "required")
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
		return nil, statusError(codes.NotFound, ReasonNodeNotFound, fmt.Sprintf("node %d not found", req.GetNodeId()), nil)
	case rec.GetState() == storepb.NodeState_NODE_STATE_REMOVED || rec.GetState() == storepb.NodeState_NODE_STATE_DRAINING:
		return &qv1.RemoveNodeResponse{Node: NodeToAPI(rec)}, nil
	case live <= 1:
		return nil, statusError(codes.FailedPrecondition, ReasonNodeConflict, "the last node cannot be removed", nil)
	}
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_SetNodeState{SetNodeState: &storepb.SetNodeState{
		NodeId: req.GetNodeId(), State: storepb.NodeState_NODE_STATE_DRAINING,
	}}})
	if err != nil {
		return nil, membershipStatus(err)
	}
	return &qv1.RemoveNodeResponse{Node: NodeToAPI(res.Node)}, nil
}

// RemoveNode routes to the metadata shard's leader.
func (r *Router) RemoveNode(ctx context.Context, req *qv1.RemoveNodeRequest) (*qv1.RemoveNodeResponse, error) {
	if _, err := require(ctx, ScopeClusterAdmin); err != nil {
		return nil, err
	}
	return call(ctx, r, target{shard: MetadataShard}, clusterMethod+"RemoveNode", req, (*Server).RemoveNode)
}

// RemoveNode implements ClusterService.
func (c *ClusterServer) RemoveNode(ctx context.Context, req *qv1.RemoveNodeRequest) (*qv1.RemoveNodeResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*Server).RemoveNode)
	}
	return c.router.RemoveNode(ctx, req)
}

// AddShards records new shards (ClusterService, metadata shard): the store
// places their replica sets; every node named starts its replica
// (server/node). Nodes the leader has not heard from lately are chosen
// last.
func (s *Server) AddShards(ctx context.Context, req *qv1.AddShardsRequest) (*qv1.AddShardsResponse, error) {
	if _, err := require(ctx, ScopeClusterAdmin); err != nil {
		return nil, err
	}
	if req.GetCount() == 0 || req.GetCount() > store.MaxShards {
		return nil, fieldError("count", fmt.Sprintf("must be 1 to %d", store.MaxShards))
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
			return nil, statusError(codes.FailedPrecondition, ReasonShardCountChanged,
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

// addShardsWait bounds how long AddShards waits for the new shards'
// leaders (and the caller's deadline, less a second to answer in).
const addShardsWait = 20 * time.Second

// AddShards routes to the metadata shard's leader, then waits (bounded)
// until every new shard has a leader, so the next call can use them.
func (r *Router) AddShards(ctx context.Context, req *qv1.AddShardsRequest) (*qv1.AddShardsResponse, error) {
	if _, err := require(ctx, ScopeClusterAdmin); err != nil {
		return nil, err
	}
	if r.cfg.Forwarder == nil {
		return nil, statusError(codes.FailedPrecondition, ReasonSingleNode,
			"a single-node cluster keeps the shard count it was started with (--shards); add-shards needs a cluster started with --peers", nil)
	}
	var resp *qv1.AddShardsResponse
	for {
		var err error
		resp, err = call(ctx, r, target{shard: MetadataShard}, clusterMethod+"AddShards", req, (*Server).AddShards)
		if err == nil {
			break
		}
		if reasonOf(err) != ReasonMembershipNotReady {
			return nil, err
		}
		select { // a new cluster records its nodes within a second or so
		case <-ctx.Done():
			return nil, err
		case <-time.After(200 * time.Millisecond):
		}
	}
	wait := addShardsWait
	if d, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(d)-time.Second)
	}
	wctx, cancel := context.WithTimeout(ctx, max(wait, 0))
	defer cancel()
	for _, rs := range resp.GetReplicaSets() {
		if _, err := r.cfg.View.Leader(wctx, rs.GetShard()); err != nil {
			for wctx.Err() == nil { // the view waits a few seconds at a time
				if _, err = r.cfg.View.Leader(wctx, rs.GetShard()); err == nil {
					break
				}
			}
			if err != nil {
				r.log.Warn("add shards: a new shard has no leader yet", "shard", rs.GetShard(), "err", err)
				break
			}
		}
	}
	return resp, nil
}

// ReasonSingleNode: the call needs a multi-node cluster.
const ReasonSingleNode = "SINGLE_NODE_CLUSTER"

// AddShards implements ClusterService.
func (c *ClusterServer) AddShards(ctx context.Context, req *qv1.AddShardsRequest) (*qv1.AddShardsResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*Server).AddShards)
	}
	return c.router.AddShards(ctx, req)
}

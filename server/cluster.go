package server

import (
	"context"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/raftnode"
)

// PeerStatusFunc reports the transport's view of the other nodes.
type PeerStatusFunc func() map[uint64]raftnode.PeerState

// ClusterServer serves ClusterService from this node's view.
type ClusterServer struct {
	qv1.UnimplementedClusterServiceServer
	self   uint64
	peers  map[uint64]string // node id -> peer address, self included
	status PeerStatusFunc    // nil on a single-node cluster
	raft   Raft
	shards []uint64
	queues *Server // quotas live in the queue state machine
}

// NewClusterServer returns the ClusterService of node self.
func NewClusterServer(self uint64, peers map[uint64]string, status PeerStatusFunc, queues *Server, shards []uint64) *ClusterServer {
	return &ClusterServer{self: self, peers: peers, status: status, raft: queues.raft, shards: shards, queues: queues}
}

// SetTenantQuota implements ClusterService.
func (c *ClusterServer) SetTenantQuota(ctx context.Context, req *qv1.SetTenantQuotaRequest) (*qv1.SetTenantQuotaResponse, error) {
	return c.queues.SetTenantQuota(ctx, req)
}

// GetTenantQuota implements ClusterService.
func (c *ClusterServer) GetTenantQuota(ctx context.Context, req *qv1.GetTenantQuotaRequest) (*qv1.GetTenantQuotaResponse, error) {
	return c.queues.GetTenantQuota(ctx, req)
}

// GetCluster implements ClusterService.
func (c *ClusterServer) GetCluster(ctx context.Context, _ *qv1.GetClusterRequest) (*qv1.GetClusterResponse, error) {
	if _, err := require(ctx, ScopeClusterAdmin); err != nil {
		return nil, err
	}
	resp := &qv1.GetClusterResponse{NodeId: c.self}
	var peerState map[uint64]raftnode.PeerState
	if c.status != nil {
		peerState = c.status()
	}
	ids := make([]uint64, 0, len(c.peers)+1)
	for id := range c.peers {
		ids = append(ids, id)
	}
	if _, ok := c.peers[c.self]; !ok {
		ids = append(ids, c.self)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		n := &qv1.ClusterNode{Id: id, RaftAddress: c.peers[id], Self: id == c.self}
		if id == c.self {
			n.Online = true
		} else if ps, ok := peerState[id]; ok {
			n.Online = ps.Connected
			if !ps.LastContact.IsZero() {
				n.LastContact = timestamppb.New(ps.LastContact.Truncate(time.Millisecond))
			}
		}
		resp.Nodes = append(resp.Nodes, n)
	}
	for _, g := range c.shards {
		st, err := c.raft.Status(g)
		if err != nil {
			return nil, err
		}
		resp.Shards = append(resp.Shards, &qv1.ClusterShard{
			Id: g, Members: st.Members, Leader: st.LeaderID, Term: st.Term,
			AppliedIndex: st.Applied, CommitIndex: st.Commit, FirstIndex: st.FirstIndex, LastIndex: st.LastIndex,
		})
	}
	return resp, nil
}

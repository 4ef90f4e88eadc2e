package router

import (
	"context"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
)

// PeerStatusFunc reports the transport's view of the other nodes.
type PeerStatusFunc func() map[uint64]raftnode.PeerState

// ClusterServer serves ClusterService from this node's view.
type ClusterServer struct {
	qv1.UnimplementedClusterServiceServer
	self   uint64
	mu     sync.Mutex
	peers  map[uint64]string // node id -> peer address, self included; replaced by SetPeers
	status PeerStatusFunc    // nil on a single-node cluster
	raft   shardserver.Raft  // nil on an API-tier node
	shards []uint64          // guarded by mu; grows (SetShards)
	remote *RemoteView       // an API-tier node's view; nil on storage nodes
	router *Router
	sets   func() []*qv1.ReplicaSet
}

// ClusterConfig assembles a ClusterServer.
type ClusterConfig struct {
	Self   uint64
	Peers  map[uint64]string
	Status PeerStatusFunc
	// Raft and Shards: every shard of the cluster; GetCluster lists those
	// this storage node holds a replica of (IsMember).
	Raft   shardserver.Raft
	Shards []uint64
	// ReplicaSets reads the replica set records of the node's metadata
	// replica (nil: none shown).
	ReplicaSets func() []*qv1.ReplicaSet
	// Remote: an API-tier node's view of the storage nodes.
	Remote *RemoteView
	Router *Router
}

// NewClusterServer returns the ClusterService of a node.
func NewClusterServer(c ClusterConfig) *ClusterServer {
	return &ClusterServer{self: c.Self, peers: c.Peers, status: c.Status, raft: c.Raft, shards: c.Shards, remote: c.Remote, router: c.Router,
		sets: c.ReplicaSets}
}

// SetPeers replaces the nodes GetCluster lists (from the membership
// records, as nodes join or leave).
func (c *ClusterServer) SetPeers(peers map[uint64]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.peers = maps.Clone(peers)
}

// SetShards replaces the shards GetCluster looks at (shards were added).
func (c *ClusterServer) SetShards(shards []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.shards = slices.Clone(shards)
}

// SetTenantQuota implements ClusterService.
func (c *ClusterServer) SetTenantQuota(ctx context.Context, req *qv1.SetTenantQuotaRequest) (*qv1.SetTenantQuotaResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*shardserver.Server).SetTenantQuota)
	}
	return c.router.SetTenantQuota(ctx, req)
}

// GetTenantQuota implements ClusterService.
func (c *ClusterServer) GetTenantQuota(ctx context.Context, req *qv1.GetTenantQuotaRequest) (*qv1.GetTenantQuotaResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*shardserver.Server).GetTenantQuota)
	}
	return c.router.GetTenantQuota(ctx, req)
}

// GetCluster implements ClusterService.
func (c *ClusterServer) GetCluster(ctx context.Context, _ *qv1.GetClusterRequest) (*qv1.GetClusterResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	return c.view(ctx)
}

// shardRole names what a shard holds.
func shardRole(id uint64, shards int) string {
	switch {
	case shards <= 1:
		return "metadata+data"
	case id == MetadataShard:
		return "metadata"
	default:
		return "data"
	}
}

func (c *ClusterServer) view(_ context.Context) (*qv1.GetClusterResponse, error) {
	if c.remote != nil {
		last := c.remote.Cluster()
		if last == nil {
			return nil, server.StatusError(codes.Unavailable, server.ReasonNoQuorum, "no storage node answered yet", nil)
		}
		resp := proto.Clone(last).(*qv1.GetClusterResponse)
		resp.NodeId, resp.Role = c.self, "api"
		for _, n := range resp.Nodes {
			n.Self = false
		}
		return resp, nil
	}
	resp := &qv1.GetClusterResponse{NodeId: c.self, Role: "storage"}
	var peerState map[uint64]raftnode.PeerState
	if c.status != nil {
		peerState = c.status()
	}
	c.mu.Lock()
	peers, shards := c.peers, c.shards
	c.mu.Unlock()
	ids := make([]uint64, 0, len(peers)+1)
	for id := range peers {
		ids = append(ids, id)
	}
	if _, ok := peers[c.self]; !ok {
		ids = append(ids, c.self)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		n := &qv1.ClusterNode{Id: id, RaftAddress: peers[id], Self: id == c.self}
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
	resp.ShardCount = uint32(len(shards))
	if c.router != nil {
		resp.BaseShardCount = uint32(c.router.baseShards())
	}
	for _, g := range shards {
		if !IsMember(c.raft, c.self, g) {
			continue // the shard's replicas are on other nodes
		}
		st, err := c.raft.Status(g)
		if err != nil {
			return nil, err
		}
		sh := &qv1.ClusterShard{
			Id: g, Members: st.Members, Leader: st.LeaderID, Term: st.Term,
			AppliedIndex: st.Applied, CommitIndex: st.Commit, FirstIndex: st.FirstIndex, LastIndex: st.LastIndex,
			Role: shardRole(g, len(shards)), Voters: st.Voters, Learners: st.Learners, Joint: st.Joint,
		}
		for _, p := range st.Peers { // on the leader only
			if p.ID != c.self {
				sh.Lag = append(sh.Lag, &qv1.MemberLag{Node: p.ID, Entries: st.LastIndex - min(p.Match, st.LastIndex)})
			}
		}
		resp.Shards = append(resp.Shards, sh)
	}
	if c.sets != nil {
		resp.ReplicaSets = c.sets()
	}
	return resp, nil
}

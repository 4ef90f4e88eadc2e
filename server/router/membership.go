package router

import (
	"context"
	"maps"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
)

// ListNodes routes to the metadata shard's leader.
func (r *Router) ListNodes(ctx context.Context, req *qv1.ListNodesRequest) (*qv1.ListNodesResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	return call(ctx, r, target{shard: MetadataShard}, clusterMethod+"ListNodes", req, (*shardserver.Server).ListNodes)
}

// JoinCluster routes to the metadata shard's leader and adds the shard
// count.
func (r *Router) JoinCluster(ctx context.Context, req *qv1.JoinClusterRequest) (*qv1.JoinClusterResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	resp, err := call(ctx, r, target{shard: MetadataShard}, clusterMethod+"JoinCluster", req, (*shardserver.Server).JoinCluster)
	if err != nil {
		return nil, err
	}
	resp.Shards = uint32(r.shardCount())
	return resp, nil
}

// ListNodes implements ClusterService.
func (c *ClusterServer) ListNodes(ctx context.Context, req *qv1.ListNodesRequest) (*qv1.ListNodesResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*shardserver.Server).ListNodes)
	}
	return c.router.ListNodes(ctx, req)
}

// JoinCluster implements ClusterService.
func (c *ClusterServer) JoinCluster(ctx context.Context, req *qv1.JoinClusterRequest) (*qv1.JoinClusterResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*shardserver.Server).JoinCluster)
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

// RemoveNode routes to the metadata shard's leader.
func (r *Router) RemoveNode(ctx context.Context, req *qv1.RemoveNodeRequest) (*qv1.RemoveNodeResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	return call(ctx, r, target{shard: MetadataShard}, clusterMethod+"RemoveNode", req, (*shardserver.Server).RemoveNode)
}

// RemoveNode implements ClusterService.
func (c *ClusterServer) RemoveNode(ctx context.Context, req *qv1.RemoveNodeRequest) (*qv1.RemoveNodeResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*shardserver.Server).RemoveNode)
	}
	return c.router.RemoveNode(ctx, req)
}

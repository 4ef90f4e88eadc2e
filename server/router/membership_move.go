package router

import (
	"context"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
)

// MoveReplica routes to the metadata shard's leader.
func (r *Router) MoveReplica(ctx context.Context, req *qv1.MoveReplicaRequest) (*qv1.MoveReplicaResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	return call(ctx, r, target{shard: MetadataShard}, clusterMethod+"MoveReplica", req, (*shardserver.Server).MoveReplica)
}

// MoveReplica implements ClusterService.
func (c *ClusterServer) MoveReplica(ctx context.Context, req *qv1.MoveReplicaRequest) (*qv1.MoveReplicaResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*shardserver.Server).MoveReplica)
	}
	return c.router.MoveReplica(ctx, req)
}

package router

import (
	"context"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
)

// Tenant quotas on a sharded cluster hold for the tenant as a whole: the
// metadata shard holds the quota as set and enforces max_queues; its
// leader keeps the tenant's one send-rate bucket, from which routers lease
// tokens (quota_lease.go); each data shard enforces a stored-bytes
// allowance that the metadata shard's leader spreads by use
// (quota_bytes.go), and no send rate of its own.

// dataShardIDs lists the shards that hold partitions.
func (r *Router) dataShardIDs() []uint64 {
	if r.shardCount() <= 1 {
		return nil // the metadata shard holds the data too
	}
	ids := make([]uint64, 0, r.shardCount()-1)
	for s := 1; s < r.shardCount(); s++ {
		ids = append(ids, uint64(s))
	}
	return ids
}

const clusterMethod = "/quorumq.v1.ClusterService/"

// SetTenantQuota sets the quota on the metadata shard, then spreads the
// stored-bytes quota over the data shards as allowances.
func (r *Router) SetTenantQuota(ctx context.Context, req *qv1.SetTenantQuotaRequest) (*qv1.SetTenantQuotaResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	resp, err := call(ctx, r, target{shard: MetadataShard}, clusterMethod+"SetTenantQuota", req, (*shardserver.Server).SetTenantQuota)
	if err != nil {
		return nil, err
	}
	r.forgetSendRate(req.GetTenant())
	if len(r.dataShardIDs()) == 0 {
		return resp, nil
	}
	_, stored, err := r.spread(ctx, req.GetTenant(), 0, 0)
	if err != nil {
		return nil, err
	}
	resp.Usage = &qv1.TenantUsage{Queues: resp.GetUsage().GetQueues(), StoredBytes: resp.GetUsage().GetStoredBytes() + stored}
	return resp, nil
}

// GetTenantQuota answers the quota as set and the usage of all shards.
func (r *Router) GetTenantQuota(ctx context.Context, req *qv1.GetTenantQuotaRequest) (*qv1.GetTenantQuotaResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	resp, err := call(ctx, r, target{shard: MetadataShard}, clusterMethod+"GetTenantQuota", req, (*shardserver.Server).GetTenantQuota)
	if err != nil {
		return nil, err
	}
	data := r.dataShardIDs()
	if len(data) == 0 {
		return resp, nil
	}
	usages, err := eachShard(data, func(sh uint64) (*qv1.TenantUsage, error) {
		out, err := call(ctx, r, target{shard: sh}, clusterMethod+"GetTenantQuota", req, (*shardserver.Server).GetTenantQuota)
		return out.GetUsage(), err
	})
	if err != nil {
		return nil, err
	}
	resp.Usage = sumUsage(resp.GetUsage(), usages)
	return resp, nil
}

func sumUsage(meta *qv1.TenantUsage, data []*qv1.TenantUsage) *qv1.TenantUsage {
	out := &qv1.TenantUsage{Queues: meta.GetQueues(), StoredBytes: meta.GetStoredBytes()}
	for _, u := range data {
		out.StoredBytes += u.GetStoredBytes()
	}
	return out
}

// eachShard runs f for every shard in parallel.
func eachShard[T any](shards []uint64, f func(uint64) (T, error)) ([]T, error) {
	return parallel(len(shards), func(i int) (T, error) { return f(shards[i]) })
}

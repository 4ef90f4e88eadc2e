package router

import (
	"context"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
)

// Stored bytes on a sharded cluster. The metadata shard keeps the tenant's
// max_stored_bytes as set; each data shard's store enforces an allowance
// (the max_stored_bytes of its own tenant record) in apply, so the check
// stays exact and deterministic. The allowances add up to at most the
// quota (each is at least 1 byte, since 0 means unlimited): a shard's
// usage plus a share of the tenant's headroom. When a data shard refuses
// a send for bytes, the router asks the metadata shard's leader to spread
// the headroom again (spreadBytes): the refusing shard gets what the send
// needs plus half of what remains (the tenant is sending there now), the
// other shards the rest evenly; then the router sends the refused entries
// once more. So a message that fits the tenant's quota is admitted
// wherever it lands, and one that does not is refused with QUOTA_EXCEEDED.
// Spreads of a tenant run one at a time on the metadata shard's leader;
// sends that land between a shard's usage being read and its allowance
// being set can overshoot the quota by what they store meanwhile.

// spreadBytes sets the tenant's allowance on every data shard from their
// usage and the quota held by meta (the metadata shard, which this node
// leads), reserving need bytes on shard hot (0: none). It reports false
// when the tenant's headroom is smaller than need (nothing changes), and
// the tenant's stored bytes on the data shards.
func (r *Router) spreadBytes(ctx context.Context, meta *shardserver.Server, tenant string, hot uint64, need int64) (bool, int64, error) {
	mu := r.quotas.spreadLock(tenant)
	mu.Lock()
	defer mu.Unlock()
	rec, err := meta.Store().Tenant(tenant)
	if err != nil {
		return false, 0, err
	}
	quota := rec.GetQuota().GetMaxStoredBytes()
	data := r.dataShardIDs()
	type usage struct {
		allowance, stored int64
		other             bool // a send rate or queue count set by an older version
	}
	usages, err := eachShard(data, func(sh uint64) (usage, error) {
		out, err := r.quotaOp(ctx, sh, map[string]any{"op": "usage", "tenant": tenant})
		f := out.GetFields()
		return usage{int64(f["allowance"].GetNumberValue()), int64(f["stored"].GetNumberValue()), f["other"].GetBoolValue()}, err
	})
	if err != nil {
		return false, 0, err
	}
	var stored int64
	for _, u := range usages {
		stored += u.stored
	}
	next := make([]int64, len(data)) // 0: unlimited
	if quota > 0 {
		headroom := quota - stored
		if headroom < need {
			return false, stored, nil
		}
		free := headroom - need
		hotShare, share := int64(0), free/int64(len(data))
		if hot != 0 && len(data) > 1 {
			hotShare = need + free/2
			share = (free - free/2) / int64(len(data)-1)
		}
		for i, sh := range data {
			next[i] = usages[i].stored + share
			if sh == hot {
				next[i] = usages[i].stored + hotShare
				if len(data) == 1 {
					next[i] = usages[i].stored + headroom
				}
			}
			next[i] = max(next[i], 1)
		}
	}
	// Shrink first, then grow: the allowances never add up to more than
	// the quota in between.
	for _, grow := range []bool{false, true} {
		var set []uint64
		var to []int64
		for i, sh := range data {
			old := usages[i].allowance
			if next[i] == old && !usages[i].other {
				continue
			}
			shrinks := old == 0 || (next[i] != 0 && next[i] < old)
			if shrinks != grow {
				set, to = append(set, sh), append(to, next[i])
			}
		}
		if _, err := parallel(len(set), func(i int) (struct{}, error) {
			_, err := r.quotaOp(ctx, set[i], map[string]any{"op": "allow", "tenant": tenant, "bytes": to[i]})
			return struct{}{}, err
		}); err != nil {
			return false, stored, fmt.Errorf("set stored-bytes allowance of %s: %w", tenant, err)
		}
	}
	return true, stored, nil
}

// spread asks the metadata shard's leader to spread the tenant's
// stored-bytes allowances, reserving need bytes on shard hot.
func (r *Router) spread(ctx context.Context, tenant string, hot uint64, need int64) (bool, int64, error) {
	out, err := r.quotaOp(ctx, MetadataShard, map[string]any{"op": "spread", "tenant": tenant, "shard": hot, "need": need})
	if err != nil {
		return false, 0, err
	}
	f := out.GetFields()
	return f["ok"].GetBoolValue(), int64(f["stored"].GetNumberValue()), nil
}

// overBytes reports whether err (or a failed batch entry's code and
// reason) is a data shard's stored-bytes refusal: QUOTA_EXCEEDED without
// a retry delay (the send-rate refusal has one).
func overBytes(err error) bool {
	st, ok := status.FromError(err)
	if !ok || server.ReasonOf(err) != server.ReasonQuotaExceeded {
		return false
	}
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			return false
		}
	}
	return true
}

// withRoom runs one send on a data shard; when the shard refuses it for
// the tenant's stored bytes and a spread makes room, it runs it again.
func withRoom[Resp any](ctx context.Context, r *Router, tenant string, shard uint64, need int64, f func() (Resp, error)) (Resp, error) {
	resp, err := f()
	if err == nil || r.shardCount() <= 1 || !overBytes(err) {
		return resp, err
	}
	if ok, _, serr := r.spread(ctx, tenant, shard, need); serr != nil || !ok {
		return resp, err
	}
	return f()
}

// batchWithRoom runs a sub-batch on a data shard; the entries the shard
// refused for the tenant's stored bytes are sent again once a spread
// made room for them. On a FIFO queue only when no later entry was
// stored, so a retried entry cannot land behind a later one of its group.
func batchWithRoom(ctx context.Context, r *Router, tenant string, shard uint64, fifo bool, part []*qv1.SendMessageBatchEntry,
	f func([]*qv1.SendMessageBatchEntry) (*qv1.SendMessageBatchResponse, error)) (*qv1.SendMessageBatchResponse, error) {
	resp, err := withRoom(ctx, r, tenant, shard, entriesSize(part), func() (*qv1.SendMessageBatchResponse, error) { return f(part) })
	if err != nil || r.shardCount() <= 1 {
		return resp, err
	}
	refused := map[string]bool{}
	for _, e := range resp.GetFailed() {
		if e.GetReason() == server.ReasonQuotaExceeded && e.GetRetryDelay() == nil {
			refused[e.GetId()] = true
		}
	}
	if len(refused) == 0 {
		return resp, nil
	}
	var again []*qv1.SendMessageBatchEntry
	for _, e := range part {
		if refused[e.GetId()] {
			again = append(again, e)
		} else if fifo && len(again) > 0 {
			return resp, nil // a later entry was stored (or failed otherwise)
		}
	}
	if ok, _, serr := r.spread(ctx, tenant, shard, entriesSize(again)); serr != nil || !ok {
		return resp, nil
	}
	more, err := f(again)
	if err != nil {
		return resp, nil // the first answer stands
	}
	out := &qv1.SendMessageBatchResponse{Successful: append(resp.GetSuccessful(), more.GetSuccessful()...)}
	for _, e := range resp.GetFailed() {
		if !refused[e.GetId()] {
			out.Failed = append(out.Failed, e)
		}
	}
	out.Failed = append(out.Failed, more.GetFailed()...)
	return out, nil
}

// messageSize is what the store counts against the stored-bytes quota
// (tags counted as given: at least what the store counts).
func messageSize(body string, attrs map[string]string, tags []string) int64 {
	n := int64(len(body))
	for k, v := range attrs {
		n += int64(len(k) + len(v))
	}
	for _, t := range tags {
		n += int64(len(t))
	}
	return n
}

func entriesSize(es []*qv1.SendMessageBatchEntry) int64 {
	var n int64
	for _, e := range es {
		n += messageSize(e.GetBody(), e.GetAttributes(), e.GetTags())
	}
	return n
}

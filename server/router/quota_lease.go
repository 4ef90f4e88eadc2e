package router

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
)

// Send-rate leases: on a sharded cluster a tenant's max_send_rate is one
// token bucket on the metadata shard's leader (its sendLimiter). A router
// admits a send from tokens it leased from that bucket; when it has too
// few it leases what the send needs, plus, for a tenant that sends often,
// about leaseAhead of its recent use, so most sends make no extra call.
// Leased tokens it did not use within leaseTTL are lost: the bucket
// counted them against its burst meanwhile, so unused leases can only
// lower the rate a tenant gets, never raise it. A router that was refused
// refuses locally until the bucket's retry delay has passed, so a tenant
// far over its rate does not turn each send into a call to shard 0.
// One-shard clusters skip all of this: the shard admits from its own bucket.
const (
	leaseAhead = 200 * time.Millisecond
	// unlimitedRecheck: how long a router trusts that a tenant has no
	// rate quota before asking again (a quota set meanwhile takes effect
	// at the latest after this).
	unlimitedRecheck = time.Second
)

// Peer method run by the leader of the shard in the call's header (see
// serveQuota for the operations); request and answer are
// structpb.Structs, so the peer service needs no generated code. Like the
// other peer methods it is registered on the peer listener only.
const peerQuotaMethod = "/" + server.PeerService + "/Quota"

// tenantQuotas is a router's quota state: leased send tokens per tenant,
// and, on the metadata shard's leader, one lock per tenant that spreads
// its stored-bytes allowances (quota_bytes.go).
type tenantQuotas struct {
	budgets sync.Map // tenant -> *sendBudget
	spreads sync.Map // tenant -> *sync.Mutex
}

func (q *tenantQuotas) budget(tenant string) *sendBudget {
	if v, ok := q.budgets.Load(tenant); ok {
		return v.(*sendBudget)
	}
	v, _ := q.budgets.LoadOrStore(tenant, &sendBudget{})
	return v.(*sendBudget)
}

func (q *tenantQuotas) spreadLock(tenant string) *sync.Mutex {
	v, _ := q.spreads.LoadOrStore(tenant, &sync.Mutex{})
	return v.(*sync.Mutex)
}

type sendBudget struct {
	mu             sync.Mutex // held across a lease call: one at a time per tenant
	tokens         int
	expires        time.Time // of tokens
	rate           int64     // the tenant's rate at the last lease (0: unlimited)
	leased         bool      // a lease answered since the router started
	unlimitedUntil time.Time
	deniedUntil    time.Time
	used           int       // admitted since since
	since          time.Time // of the last lease
	est            float64   // recent use, messages/s
}

// ahead is the tokens to lease beyond a send's need: about leaseAhead of
// recent use, when that covers a few sends; a tenant that sends large
// batches seldom leases per batch instead of leasing tokens it would let
// expire.
func (b *sendBudget) ahead(now time.Time, need int) int {
	if !b.since.IsZero() {
		if el := now.Sub(b.since).Seconds(); el > 0 {
			r := float64(b.used) / el
			if el >= 1 {
				b.est = r
			} else {
				b.est = (b.est + r) / 2
			}
		}
	}
	b.used, b.since = 0, now
	extra := int(b.est * leaseAhead.Seconds())
	if extra < 2*need {
		return 0
	}
	return extra
}

// admitSend admits up to n sends of tenant under its max_send_rate. It
// returns the number admitted and, when fewer than n, the error for the
// rest and when to try them again; an error with 0 admitted fails the call.
func (r *Router) admitSend(ctx context.Context, tenant string, n int) (int, time.Duration, error) {
	if r.shardCount() <= 1 {
		return n, 0, nil // the one shard admits from its own bucket
	}
	b := r.quotas.budget(tenant)
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if now.Before(b.unlimitedUntil) {
		return n, 0, nil
	}
	if !now.Before(b.expires) {
		b.tokens = 0
	}
	if b.tokens >= n {
		b.tokens -= n
		b.used += n
		return n, 0, nil
	}
	if now.Before(b.deniedUntil) {
		k := b.tokens
		b.tokens, b.used = 0, b.used+k
		retry := b.deniedUntil.Sub(now)
		return k, retry, shardserver.SendRateError(tenant, b.rate, retry)
	}
	g, err := r.leaseSend(ctx, tenant, n-b.tokens, b.ahead(now, n-b.tokens))
	if err != nil {
		if b.leased && b.rate == 0 {
			return n, 0, nil // known unlimited: shard 0 being away does not stop sends
		}
		return 0, 0, err
	}
	b.rate, b.leased = g.Rate, true
	if g.Rate <= 0 {
		b.tokens, b.unlimitedUntil = 0, now.Add(unlimitedRecheck)
		return n, 0, nil
	}
	b.tokens += g.Granted
	b.expires = now.Add(shardserver.LeaseTTL) // not later than the bucket's own expiry
	k := min(n, b.tokens)
	b.tokens -= k
	b.used += k
	if k == n {
		return n, 0, nil
	}
	b.deniedUntil = now.Add(g.Retry)
	return k, g.Retry, shardserver.SendRateError(tenant, g.Rate, g.Retry)
}

// forgetSendRate drops what the router knows of tenant's rate (its quota
// was just set through this router).
func (r *Router) forgetSendRate(tenant string) { r.quotas.budgets.Delete(tenant) }

// admitBatch admits the first entries of a batch that the tenant's send
// rate allows; it returns them and the others as failed entries with a
// retry delay. None admitted: the call fails.
func (r *Router) admitBatch(ctx context.Context, tenant string, entries []*qv1.SendMessageBatchEntry) ([]*qv1.SendMessageBatchEntry, []*qv1.BatchResultError, error) {
	k, retry, err := r.admitSend(ctx, tenant, len(entries))
	if k == 0 && err != nil {
		return nil, nil, err
	}
	var refused []*qv1.BatchResultError
	for _, e := range entries[k:] {
		refused = append(refused, shardserver.RefusedEntry(e.GetId(), err, retry))
	}
	return entries[:k], refused, nil
}

// withRefused adds the entries refused by admitBatch to a batch's answer.
func withRefused(refused []*qv1.BatchResultError) func(*qv1.SendMessageBatchResponse, error) (*qv1.SendMessageBatchResponse, error) {
	return func(resp *qv1.SendMessageBatchResponse, err error) (*qv1.SendMessageBatchResponse, error) {
		if err != nil || len(refused) == 0 {
			return resp, err
		}
		resp.Failed = append(resp.Failed, refused...)
		return resp, nil
	}
}

// leaseSend leases tokens from the metadata shard's leader.
func (r *Router) leaseSend(ctx context.Context, tenant string, need, extra int) (shardserver.SendGrant, error) {
	out, err := r.quotaOp(ctx, MetadataShard, map[string]any{"op": "lease", "tenant": tenant, "need": need, "extra": extra})
	if err != nil {
		return shardserver.SendGrant{}, err
	}
	f := out.GetFields()
	return shardserver.SendGrant{Rate: int64(f["rate"].GetNumberValue()), Granted: int(f["granted"].GetNumberValue()),
		Retry: time.Duration(f["retry_ms"].GetNumberValue()) * time.Millisecond}, nil
}

// quotaOp runs a quota operation (see serveQuota) on the leader of shard:
// here, or on the leader's node through the peer service. A NOT_LEADER
// answer or a node that cannot be dialled is retried until the deadline.
func (r *Router) quotaOp(ctx context.Context, shard uint64, op map[string]any) (*structpb.Struct, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	req, err := structpb.NewStruct(op)
	if err != nil {
		return nil, fmt.Errorf("quota op: %w", err)
	}
	for {
		leader, err := r.cfg.View.Leader(ctx, shard)
		if err != nil {
			return nil, err
		}
		if srv := r.localServer(shard); srv != nil && leader == r.cfg.Self {
			out, err := r.serveQuota(ctx, srv, req)
			if err == nil {
				return out, nil
			}
			if _, ok := retryable(server.ToStatus(err)); !ok {
				return nil, err
			}
		} else if r.cfg.Forwarder == nil {
			return nil, fmt.Errorf("no route to shard %d", shard)
		} else {
			out := &structpb.Struct{}
			err = r.cfg.Forwarder.invoke(ctx, leader, peerQuotaMethod, req, out, server.ShardHeader, fmt.Sprint(shard))
			if err == nil {
				return out, nil
			}
			hint, ok := retryable(err)
			if !ok {
				return nil, err
			}
			r.cfg.View.Hint(shard, hint)
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// quota serves the peer Quota method: the shard in the call's header,
// which this node must lead, runs the operation.
func (p *PeerServer) quota(ctx context.Context, req *structpb.Struct) (*structpb.Struct, error) {
	srv, err := p.addressed(ctx)
	if err != nil {
		return nil, err
	}
	out, err := p.router.serveQuota(ctx, srv, req)
	return out, server.ToStatus(err)
}

// serveQuota runs a quota operation on srv, whose shard this node leads:
// "lease" (send-rate tokens; metadata shard), "usage" and "allow" (a data
// shard's stored bytes and allowance), "spread" (rebalance the allowances;
// metadata shard, see quota_bytes.go).
func (r *Router) serveQuota(ctx context.Context, srv *shardserver.Server, req *structpb.Struct) (*structpb.Struct, error) {
	f := req.GetFields()
	tenant := f["tenant"].GetStringValue()
	if err := shardserver.CheckText("tenant", tenant, 1, 64); err != nil {
		return nil, err
	}
	switch op := f["op"].GetStringValue(); op {
	case "lease":
		need, extra := int(f["need"].GetNumberValue()), int(f["extra"].GetNumberValue())
		if need < 0 || extra < 0 || need+extra > 1<<20 {
			return nil, server.StatusError(codes.InvalidArgument, server.ReasonInvalidArgument, "bad lease size", nil)
		}
		g, err := srv.GrantSend(tenant, need, extra)
		if err != nil {
			return nil, err
		}
		return structpb.NewStruct(map[string]any{"rate": g.Rate, "granted": g.Granted, "retry_ms": g.Retry.Milliseconds()})
	case "usage":
		rec, err := srv.Store().Tenant(tenant)
		if err != nil {
			return nil, err
		}
		q := rec.GetQuota()
		return structpb.NewStruct(map[string]any{"allowance": q.GetMaxStoredBytes(), "stored": rec.GetStoredBytes(),
			"other": q.GetMaxSendRate() != 0 || q.GetMaxQueues() != 0})
	case "allow":
		return &structpb.Struct{}, srv.SetAllowance(ctx, tenant, int64(f["bytes"].GetNumberValue()))
	case "spread":
		if srv.Shard() != MetadataShard {
			return nil, server.StatusError(codes.InvalidArgument, server.ReasonInvalidArgument, "spread runs on the metadata shard", nil)
		}
		ok, stored, err := r.spreadBytes(ctx, srv, tenant, uint64(f["shard"].GetNumberValue()), int64(f["need"].GetNumberValue()))
		if err != nil {
			return nil, err
		}
		return structpb.NewStruct(map[string]any{"ok": ok, "stored": stored})
	default:
		return nil, server.StatusError(codes.InvalidArgument, server.ReasonInvalidArgument, fmt.Sprintf("unknown quota op %q", op), nil)
	}
}

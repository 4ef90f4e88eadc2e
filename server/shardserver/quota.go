package shardserver

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// sendLimiter keeps one token bucket per tenant for max_send_rate (burst:
// one second's worth). On a one-shard cluster the shard's leader admits
// every send from it. On a sharded cluster only the metadata shard's
// leader has buckets: routers lease tokens from it (grantSend, see
// quota_lease.go), so the rate holds for the tenant whatever the number of
// shards. A leader change starts the buckets full, allowing one extra
// burst.
type sendLimiter struct {
	mu      sync.Mutex
	buckets map[string]*tokenBucket
	// rates caches each tenant's max_send_rate so a send does not read the
	// store; AfterApply forgets a tenant whose quota changed and Restored
	// forgets all (forget), and the next send reloads it.
	rates map[string]int64
	gen   uint64 // bumped by forget: a load that raced with it is not cached
}

func newSendLimiter() *sendLimiter {
	return &sendLimiter{buckets: map[string]*tokenBucket{}, rates: map[string]int64{}}
}

// rate returns tenant's send rate, loading it with load on a cache miss.
func (l *sendLimiter) rate(tenant string, load func() (int64, error)) (int64, error) {
	l.mu.Lock()
	r, ok := l.rates[tenant]
	gen := l.gen
	l.mu.Unlock()
	if ok {
		return r, nil
	}
	r, err := load()
	if err != nil {
		return 0, err
	}
	l.mu.Lock()
	if l.gen == gen {
		l.rates[tenant] = r
	}
	l.mu.Unlock()
	return r, nil
}

// forget drops the cached rate of tenant ("" : every tenant).
func (l *sendLimiter) forget(tenant string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gen++
	if tenant == "" {
		clear(l.rates)
		return
	}
	delete(l.rates, tenant)
}

// take takes up to need tokens for tenant at the given rate (0: unlimited)
// and, when all of need was there, up to extra more (see tokenBucket.take).
// Tokens taken with a ttl are a lease: they count against the burst until
// they expire. It returns the tokens taken and, when fewer than need, how
// long until the rest (at most a burst) is there.
func (l *sendLimiter) take(tenant string, perSecond int64, need, extra int, ttl time.Duration, now time.Time) (int, time.Duration) {
	if perSecond <= 0 {
		return need + extra, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[tenant]
	if !ok {
		b = newTokenBucket(perSecond, now)
		l.buckets[tenant] = b
	} else if b.rate != float64(perSecond) {
		b.setRate(perSecond, now)
	}
	return b.take(need, extra, ttl, now)
}

// tokenBucket refills at rate tokens a second up to burst. Leased tokens
// (taken with a ttl) count against the burst until they expire, so tokens
// + leases never exceed the burst: the sends of any window of T seconds
// are at most burst + rate*T (within 10 % over 10 s with a burst of one
// second's worth), however many routers hold leases and whether or not
// they use them.
type tokenBucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
	leases      []tokenLease // in expiry order (all share one ttl)
	leased      float64      // sum of leases
}

type tokenLease struct {
	expires time.Time
	n       float64
}

func newTokenBucket(perSecond int64, now time.Time) *tokenBucket {
	r := float64(perSecond)
	return &tokenBucket{rate: r, burst: r, tokens: r, last: now}
}

func (b *tokenBucket) setRate(perSecond int64, now time.Time) {
	b.refill(now)
	b.rate, b.burst = float64(perSecond), float64(perSecond)
	b.tokens = max(min(b.tokens, b.burst-b.leased), 0)
}

// refill ends expired leases and adds the tokens earned since the last call.
func (b *tokenBucket) refill(now time.Time) {
	i := 0
	for ; i < len(b.leases) && !b.leases[i].expires.After(now); i++ {
		b.leased -= b.leases[i].n
	}
	b.leases = append(b.leases[:0], b.leases[i:]...)
	if len(b.leases) == 0 {
		b.leased = 0 // no float drift
	}
	if now.After(b.last) {
		b.tokens += b.rate * now.Sub(b.last).Seconds()
		b.last = now
	}
	b.tokens = max(min(b.tokens, b.burst-b.leased), 0)
}

// take takes up to need tokens; when all of need was there it takes up to
// extra more, but only from above half the burst, so tokens leased ahead
// of use never starve a caller's batch. Fewer than need: it also says how
// long until the rest (at most a burst's worth) has refilled.
func (b *tokenBucket) take(need, extra int, ttl time.Duration, now time.Time) (int, time.Duration) {
	b.refill(now)
	got := min(need, int(b.tokens))
	if got == need && extra > 0 {
		spare := int(b.tokens-b.burst/2) - need
		got += min(max(spare, 0), extra)
	}
	b.tokens -= float64(got)
	if ttl > 0 && got > 0 {
		b.leases = append(b.leases, tokenLease{expires: now.Add(ttl), n: float64(got)})
		b.leased += float64(got)
	}
	if got >= need {
		return got, 0
	}
	missing := min(float64(need-got), max(math.Floor(b.burst), 1)) - b.tokens
	retry := time.Duration(missing / b.rate * float64(time.Second))
	return got, max(retry.Round(time.Millisecond), time.Millisecond)
}

// quotaError is RESOURCE_EXHAUSTED / QUOTA_EXCEEDED with a retry delay.
func quotaError(msg string, retry time.Duration) error {
	st := status.New(codes.ResourceExhausted, msg)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: server.ReasonQuotaExceeded, Domain: server.ErrorDomain}); err == nil {
		st = withInfo
	}
	if retry > 0 {
		if withRetry, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)}); err == nil {
			st = withRetry
		}
	}
	return st.Err()
}

// admitSend takes send-rate tokens for up to n messages of tenant on a
// shard that enforces the rate itself (a one-shard cluster; data shards
// have no rate of their own, their router leased the tokens). It returns
// how many are admitted; when fewer than n, the error for the rest (with
// its retry delay) and the delay.
func (s *Server) admitSend(tenant string, n int) (int, time.Duration, error) {
	perSecond, err := s.sendRate(tenant)
	if err != nil {
		return 0, 0, err
	}
	k, retry := s.limiter.take(tenant, perSecond, n, 0, 0, time.Now())
	if k >= n {
		return n, 0, nil
	}
	s.metrics.quotaRejected(context.Background(), tenant, "send_rate", n-k)
	return k, retry, SendRateError(tenant, perSecond, retry)
}

// sendRate is tenant's max_send_rate as this shard has it (0: unlimited).
func (s *Server) sendRate(tenant string) (int64, error) {
	return s.limiter.rate(tenant, func() (int64, error) {
		rec, err := s.store.Tenant(tenant)
		return rec.GetQuota().GetMaxSendRate(), err
	})
}

func SendRateError(tenant string, perSecond int64, retry time.Duration) error {
	return quotaError(fmt.Sprintf("tenant %s is over its send rate of %d messages/s", tenant, perSecond), retry)
}

// RefusedEntry is a batch entry past the send-rate quota: it may be sent
// again after retry.
func RefusedEntry(id string, err error, retry time.Duration) *qv1.BatchResultError {
	f := FailedEntry(id, err)
	if retry > 0 {
		f.RetryDelay = durationpb.New(retry)
	}
	return f
}

func quotaFromAPI(q *qv1.TenantQuota) *storepb.TenantQuota {
	return &storepb.TenantQuota{MaxQueues: q.GetMaxQueues(), MaxSendRate: q.GetMaxSendRate(), MaxStoredBytes: q.GetMaxStoredBytes()}
}

func tenantToAPI(r *storepb.TenantRecord) (*qv1.TenantQuota, *qv1.TenantUsage) {
	q := r.GetQuota()
	return &qv1.TenantQuota{MaxQueues: q.GetMaxQueues(), MaxSendRate: q.GetMaxSendRate(), MaxStoredBytes: q.GetMaxStoredBytes()},
		&qv1.TenantUsage{Queues: r.GetQueues(), StoredBytes: r.GetStoredBytes()}
}

// SetTenantQuota replaces a tenant's quota (ClusterService, cluster:admin).
func (s *Server) SetTenantQuota(ctx context.Context, req *qv1.SetTenantQuotaRequest) (*qv1.SetTenantQuotaResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	if err := CheckText("tenant", req.GetTenant(), 1, 64); err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_SetTenantQuota{SetTenantQuota: &storepb.SetTenantQuota{
		Tenant: req.GetTenant(), Quota: quotaFromAPI(req.GetQuota()),
	}}})
	if err != nil {
		return nil, err
	}
	q, u := tenantToAPI(res.TenantRecord)
	return &qv1.SetTenantQuotaResponse{Quota: q, Usage: u}, nil
}

// GetTenantQuota returns a tenant's quota and usage (ClusterService).
func (s *Server) GetTenantQuota(ctx context.Context, req *qv1.GetTenantQuotaRequest) (*qv1.GetTenantQuotaResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	if err := CheckText("tenant", req.GetTenant(), 1, 64); err != nil {
		return nil, err
	}
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	rec, err := s.store.Tenant(req.GetTenant())
	if err != nil {
		return nil, err
	}
	q, u := tenantToAPI(rec)
	return &qv1.GetTenantQuotaResponse{Quota: q, Usage: u}, nil
}

package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// sendLimiter enforces the tenants' max_send_rate with one token bucket per
// tenant (burst: one second's worth). It runs on the shard leader, where
// every send is proposed, so the limit holds for the whole cluster; a
// leader change starts the buckets full, allowing one extra burst.
type sendLimiter struct {
	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	// rates caches each tenant's max_send_rate so a send does not read the
	// store; AfterApply forgets a tenant whose quota changed and Restored
	// forgets all (forget), and the next send reloads it.
	rates map[string]int64
	gen   uint64 // bumped by forget: a load that raced with it is not cached
}

func newSendLimiter() *sendLimiter {
	return &sendLimiter{limiters: map[string]*rate.Limiter{}, rates: map[string]int64{}}
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

// allow takes n tokens for tenant at the given rate (0: unlimited) or says
// how long to wait before retrying.
func (l *sendLimiter) allow(tenant string, perSecond int64, n int, now time.Time) (bool, time.Duration) {
	if perSecond <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.limiters[tenant]
	if !ok {
		lim = rate.NewLimiter(rate.Limit(perSecond), int(perSecond))
		l.limiters[tenant] = lim
	} else if lim.Limit() != rate.Limit(perSecond) {
		lim.SetLimitAt(now, rate.Limit(perSecond))
		lim.SetBurstAt(now, int(perSecond))
	}
	if n > lim.Burst() {
		return false, time.Second // larger than a second's worth: never fits at once
	}
	r := lim.ReserveN(now, n)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// quotaError is RESOURCE_EXHAUSTED / QUOTA_EXCEEDED with a retry delay.
func quotaError(msg string, retry time.Duration) error {
	st := status.New(codes.ResourceExhausted, msg)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: ReasonQuotaExceeded, Domain: ErrorDomain}); err == nil {
		st = withInfo
	}
	if retry > 0 {
		if withRetry, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)}); err == nil {
			st = withRetry
		}
	}
	return st.Err()
}

// checkSendRate fails when tenant has sent past its max_send_rate.
func (s *Server) checkSendRate(tenant string, n int) error {
	perSecond, err := s.limiter.rate(tenant, func() (int64, error) {
		rec, err := s.store.Tenant(tenant)
		return rec.GetQuota().GetMaxSendRate(), err
	})
	if err != nil {
		return err
	}
	ok, retry := s.limiter.allow(tenant, perSecond, n, time.Now())
	if !ok {
		s.metrics.quotaRejected(context.Background(), tenant, "send_rate", n)
		return quotaError(fmt.Sprintf("tenant %s is over its send rate of %d messages/s", tenant, perSecond), retry)
	}
	return nil
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
	if _, err := require(ctx, ScopeClusterAdmin); err != nil {
		return nil, err
	}
	if err := checkText("tenant", req.GetTenant(), 1, 64); err != nil {
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
	if _, err := require(ctx, ScopeClusterAdmin); err != nil {
		return nil, err
	}
	if err := checkText("tenant", req.GetTenant(), 1, 64); err != nil {
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

package shardserver

import (
	"context"
	"time"
)

// LeaseTTL is how long a router may use the tokens of one lease (see the
// send-rate leases above).
const LeaseTTL = 250 * time.Millisecond

// SendGrant is a lease answer.
type SendGrant struct {
	Rate    int64
	Granted int
	Retry   time.Duration
}

// GrantSend leases up to need (+ extra) tokens of tenant's bucket; it runs
// on the metadata shard's leader, whose store has the tenant's quota.
func (s *Server) GrantSend(tenant string, need, extra int) (SendGrant, error) {
	perSecond, err := s.sendRate(tenant)
	if err != nil {
		return SendGrant{}, err
	}
	if perSecond <= 0 {
		return SendGrant{}, nil
	}
	got, retry := s.limiter.take(tenant, perSecond, need, extra, LeaseTTL, time.Now())
	if got < need {
		s.metrics.quotaRejected(context.Background(), tenant, "send_rate", need-got)
	}
	return SendGrant{Rate: perSecond, Granted: got, Retry: retry}, nil
}

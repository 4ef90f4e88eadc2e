package quorumq

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
)

// RetryPolicy says which failed calls are tried again and how long to wait
// in between. Zero fields take the defaults of DefaultRetryPolicy.
//
// A call is retried when its outcome says nothing was done or when doing it
// again is safe: UNAVAILABLE (NOT_LEADER, NO_QUORUM, LEADERSHIP_LOST,
// SHUTTING_DOWN, transport failures), RESOURCE_EXHAUSTED carrying a
// RetryInfo (the send-rate quota; never sooner than its retry delay), and
// an attempt that ran past AttemptTimeout. Every call the
// SDK retries is idempotent: sends carry an idempotency key, receives a
// receive_attempt_id, and deletes and visibility changes may be repeated.
// PurgeQueue, which is not, makes a single attempt.
// No other code (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, …) is
// retried, and nothing is retried once the caller's context is done.
type RetryPolicy struct {
	// MaxAttempts bounds the attempts of one call, the first included.
	// Default 10; 1 disables retries.
	MaxAttempts int
	// InitialBackoff is the cap of the first wait; it doubles per attempt
	// up to MaxBackoff. The wait is uniform in [0, cap) ("full jitter").
	// Defaults 50ms and 2s.
	InitialBackoff, MaxBackoff time.Duration
	// AttemptTimeout bounds one attempt (a receive's long-poll wait is
	// added to it). Default 10s; the caller's context bounds the whole call.
	AttemptTimeout time.Duration
}

// DefaultRetryPolicy is the policy of a Client dialled without
// WithRetryPolicy.
var DefaultRetryPolicy = RetryPolicy{
	MaxAttempts:    10,
	InitialBackoff: 50 * time.Millisecond,
	MaxBackoff:     2 * time.Second,
	AttemptTimeout: 10 * time.Second,
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = d.InitialBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = d.MaxBackoff
	}
	if p.MaxBackoff < p.InitialBackoff {
		p.MaxBackoff = p.InitialBackoff
	}
	if p.AttemptTimeout <= 0 {
		p.AttemptTimeout = d.AttemptTimeout
	}
	return p
}

// backoff is the full-jitter wait before attempt+1 (attempt counts from 1).
func (p RetryPolicy) backoff(attempt int) time.Duration {
	ceil := p.InitialBackoff
	for i := 1; i < attempt && ceil < p.MaxBackoff; i++ {
		ceil *= 2
	}
	ceil = min(ceil, p.MaxBackoff)
	return rand.N(ceil) + time.Millisecond
}

// retryable tells whether err (an *Error or a context error of an attempt
// that timed out) may be retried, and after how long at least.
func retryable(err error, attemptTimedOut bool) (bool, time.Duration) {
	if attemptTimedOut {
		return true, 0
	}
	var e *Error
	if !errors.As(err, &e) {
		return false, 0
	}
	switch e.Code {
	case codes.Unavailable:
		return true, e.RetryDelay
	case codes.ResourceExhausted:
		// Only an answer with a RetryInfo is worth another try: the send
		// rate quota says when it has room again, while the queue-count
		// and stored-bytes quotas (no RetryInfo) do not clear by waiting,
		// and gRPC's own RESOURCE_EXHAUSTED (an oversized message) never.
		if e.RetryDelay > 0 {
			return true, e.RetryDelay
		}
	}
	return false, 0
}

// transportFailure tells whether err says nothing about the cluster, only
// that the endpoint could not be reached (UNAVAILABLE without a reason).
func transportFailure(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == codes.Unavailable && e.Reason == ""
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

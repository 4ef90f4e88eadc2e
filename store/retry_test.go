package store

import (
	"testing"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// TestBackoff: min(base × factor^(n−1), max), integer arithmetic; jitter
// takes at most its fraction off and is a function of (seq, receive count).
func TestBackoff(t *testing.T) {
	p := &storepb.RetryPolicy{BaseMs: 1000, FactorMilli: 2000, MaxMs: 10_000}
	for n, want := range map[int32]int64{0: 0, 1: 1000, 2: 2000, 3: 4000, 4: 8000, 5: 10_000, 1000: 10_000, 1 << 30: 10_000} {
		if got := Backoff(p, n, 1, 1); got != want {
			t.Errorf("n=%d: %d ms, want %d", n, got, want)
		}
	}
	if got := Backoff(nil, 3, 1, 1); got != 0 {
		t.Errorf("no policy: %d ms, want 0", got)
	}
	slow := &storepb.RetryPolicy{BaseMs: 100, FactorMilli: 1500, MaxMs: MaxRetryDelayMs}
	if got := Backoff(slow, 3, 1, 1); got != 225 {
		t.Errorf("factor 1.5, n=3: %d ms, want 225", got)
	}
	j := &storepb.RetryPolicy{BaseMs: 1000, FactorMilli: 2000, MaxMs: 60_000, JitterMilli: 500}
	varied := map[int64]bool{}
	for seq := uint64(1); seq <= 200; seq++ {
		d := Backoff(j, 4, seq, 7)
		if d < 4000 || d > 8000 {
			t.Fatalf("seq %d: jittered %d ms outside [4000, 8000]", seq, d)
		}
		if d != Backoff(j, 4, seq, 7) {
			t.Fatalf("seq %d: jitter not a function of the message", seq)
		}
		varied[d] = true
	}
	if len(varied) < 100 {
		t.Errorf("jitter gave %d distinct delays over 200 messages", len(varied))
	}
}

// TestRetryAttributesValidated: the policy, ttl and max length ranges.
func TestRetryAttributesValidated(t *testing.T) {
	for name, mod := range map[string]func(*storepb.QueueAttributes){
		"attributes.retry_policy.base": func(a *storepb.QueueAttributes) { a.RetryPolicy = &storepb.RetryPolicy{FactorMilli: 2000, MaxMs: 1} },
		"attributes.retry_policy.factor": func(a *storepb.QueueAttributes) {
			a.RetryPolicy = &storepb.RetryPolicy{BaseMs: 1, FactorMilli: 500, MaxMs: 1}
		},
		"attributes.retry_policy.max": func(a *storepb.QueueAttributes) {
			a.RetryPolicy = &storepb.RetryPolicy{BaseMs: 10, FactorMilli: 2000, MaxMs: 5}
		},
		"attributes.retry_policy.jitter": func(a *storepb.QueueAttributes) {
			a.RetryPolicy = &storepb.RetryPolicy{BaseMs: 1, FactorMilli: 2000, MaxMs: 1, JitterMilli: 1001}
		},
		"attributes.message_ttl": func(a *storepb.QueueAttributes) { a.MessageTtlMs = a.MessageRetentionMs },
		"attributes.max_length":  func(a *storepb.QueueAttributes) { a.MaxLength = -1 },
		"attributes.max_bytes":   func(a *storepb.QueueAttributes) { a.MaxBytes = MaxQueueBytes + 1 },
		"attributes.overflow":    func(a *storepb.QueueAttributes) { a.Overflow = 7 },
	} {
		a := DefaultAttributes()
		mod(a)
		err := ValidateAttributes(a)
		fe, ok := err.(*FieldError)
		if !ok || fe.Field != name {
			t.Errorf("%s: got %v", name, err)
		}
	}
	a := DefaultAttributes()
	a.RetryPolicy = &storepb.RetryPolicy{BaseMs: 1, FactorMilli: 10_000, MaxMs: MaxRetryDelayMs, JitterMilli: 1000}
	a.MessageTtlMs, a.MaxLength, a.MaxBytes = a.MessageRetentionMs-1, MaxQueueLength, MaxQueueBytes
	a.Overflow = storepb.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST
	if err := ValidateAttributes(a); err != nil {
		t.Errorf("bounds: %v", err)
	}
}

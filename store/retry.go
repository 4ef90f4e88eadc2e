package store

import (
	"encoding/binary"
	"hash/fnv"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Retry backoff, nacks and the failed / released counters (see DESIGN.md,
// "Retries, nacks and time to live").
//
// A delivery ends one of three ways besides a delete: a nack as failed, a
// nack as released, or its lease running out. A lease running out is not
// an event apply sees (the visibility entry simply reaches now), so it is
// counted when a receive next finds the message: visible, received, with
// its lease still open (not lease_closed). That receive counts the failure
// and, under a retry policy, puts the message at (lease end + backoff)
// instead of returning it, or returns it when that time has passed too. So
// the redelivery time is exact whenever the receive comes; only the
// counters and the depth stats (the message counts as visible until then)
// wait for it.

// Retry policy bounds (RetryPolicy, in storepb units).
const (
	MaxRetryDelayMs      = MaxVisibilityTimeoutMs
	MinRetryFactorMilli  = 1000
	MaxRetryFactorMilli  = 10_000
	DefaultRetryFactor   = 2000
	MaxRetryJitterMilli  = 1000
	MaxNackRedeliveryMs  = MaxVisibilityTimeoutMs
	maxBackoffExponent   = MaxReceiveCountLimit
	jitterResolution     = 1 << 20
	retryHashSeqAndCount = 12
)

// Backoff is the delay before the redelivery of a message whose failed
// count is n (n >= 1) under policy p: min(base × factor^(n−1), max), less
// a jitter fraction of it derived from (seq, receive count). Integer
// arithmetic only, so every replica computes the same. 0 without a policy.
func Backoff(p *storepb.RetryPolicy, n int32, seq uint64, receiveCount int32) int64 {
	if p.GetBaseMs() <= 0 || n < 1 {
		return 0
	}
	ceiling := p.MaxMs
	if ceiling <= 0 || ceiling > MaxRetryDelayMs {
		ceiling = MaxRetryDelayMs
	}
	factor := p.FactorMilli
	if factor < MinRetryFactorMilli {
		factor = DefaultRetryFactor
	}
	d := min(p.BaseMs, ceiling)
	// d <= 12h (4.3e7 ms) and factor <= 1e4: the product fits an int64.
	for i := int32(1); i < min(n, maxBackoffExponent) && d < ceiling; i++ {
		d = min(d*factor/1000, ceiling)
	}
	if j := min(p.JitterMilli, MaxRetryJitterMilli); j > 0 {
		var b [retryHashSeqAndCount]byte
		binary.BigEndian.PutUint64(b[0:], seq)
		binary.BigEndian.PutUint32(b[8:], uint32(receiveCount))
		h := fnv.New64a()
		_, _ = h.Write(b[:])
		u := int64(h.Sum64() % jitterResolution) // [0, 1) in 2^-20 steps
		// d * j * u < 4.3e7 * 1e3 * 1e6: fits.
		d -= d * j / 1000 * u / jitterResolution
	}
	return d
}

// deliveries is what counts toward the delivery limit: receives less
// released ones.
func deliveries(m *storepb.MessageRecord) int32 { return m.ReceiveCount - m.ReleasedCount }

// triage sorts one receive's candidates: those to lease, and those it
// handles otherwise — dead-lettered (delivery limit), expired (time to
// live) and backing off (a lease that ran out under a retry policy). It
// writes nothing until apply, so the scan reads one consistent view.
type triage struct {
	t     *txn
	q     *storepb.QueueRecord
	dead  []*storepb.MessageRecord // to the DLQ; DeadLetterReason set
	drop  []*storepb.MessageRecord // expired, no DLQ
	later []*storepb.MessageRecord // backing off, until laterAt
	at    []int64
	// FIFO groups whose head backs off: nothing behind it may go first.
	blocked map[string]bool
	// skipped counts the messages passed over behind such heads.
	skipped int
}

// sort handles m when it is not to be leased and reports whether it did.
// A lease that ran out is counted on m (failed_count) either way.
func (tr *triage) sort(m *storepb.MessageRecord) bool {
	a, now := tr.q.Attributes, tr.t.now
	if tr.blocked[m.GroupId] && m.GroupId != "" {
		tr.skipped++
		return true
	}
	switch {
	case a.DeadLetterQueue != "" && deliveries(m) >= a.MaxReceiveCount:
		m.DeadLetterReason = storepb.DeadLetterReason_DEAD_LETTER_REASON_MAX_RECEIVES
		tr.dead = append(tr.dead, m)
		return true
	case m.ExpiresAtMs > 0 && m.ExpiresAtMs <= now:
		if a.DeadLetterQueue != "" {
			m.DeadLetterReason = storepb.DeadLetterReason_DEAD_LETTER_REASON_EXPIRED
			tr.dead = append(tr.dead, m)
		} else {
			tr.drop = append(tr.drop, m)
		}
		return true
	case !inFlight(m):
		return false
	}
	// Visible with its lease open: the lease ran out, a failed delivery.
	m.FailedCount++
	at := m.VisibleAtMs + Backoff(a.RetryPolicy, m.FailedCount, m.Seq, m.ReceiveCount)
	if at <= now {
		return false
	}
	tr.later = append(tr.later, m)
	tr.at = append(tr.at, at)
	if isFifo(tr.q) {
		if tr.blocked == nil {
			tr.blocked = map[string]bool{}
		}
		tr.blocked[m.GroupId] = true
	}
	return true
}

// full: the receive made its share of moves (maxDeadPerReceive), or passed
// over receiveScanBudget messages behind backing-off FIFO heads, so one
// apply stays short however many such messages sit at the head.
func (tr *triage) full() bool {
	return len(tr.dead)+len(tr.drop)+len(tr.later) >= maxDeadPerReceive || tr.skipped >= receiveScanBudget
}

// apply writes what sort decided; the caller writes meta. Dead-letter
// moves and drops come first: removing a FIFO head makes the next message
// of its group the head before that one's lease moves it.
func (tr *triage) apply(meta *storepb.QueueMeta, res *Result) error {
	t, q := tr.t, tr.q
	for _, m := range tr.dead {
		if err := t.deadLetter(q, meta, m, m.DeadLetterReason); err != nil {
			return err
		}
	}
	for _, m := range tr.drop {
		if err := t.remove(q, meta, m); err != nil {
			return err
		}
	}
	for i, m := range tr.later {
		if err := t.reschedule(q, m, tr.at[i], func() { m.LeaseClosed = true }); err != nil {
			return err
		}
	}
	res.DeadLettered += len(tr.dead)
	res.Dropped += len(tr.drop)
	res.OutboxAdded = res.OutboxAdded || len(tr.dead) > 0
	return nil
}

// changed reports whether apply writes anything.
func (tr *triage) changed() bool { return len(tr.dead)+len(tr.drop)+len(tr.later) > 0 }

// deadLetter moves m to q's dead-letter queue through the outbox, saying
// why. The caller writes meta.
func (t *txn) deadLetter(q *storepb.QueueRecord, meta *storepb.QueueMeta, m *storepb.MessageRecord, why storepb.DeadLetterReason) error {
	m.DeadLetterReason = why
	return t.toOutbox(q, meta, m, q.Tenant, q.Attributes.DeadLetterQueue, false)
}

// nack ends leases early: each entry counts the delivery as failed or
// released and makes the message visible again — at the explicit time if
// the entry gives one, else at once for a release and after the retry
// policy's backoff for a failure (at once, too, when the failure used up
// the delivery limit: the next receive dead-letters it). A nack of a lease
// already closed (a retried nack) changes nothing and succeeds.
func (t *txn) nack(op *storepb.Nack, res *Result) error {
	q, err := t.lookup(op.Tenant, op.Queue, res)
	if q == nil || err != nil {
		return err
	}
	a := q.Attributes
	res.Entries = make([]error, len(op.Entries))
	res.VisibleAt = make([]int64, len(op.Entries))
	for i, e := range op.Entries {
		if e.DelayMs < -1 || e.DelayMs > MaxNackRedeliveryMs || e.DeliverAtMs-t.now > MaxNackRedeliveryMs {
			res.Entries[i] = fieldErr("redeliver_delay", "must be between 0 and %v", msDur(MaxNackRedeliveryMs))
			continue
		}
		m, outcome, err := t.byHandle(q, e.ReceiptHandle)
		if err != nil {
			return err
		}
		if outcome == nil && m == nil {
			outcome = ErrMessageNotFound
		}
		if res.Entries[i] = outcome; outcome != nil {
			continue
		}
		if m.LeaseClosed {
			res.VisibleAt[i] = m.VisibleAtMs
			continue
		}
		released := e.Kind == storepb.NackKind_NACK_KIND_RELEASED
		if released {
			m.ReleasedCount++
		} else {
			m.FailedCount++
		}
		at := t.now
		switch {
		case e.DeliverAtMs > 0:
			at = max(e.DeliverAtMs, t.now)
		case e.DelayMs >= 0:
			at = t.now + e.DelayMs
		case released:
		case a.DeadLetterQueue != "" && deliveries(m) >= a.MaxReceiveCount:
			// Used up: the next receive moves it, no need to wait.
		default:
			at = t.now + Backoff(a.RetryPolicy, m.FailedCount, m.Seq, m.ReceiveCount)
		}
		if err := t.reschedule(q, m, at, func() { m.LeaseClosed = true }); err != nil {
			return err
		}
		res.VisibleAt[i] = at
		res.Woken = res.Woken || at <= t.now
	}
	return nil
}

package store

import (
	"fmt"
	"strings"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Script words of retry backoff, nacks, time to live and max length
// (testdata/retry.txt, ttl.txt, maxlen.txt):
//
//	create … retry=BASE[/FACTOR[/MAX[/JITTER]]] ttl=D maxlen=N maxbytes=N overflow=drop
//	send … ttl=D
//	nack handle=h1,h2 [kind=released] [delay=D | at=T]

// retryAttrs reads the retry, ttl and max length words of a create or
// update into at.
func retryAttrs(at *storepb.QueueAttributes, a args) {
	if v, ok := a["retry"]; ok {
		parts := strings.Split(v, "/")
		p := &storepb.RetryPolicy{BaseMs: parseMs(parts[0]), FactorMilli: DefaultRetryFactor, MaxMs: MaxRetryDelayMs}
		if len(parts) > 1 {
			var f float64
			fmt.Sscan(parts[1], &f)
			p.FactorMilli = int64(f * 1000)
		}
		if len(parts) > 2 {
			p.MaxMs = parseMs(parts[2])
		}
		if len(parts) > 3 {
			var j float64
			fmt.Sscan(parts[3], &j)
			p.JitterMilli = int64(j * 1000)
		}
		at.RetryPolicy = p
	}
	at.MessageTtlMs = a.ms("ttl", 0)
	at.MaxLength = a.int("maxlen", 0)
	at.MaxBytes = a.int("maxbytes", 0)
	if a.str("overflow", "") == "drop" {
		at.Overflow = storepb.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST
	}
}

// retryLine renders the retry and ttl fields of a message that has them.
func retryLine(m *storepb.MessageRecord) string {
	var s string
	if m.FailedCount != 0 {
		s += fmt.Sprintf(" failed=%d", m.FailedCount)
	}
	if m.ReleasedCount != 0 {
		s += fmt.Sprintf(" released=%d", m.ReleasedCount)
	}
	if m.ExpiresAtMs != 0 {
		s += " expires_at=" + fmtMs(m.ExpiresAtMs)
	}
	if m.DeadLetterReason != storepb.DeadLetterReason_DEAD_LETTER_REASON_UNSPECIFIED {
		s += " reason=" + strings.TrimPrefix(m.DeadLetterReason.String(), "DEAD_LETTER_REASON_")
	}
	return s
}

func (h *harness) nack(tenant, q string, a args, p func(string, ...any), flags func(*Result)) {
	names := a.list("handle")
	kind := storepb.NackKind_NACK_KIND_FAILED
	if a.str("kind", "failed") == "released" {
		kind = storepb.NackKind_NACK_KIND_RELEASED
	}
	var es []*storepb.NackEntry
	for _, n := range names {
		es = append(es, &storepb.NackEntry{ReceiptHandle: h.handle(n, a), Kind: kind, DelayMs: a.ms("delay", -1), DeliverAtMs: a.ms("at", 0)})
	}
	r := h.apply(&storepb.Command{Op: &storepb.Command_Nack{Nack: &storepb.Nack{Tenant: tenant, Queue: q, Entries: es}}})
	if r.Err != nil {
		p("%s", errName(r.Err))
		return
	}
	for i, e := range r.Entries {
		if e != nil {
			p("%s: %s", names[i], errName(e))
		} else {
			p("%s: ok visible_at=%s", names[i], fmtMs(r.VisibleAt[i]))
		}
	}
	flags(r)
}

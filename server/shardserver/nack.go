package shardserver

import (
	"context"
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Nacks, retry policies, time to live and max length at the API edge
// (issue 18 items 3–6; the semantics are the store's, see store/DESIGN.md).

// maxRetryDelay bounds a retry policy's delays and a nack's redelivery.
const maxRetryDelay = time.Duration(store.MaxRetryDelayMs) * time.Millisecond

// limitsFromAPI converts the retry policy, time to live and max length
// attributes (same rules as attributesFromAPI: an unset field keeps out's
// value, or with a mask naming it goes back to the default).
func limitsFromAPI(a *qv1.QueueAttributes, out *storepb.QueueAttributes, set func(string) bool, masked bool) error {
	if set("retry_policy") {
		if p := a.GetRetryPolicy(); p != nil {
			rp, err := retryPolicyFromAPI(p)
			if err != nil {
				return err
			}
			out.RetryPolicy = rp
		} else if masked {
			out.RetryPolicy = nil
		}
	}
	if set("message_ttl") {
		def := out.MessageTtlMs
		if masked {
			def = 0
		}
		ms, err := DurationMs("attributes.message_ttl", a.GetMessageTtl(), def, maxAttrDuration)
		if err != nil {
			return err
		}
		out.MessageTtlMs = ms
	}
	if set("max_length") && (a.GetMaxLength() != 0 || masked) {
		out.MaxLength = a.GetMaxLength()
	}
	if set("max_bytes") && (a.GetMaxBytes() != 0 || masked) {
		out.MaxBytes = a.GetMaxBytes()
	}
	if set("overflow") && (a.GetOverflow() != qv1.OverflowPolicy_OVERFLOW_POLICY_UNSPECIFIED || masked) {
		switch a.GetOverflow() {
		case qv1.OverflowPolicy_OVERFLOW_POLICY_UNSPECIFIED, qv1.OverflowPolicy_OVERFLOW_POLICY_REJECT:
			out.Overflow = storepb.OverflowPolicy_OVERFLOW_POLICY_UNSPECIFIED
		case qv1.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST:
			out.Overflow = storepb.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST
		default:
			return server.FieldError("attributes.overflow", "unknown policy")
		}
	}
	return nil
}

func retryPolicyFromAPI(p *qv1.RetryPolicy) (*storepb.RetryPolicy, error) {
	base, err := DurationMs("attributes.retry_policy.base", p.GetBase(), 0, maxRetryDelay)
	if err != nil {
		return nil, err
	}
	if base <= 0 {
		return nil, server.FieldError("attributes.retry_policy.base", "must be at least 1ms")
	}
	maxMs, err := DurationMs("attributes.retry_policy.max", p.GetMax(), store.MaxRetryDelayMs, maxRetryDelay)
	if err != nil {
		return nil, err
	}
	factor := p.GetFactor()
	if factor == 0 {
		factor = 2
	}
	if math.IsNaN(factor) || factor < 1 || factor > 10 {
		return nil, server.FieldError("attributes.retry_policy.factor", "must be between 1 and 10")
	}
	jitter := p.GetJitter()
	if math.IsNaN(jitter) || jitter < 0 || jitter > 1 {
		return nil, server.FieldError("attributes.retry_policy.jitter", "must be between 0 and 1")
	}
	return &storepb.RetryPolicy{BaseMs: base, FactorMilli: int64(math.Round(factor * 1000)), MaxMs: maxMs,
		JitterMilli: int64(math.Round(jitter * 1000))}, nil
}

// limitsToAPI fills the retry policy, time to live and max length of out.
func limitsToAPI(a *storepb.QueueAttributes, out *qv1.QueueAttributes) {
	if p := a.GetRetryPolicy(); p != nil {
		out.RetryPolicy = &qv1.RetryPolicy{Base: msDuration(p.BaseMs), Factor: float64(p.FactorMilli) / 1000,
			Max: msDuration(p.MaxMs), Jitter: float64(p.JitterMilli) / 1000}
	}
	if a.GetMessageTtlMs() > 0 {
		out.MessageTtl = msDuration(a.GetMessageTtlMs())
	}
	out.MaxLength, out.MaxBytes = a.GetMaxLength(), a.GetMaxBytes()
	switch {
	case a.GetOverflow() == storepb.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST:
		out.Overflow = qv1.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST
	case a.GetMaxLength() > 0 || a.GetMaxBytes() > 0:
		out.Overflow = qv1.OverflowPolicy_OVERFLOW_POLICY_REJECT
	}
}

// nackEntry validates one nack; prefix names the request field ("" or
// "entries[3].").
func nackEntry(prefix string, handle []byte, kind qv1.NackKind, delay *durationpb.Duration, at *timestamppb.Timestamp) (*storepb.NackEntry, error) {
	if _, ok := qv1.NackKind_name[int32(kind)]; !ok {
		return nil, server.FieldError(prefix+"kind", "unknown kind")
	}
	e := &storepb.NackEntry{ReceiptHandle: handle, Kind: storepb.NackKind(kind), DelayMs: -1}
	switch {
	case delay != nil && at != nil:
		return nil, server.FieldError(prefix+"redeliver_delay", "give at most one of redeliver_delay and redeliver_at")
	case delay != nil:
		ms, err := DurationMs(prefix+"redeliver_delay", delay, 0, maxRetryDelay)
		if err != nil {
			return nil, err
		}
		e.DelayMs = ms
	case at != nil:
		if err := at.CheckValid(); err != nil {
			return nil, server.FieldError(prefix+"redeliver_at", "not a valid timestamp")
		}
		if e.DeliverAtMs = at.AsTime().UnixMilli(); e.DeliverAtMs <= 0 { // the epoch or before: at once
			e.DeliverAtMs, e.DelayMs = 0, 0
		}
	}
	return e, nil
}

// NackMessage implements QueueService.
func (s *Server) NackMessage(ctx context.Context, req *qv1.NackMessageRequest) (*qv1.NackMessageResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	if err := checkQueue("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	h, err := DecodeHandle("receipt_handle", req.GetReceiptHandle())
	if err != nil {
		return nil, err
	}
	e, err := nackEntry("", h, req.GetKind(), req.GetRedeliverDelay(), req.GetRedeliverAt())
	if err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_Nack{Nack: &storepb.Nack{
		Tenant: tenant, Queue: req.GetQueue(), Entries: []*storepb.NackEntry{e},
	}}})
	if err != nil {
		return nil, err
	}
	if len(res.Entries) != 1 || len(res.VisibleAt) != 1 {
		return nil, fmt.Errorf("nack: %d outcomes for 1 handle", len(res.Entries))
	}
	if res.Entries[0] != nil {
		return nil, res.Entries[0]
	}
	return &qv1.NackMessageResponse{VisibleAt: msTime(res.VisibleAt[0])}, nil
}

// NackMessageBatch implements QueueService.
func (s *Server) NackMessageBatch(ctx context.Context, req *qv1.NackMessageBatchRequest) (*qv1.NackMessageBatchResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	if err := checkQueue("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	entries := req.GetEntries()
	if err := ValidateBatch(len(entries), func(i int) string { return entries[i].GetId() }); err != nil {
		return nil, err
	}
	resp := &qv1.NackMessageBatchResponse{}
	cmd := &storepb.Nack{Tenant: tenant, Queue: req.GetQueue()}
	var ids []string
	for i, e := range entries {
		ne, err := InEntry(i, func(prefix string) (*storepb.NackEntry, error) {
			h, err := DecodeHandle(prefix+"receipt_handle", e.GetReceiptHandle())
			if err != nil {
				return nil, err
			}
			return nackEntry(prefix, h, e.GetKind(), e.GetRedeliverDelay(), e.GetRedeliverAt())
		})
		if err != nil {
			resp.Failed = append(resp.Failed, FailedEntry(e.GetId(), err))
			continue
		}
		ids = append(ids, e.GetId())
		cmd.Entries = append(cmd.Entries, ne)
	}
	if len(ids) == 0 {
		return resp, nil
	}
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_Nack{Nack: cmd}})
	if err != nil {
		return nil, err
	}
	if resp.Successful, resp.Failed, err = handleOutcomes("nack", ids, res.Entries, resp.Failed); err != nil {
		return nil, err
	}
	return resp, nil
}

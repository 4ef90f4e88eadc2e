package quorumq

import (
	"context"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// NackKind says how a delivery ended.
type NackKind int

const (
	// NackFailed: the handler failed. Counts toward the dead-letter
	// policy's MaxReceiveCount; the queue's retry policy decides when the
	// message comes back (at once without one).
	NackFailed NackKind = iota
	// NackReleased: the message is given back unprocessed (shutting down,
	// overloaded). Does not count toward MaxReceiveCount; visible again at
	// once.
	NackReleased
)

func (k NackKind) proto() qv1.NackKind {
	if k == NackReleased {
		return qv1.NackKind_NACK_KIND_RELEASED
	}
	return qv1.NackKind_NACK_KIND_FAILED
}

// Nack is one entry of NackBatch.
type Nack struct {
	ReceiptHandle string
	Kind          NackKind
	// RedeliverAfter, when positive, or RedeliverAt, when set, says when
	// the message is visible again instead of the kind's rule (e.g. from
	// a Retry-After); at most 12h ahead.
	RedeliverAfter time.Duration
	RedeliverAt    time.Time
}

func (n Nack) times() (*durationpb.Duration, *timestamppb.Timestamp) {
	switch {
	case !n.RedeliverAt.IsZero():
		return nil, timestamppb.New(n.RedeliverAt)
	case n.RedeliverAfter > 0:
		return durationpb.New(n.RedeliverAfter), nil
	}
	return nil, nil
}

// Nack ends a received message's lease early, as failed or released (see
// NackKind), and returns when the message is visible again. A nack
// repeated with the same handle changes nothing; a handle superseded by a
// later receive fails with ErrStaleReceipt.
func (q *Queue) Nack(ctx context.Context, n Nack) (time.Time, error) {
	delay, at := n.times()
	resp, err := call(q.routed(ctx), q.c, "nack", 0, func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.NackMessageResponse, error) {
		return api.NackMessage(ctx, &qv1.NackMessageRequest{Queue: q.name, ReceiptHandle: n.ReceiptHandle, Kind: n.Kind.proto(),
			RedeliverDelay: delay, RedeliverAt: at})
	})
	if err != nil {
		return time.Time{}, err
	}
	return resp.GetVisibleAt().AsTime(), nil
}

// NackBatch nacks received messages, 100 per call. When some fail the
// error is a *BatchError aligned with nacks.
func (q *Queue) NackBatch(ctx context.Context, nacks []Nack) error {
	errs := q.c.batch(q.routed(ctx), "nack batch", len(nacks), chunk(len(nacks)), func(ctx context.Context, api qv1.QueueServiceClient, idx []int) ([]*qv1.BatchResultError, error) {
		req := &qv1.NackMessageBatchRequest{Queue: q.name, Entries: make([]*qv1.NackMessageBatchEntry, len(idx))}
		for j, i := range idx {
			delay, at := nacks[i].times()
			req.Entries[j] = &qv1.NackMessageBatchEntry{Id: strconv.Itoa(i), ReceiptHandle: nacks[i].ReceiptHandle,
				Kind: nacks[i].Kind.proto(), RedeliverDelay: delay, RedeliverAt: at}
		}
		resp, err := api.NackMessageBatch(ctx, req)
		return resp.GetFailed(), err
	})
	return newBatchError(errs)
}

// Nack ends the message's lease early (see Queue.Nack); redeliverAfter,
// when positive, sets when it comes back.
func (m *Message) Nack(ctx context.Context, kind NackKind, redeliverAfter time.Duration) (time.Time, error) {
	return m.queue.Nack(ctx, Nack{ReceiptHandle: m.ReceiptHandle, Kind: kind, RedeliverAfter: redeliverAfter})
}

// QueueRetryPolicy is a queue's server-side backoff of failed deliveries (a
// nack as failed, or a lease that ran out): the message is visible again
// min(Base × Factor^(n−1), Max) after it failed for the n-th time, less up
// to Jitter of that.
type QueueRetryPolicy struct {
	Base   time.Duration // 1ms – 12h
	Factor float64       // 1 – 10 (0: 2)
	Max    time.Duration // Base – 12h (0: 12h)
	Jitter float64       // 0 – 1
}

// Overflow is what a send into a full queue (MaxLength, MaxBytes) does.
type Overflow string

const (
	// OverflowReject fails the send with ErrQueueFull (the default).
	OverflowReject Overflow = "reject"
	// OverflowDropOldest removes the oldest messages to make room
	// (dead-lettered with reason OVERFLOW when the queue has a DLQ).
	OverflowDropOldest Overflow = "drop_oldest"
)

// limitsProto sets the retry policy, time to live and max length of p.
func (a QueueAttributes) limitsProto(p *qv1.QueueAttributes) {
	if r := a.RetryPolicy; r != nil {
		p.RetryPolicy = &qv1.RetryPolicy{Base: dur(r.Base), Factor: r.Factor, Max: dur(r.Max), Jitter: r.Jitter}
	}
	p.MessageTtl = dur(a.MessageTTL)
	p.MaxLength, p.MaxBytes = a.MaxLength, a.MaxBytes
	switch a.Overflow {
	case OverflowReject:
		p.Overflow = qv1.OverflowPolicy_OVERFLOW_POLICY_REJECT
	case OverflowDropOldest:
		p.Overflow = qv1.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST
	}
}

// limitsFrom reads the retry policy, time to live and max length of a.
func (a *QueueAttributes) limitsFrom(p *qv1.QueueAttributes) {
	if r := p.GetRetryPolicy(); r != nil {
		a.RetryPolicy = &QueueRetryPolicy{Base: r.GetBase().AsDuration(), Factor: r.GetFactor(), Max: r.GetMax().AsDuration(), Jitter: r.GetJitter()}
	}
	if p.GetMessageTtl() != nil {
		a.MessageTTL = p.GetMessageTtl().AsDuration()
	}
	a.MaxLength, a.MaxBytes = p.GetMaxLength(), p.GetMaxBytes()
	switch p.GetOverflow() {
	case qv1.OverflowPolicy_OVERFLOW_POLICY_REJECT:
		a.Overflow = OverflowReject
	case qv1.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST:
		a.Overflow = OverflowDropOldest
	}
}

// deadLetterReason is the API's reason without its prefix ("" when unset).
func deadLetterReason(r qv1.DeadLetterReason) string {
	if r == qv1.DeadLetterReason_DEAD_LETTER_REASON_UNSPECIFIED {
		return ""
	}
	return r.String()[len("DEAD_LETTER_REASON_"):]
}

package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	quorumq "github.com/quorumq/quorumq/sdk"
)

// limitFlags are the retry policy, time to live and max length flags of
// `queue create` and `queue update`.
type limitFlags struct {
	base, max, ttl      time.Duration
	factor, jitter      float64
	maxLength, maxBytes int64
	overflow            string
}

// limitPaths maps each flag to its update mask path.
var limitPaths = []struct{ flag, path string }{
	{"retry-base", "retry_policy"}, {"retry-factor", "retry_policy"}, {"retry-max", "retry_policy"}, {"retry-jitter", "retry_policy"},
	{"message-ttl", "message_ttl"}, {"max-length", "max_length"}, {"max-bytes", "max_bytes"}, {"overflow", "overflow"},
}

func (l *limitFlags) register(f *pflag.FlagSet) {
	f.DurationVar(&l.base, "retry-base", 0, `retry backoff of failed deliveries: first delay (0: none; on update, 0 removes the policy)`)
	f.Float64Var(&l.factor, "retry-factor", 2, "retry backoff: growth per failure, 1 to 10")
	f.DurationVar(&l.max, "retry-max", 0, "retry backoff: largest delay (default 12h)")
	f.Float64Var(&l.jitter, "retry-jitter", 0, "retry backoff: fraction taken off at random, 0 to 1")
	f.DurationVar(&l.ttl, "message-ttl", 0, "time to live of every message (0: none; less than the retention)")
	f.Int64Var(&l.maxLength, "max-length", 0, "most messages the queue holds (0: no bound)")
	f.Int64Var(&l.maxBytes, "max-bytes", 0, "most bytes the queue holds (0: no bound)")
	f.StringVar(&l.overflow, "overflow", "", "a send into a full queue: reject (QUEUE_FULL) or drop_oldest")
}

func (l *limitFlags) check(f *pflag.FlagSet) error {
	for _, n := range []string{"retry-factor", "retry-max", "retry-jitter"} {
		if f.Changed(n) && !f.Changed("retry-base") {
			return fmt.Errorf("--%s needs --retry-base (the policy is set as a whole)", n)
		}
	}
	switch quorumq.Overflow(l.overflow) {
	case "", quorumq.OverflowReject, quorumq.OverflowDropOldest:
		return nil
	}
	return fmt.Errorf("--overflow %q: want reject or drop_oldest", l.overflow)
}

// apply sets the attributes of a create.
func (l *limitFlags) apply(f *pflag.FlagSet, a *quorumq.QueueAttributes) error {
	if err := l.check(f); err != nil {
		return err
	}
	if l.base > 0 {
		a.RetryPolicy = &quorumq.QueueRetryPolicy{Base: l.base, Factor: l.factor, Max: l.max, Jitter: l.jitter}
	}
	a.MessageTTL, a.MaxLength, a.MaxBytes, a.Overflow = l.ttl, l.maxLength, l.maxBytes, quorumq.Overflow(l.overflow)
	return nil
}

// proto sets the attributes of an update (the mask says which count).
func (l *limitFlags) proto(f *pflag.FlagSet, a *qv1.QueueAttributes) error {
	var qa quorumq.QueueAttributes
	if err := l.apply(f, &qa); err != nil {
		return err
	}
	a.RetryPolicy, a.MessageTtl = nil, durProto(l.ttl)
	if p := qa.RetryPolicy; p != nil {
		a.RetryPolicy = &qv1.RetryPolicy{Base: durProto(p.Base), Factor: p.Factor, Max: durProto(p.Max), Jitter: p.Jitter}
	}
	a.MaxLength, a.MaxBytes = l.maxLength, l.maxBytes
	switch qa.Overflow {
	case quorumq.OverflowReject:
		a.Overflow = qv1.OverflowPolicy_OVERFLOW_POLICY_REJECT
	case quorumq.OverflowDropOldest:
		a.Overflow = qv1.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST
	}
	return nil
}

// addLimits adds the retry policy, time to live and max length lines of
// a queue that has them.
func (b *kv) addLimits(a quorumq.QueueAttributes) {
	if p := a.RetryPolicy; p != nil {
		b.add("retry backoff", fmt.Sprintf("%s × %g per failure, at most %s, jitter %g", fmtDur(p.Base), p.Factor, fmtDur(p.Max), p.Jitter))
	}
	if a.MessageTTL > 0 {
		b.add("message ttl", fmtDur(a.MessageTTL))
	}
	if a.MaxLength > 0 || a.MaxBytes > 0 {
		b.add("max length", fmt.Sprintf("%d messages, %d bytes (0: no bound), overflow %s", a.MaxLength, a.MaxBytes, a.Overflow))
	}
}

// addCounters adds the failed / released counts and dead-letter reason of
// a received message that has them.
func (b *kv) addCounters(m *quorumq.Message) {
	if m.FailedCount > 0 || m.ReleasedCount > 0 {
		b.add("failed / released", strconv.Itoa(m.FailedCount)+" / "+strconv.Itoa(m.ReleasedCount))
	}
	if m.DeadLetterReason != "" {
		b.add("dead-letter reason", m.DeadLetterReason)
	}
}

// newNackCmd is `quorumq nack QUEUE RECEIPT_HANDLE... [--released]
// [--redeliver-after D]`.
func newNackCmd() *cobra.Command {
	var (
		c        clientCmd
		released bool
		after    time.Duration
	)
	cmd := &cobra.Command{
		Use: "nack QUEUE RECEIPT_HANDLE...", Short: "Give received messages back: failed (default) or --released", Args: cobra.MinimumNArgs(2),
		Long: clientLong(`End leases early. A failed delivery (the default) counts toward the
dead-letter policy's max receive count and comes back after the queue's
retry backoff; --released gives a message back unprocessed: it does not
count and comes back at once. --redeliver-after sets the time instead.`),
		Example: `  quorumq nack jobs "$HANDLE"
  quorumq nack jobs "$HANDLE" --released
  quorumq nack jobs "$HANDLE" --redeliver-after 30s`,
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if after < 0 {
				return fmt.Errorf("--redeliver-after must not be negative")
			}
			kind := quorumq.NackFailed
			if released {
				kind = quorumq.NackReleased
			}
			return c.with(cmd, 0, func(ctx context.Context, client *quorumq.Client) error {
				q, handles := client.Queue(args[0]), args[1:]
				if len(handles) == 1 {
					at, err := q.Nack(ctx, quorumq.Nack{ReceiptHandle: handles[0], Kind: kind, RedeliverAfter: after})
					if err != nil {
						return err
					}
					return c.done(cmd, &qv1.NackMessageResponse{VisibleAt: timestamppb.New(at)}, "visible again at "+fmtTime(at))
				}
				nacks := make([]quorumq.Nack, len(handles))
				for i, h := range handles {
					nacks[i] = quorumq.Nack{ReceiptHandle: h, Kind: kind, RedeliverAfter: after}
				}
				if err := q.NackBatch(ctx, nacks); err != nil {
					return err
				}
				return c.done(cmd, &qv1.NackMessageBatchResponse{}, fmt.Sprintf("nacked %d messages", len(handles)))
			})
		}),
	}
	c.register(cmd)
	cmd.Flags().BoolVar(&released, "released", false, "the message was not processed: does not count toward the delivery limit")
	cmd.Flags().DurationVar(&after, "redeliver-after", 0, "visible again after this long (e.g. a Retry-After), instead of the backoff")
	return cmd
}

// limitsProto sets the retry policy, time to live and max length of out
// (the SDK's view back to the API's, for -o json).
func limitsProto(a quorumq.QueueAttributes, out *qv1.QueueAttributes) {
	if p := a.RetryPolicy; p != nil {
		out.RetryPolicy = &qv1.RetryPolicy{Base: durProto(p.Base), Factor: p.Factor, Max: durProto(p.Max), Jitter: p.Jitter}
	}
	out.MessageTtl, out.MaxLength, out.MaxBytes = durProto(a.MessageTTL), a.MaxLength, a.MaxBytes
	out.Overflow = qv1.OverflowPolicy(qv1.OverflowPolicy_value["OVERFLOW_POLICY_"+strings.ToUpper(string(a.Overflow))])
}

// limitsOf reads the retry policy, time to live and max length of an API
// queue into a.
func limitsOf(p *qv1.QueueAttributes, a quorumq.QueueAttributes) quorumq.QueueAttributes {
	if r := p.GetRetryPolicy(); r != nil {
		a.RetryPolicy = &quorumq.QueueRetryPolicy{Base: r.GetBase().AsDuration(), Factor: r.GetFactor(), Max: r.GetMax().AsDuration(), Jitter: r.GetJitter()}
	}
	a.MessageTTL, a.MaxLength, a.MaxBytes = p.GetMessageTtl().AsDuration(), p.GetMaxLength(), p.GetMaxBytes()
	switch p.GetOverflow() {
	case qv1.OverflowPolicy_OVERFLOW_POLICY_REJECT:
		a.Overflow = quorumq.OverflowReject
	case qv1.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST:
		a.Overflow = quorumq.OverflowDropOldest
	}
	return a
}

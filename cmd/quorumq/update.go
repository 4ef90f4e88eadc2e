package main

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	quorumq "github.com/quorumq/quorumq/sdk"
)

// newQueueUpdateCmd is `quorumq queue update NAME --flag...`: PATCH
// semantics, only the attributes given as flags go into the update mask
// (the others keep their values; an empty mask would reset them all).
func newQueueUpdateCmd() *cobra.Command {
	var (
		c             clientCmd
		vis, ret, del time.Duration
		wait          time.Duration
		maxSize       int64
		partitions    int
		dlq           string
		maxReceive    int
		contentDedup  bool
		priorityMode  string
		weight        int
	)
	// flag name → update mask path (server/shardserver/queues.go UpdateQueue).
	paths := []struct{ flag, path string }{
		{"visibility-timeout", "visibility_timeout"}, {"retention", "message_retention"},
		{"delay", "delivery_delay"}, {"receive-wait", "receive_wait"},
		{"max-message-size", "max_message_size"}, {"partitions", "partitions"},
		{"dead-letter-queue", "dead_letter"}, {"max-receive-count", "dead_letter"},
		{"content-based-deduplication", "content_based_deduplication"},
		{"priority-mode", "priority_mode"}, {"priority-weight", "priority_weight"},
	}
	var limits limitFlags
	paths = append(paths, limitPaths...)
	cmd := &cobra.Command{
		Use:   "update NAME",
		Short: "Change some attributes of a queue (only the flags given)",
		Long: clientLong(`Change the attributes given as flags and print the queue; the others keep
their values. --dead-letter-queue "" removes the dead-letter policy; the
policy is replaced as a whole, so --max-receive-count needs
--dead-letter-queue. Partitions may grow (not on a FIFO queue), never shrink.`),
		Example: `  quorumq queue update jobs --visibility-timeout 2m
  quorumq queue update jobs --dead-letter-queue jobs-dlq --max-receive-count 3`,
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			req := &qv1.UpdateQueueRequest{Name: args[0], Attributes: &qv1.QueueAttributes{}, UpdateMask: &fieldmaskpb.FieldMask{}}
			for _, p := range paths {
				if f.Changed(p.flag) && !slices.Contains(req.UpdateMask.Paths, p.path) {
					req.UpdateMask.Paths = append(req.UpdateMask.Paths, p.path)
				}
			}
			if len(req.UpdateMask.Paths) == 0 {
				return errors.New("nothing to update: give at least one attribute flag")
			}
			if f.Changed("max-receive-count") && !f.Changed("dead-letter-queue") {
				return errors.New("--max-receive-count needs --dead-letter-queue (the policy is replaced as a whole)")
			}
			a := req.Attributes
			a.VisibilityTimeout, a.MessageRetention = durationpb.New(vis), durationpb.New(ret)
			a.DeliveryDelay, a.ReceiveWait = durationpb.New(del), durationpb.New(wait)
			a.MaxMessageSize, a.Partitions, a.ContentBasedDeduplication = maxSize, int32(partitions), contentDedup
			a.PriorityMode, a.PriorityWeight = priorityMode, int32(weight)
			if dlq != "" {
				a.DeadLetter = &qv1.DeadLetterPolicy{Queue: dlq, MaxReceiveCount: int32(maxReceive)}
			}
			if err := limits.proto(f, a); err != nil {
				return err
			}
			return c.rpc(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := qv1.NewQueueServiceClient(conn).UpdateQueue(ctx, req)
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), resp.GetQueue())
				}
				return printQueue(cmd.OutOrStdout(), queueFromProto(resp.GetQueue()), false)
			})
		}),
	}
	c.register(cmd)
	f := cmd.Flags()
	f.DurationVar(&vis, "visibility-timeout", 0, "lease of received messages")
	f.DurationVar(&ret, "retention", 0, "message retention")
	f.DurationVar(&del, "delay", 0, "delivery delay of every message")
	f.DurationVar(&wait, "receive-wait", 0, "default long-poll wait")
	f.Int64Var(&maxSize, "max-message-size", 0, "bytes")
	f.IntVar(&partitions, "partitions", 0, "partitions, 1 to 64 (may only grow)")
	f.StringVar(&dlq, "dead-letter-queue", "", `dead-letter queue name ("": remove the policy)`)
	f.IntVar(&maxReceive, "max-receive-count", 5, "receives before dead-lettering (with --dead-letter-queue)")
	f.BoolVar(&contentDedup, "content-based-deduplication", false, "FIFO: deduplicate by body hash")
	limits.register(f)
	f.StringVar(&priorityMode, "priority-mode", "", `"strict" or "weighted"`)
	f.IntVar(&weight, "priority-weight", 0, "weighted mode's ratio (0: the default, 10)")
	return cmd
}

// queueFromProto is the SDK's view of an API queue, for the table output.
func queueFromProto(q *qv1.Queue) *quorumq.QueueInfo {
	a := q.GetAttributes()
	info := &quorumq.QueueInfo{
		Name: q.GetName(), Tags: q.GetTags(), PartitionShards: q.GetPartitionShards(),
		Attributes: quorumq.QueueAttributes{
			VisibilityTimeout: a.GetVisibilityTimeout().AsDuration(), MessageRetention: a.GetMessageRetention().AsDuration(),
			DeliveryDelay: a.GetDeliveryDelay().AsDuration(), ReceiveWait: a.GetReceiveWait().AsDuration(),
			MaxMessageSize: a.GetMaxMessageSize(), DeadLetterQueue: a.GetDeadLetter().GetQueue(),
			MaxReceiveCount: int(a.GetDeadLetter().GetMaxReceiveCount()), FIFO: a.GetFifo(),
			ContentBasedDeduplication: a.GetContentBasedDeduplication(), Partitions: int(a.GetPartitions()),
			PriorityMode: a.GetPriorityMode(), PriorityWeight: int(a.GetPriorityWeight()), Fairness: a.GetFairness(),
		},
	}
	info.Attributes = limitsOf(a, info.Attributes)
	if q.GetCreatedAt() != nil {
		info.CreatedAt = q.GetCreatedAt().AsTime()
	}
	return info
}

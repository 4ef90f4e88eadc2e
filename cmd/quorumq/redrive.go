package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// newQueueRedriveCmd is `quorumq queue redrive DLQ [--target Q] [--max N]
// [--all]`. One call moves up to --max messages of the dead-letter queue to
// the outbox (each to its source queue, or all to --target); the server's
// relay then delivers them exactly once. With --all the call is repeated
// (each with its own deadline) until a call moves nothing, printing
// progress: a redrive is resumable, so an interrupted --all is simply run
// again.
func newQueueRedriveCmd() *cobra.Command {
	var (
		c      clientFlags
		target string
		max    int32
		all    bool
	)
	cmd := &cobra.Command{
		Use:   "redrive DLQ",
		Short: "Move messages of a dead-letter queue back to their source queues (or to --target)",
		Long: "Move messages of a dead-letter queue back to each message's source queue, with the\n" +
			"receive count reset, or every message to --target. Messages in flight in the DLQ\n" +
			"stay (and on a FIFO DLQ hold back the rest of their group). Delivery to the\n" +
			"target is asynchronous and exactly once.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if max < 0 {
				return fmt.Errorf("--max must not be negative (0: the server's default)")
			}
			req := &qv1.RedriveMessagesRequest{DeadLetterQueue: args[0], MaxMessages: max, TargetQueue: target}
			if !all {
				return c.call(cmd, func(ctx context.Context, q qv1.QueueServiceClient) (proto.Message, error) {
					return q.RedriveMessages(ctx, req)
				})
			}
			out := cmd.OutOrStdout()
			var total int64
			for round := 1; ; round++ {
				if err := cmd.Context().Err(); err != nil {
					return fmt.Errorf("interrupted after moving %d messages: %w", total, err)
				}
				var moved int64
				err := c.rpc(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
					r, err := qv1.NewQueueServiceClient(conn).RedriveMessages(ctx, req)
					moved = r.GetMoved()
					return err
				})
				if err != nil {
					if total > 0 {
						return fmt.Errorf("after moving %d messages: %w", total, err)
					}
					return err
				}
				if moved == 0 {
					fmt.Fprintf(out, "done: moved %d messages from %s in %d calls\n", total, args[0], round)
					return nil
				}
				total += moved
				fmt.Fprintf(out, "call %d: moved %d (total %d)\n", round, moved, total)
			}
		},
	}
	c.register(cmd)
	f := cmd.Flags()
	f.StringVar(&target, "target", "", "move every message to this queue instead of its source")
	f.Int32Var(&max, "max", 0, "messages per call, 1 to 10000 (default 1000)")
	f.BoolVar(&all, "all", false, "repeat until a call moves nothing, printing progress")
	return cmd
}

package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	quorumq "github.com/quorumq/quorumq/sdk"
)

// newMessageCmd is `quorumq message ...`: calls on one message by its id.
// (Shared parent: other message subcommands are added here.)
func newMessageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "message", Short: "Look at or change one message by its id",
		Long: clientLong("Look at (get) or change (cancel, reschedule) one message by the id the send returned.")}
	cmd.AddCommand(newMessageGetCmd(), newMessageCancelCmd(), newMessageRescheduleCmd())
	return cmd
}

// newMessageCancelCmd is `quorumq message cancel QUEUE ID`.
func newMessageCancelCmd() *cobra.Command {
	var c clientCmd
	cmd := &cobra.Command{
		Use: "cancel QUEUE MESSAGE_ID", Short: "Cancel a message not yet received", Args: cobra.ExactArgs(2),
		Long: clientLong(`Delete a message that has not been received yet (delayed, or visible but
never received), by its id. A message already received is refused
(MESSAGE_ALREADY_RECEIVED); an unknown or already cancelled id is
MESSAGE_NOT_FOUND (exit code 2).`),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.with(cmd, 0, func(ctx context.Context, client *quorumq.Client) error {
				if err := client.Queue(args[0]).Cancel(ctx, args[1]); err != nil {
					return err
				}
				return c.done(cmd, &qv1.CancelMessageResponse{}, "cancelled message "+args[1])
			})
		}),
	}
	c.register(cmd)
	return cmd
}

// newMessageRescheduleCmd is `quorumq message reschedule QUEUE ID
// --delay D | --at T`.
func newMessageRescheduleCmd() *cobra.Command {
	var (
		c     clientCmd
		delay time.Duration
		at    string
	)
	cmd := &cobra.Command{
		Use: "reschedule QUEUE MESSAGE_ID (--delay D | --at TIME)", Short: "Change when a message not yet received becomes visible",
		Args: cobra.ExactArgs(2),
		Long: clientLong(`Make a message that has not been received yet visible after --delay from
now, or at --at (RFC 3339, e.g. 2030-01-02T15:04:05Z; a past time: at once),
at most the queue's retention after the message was sent. Not on FIFO
queues. Prints the new visible time (-o json: {"visibleAt": ...}).`),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			hasDelay, hasAt := cmd.Flags().Changed("delay"), at != ""
			if hasDelay == hasAt {
				return fmt.Errorf("give one of --delay and --at")
			}
			when := time.Now().Add(delay)
			if hasDelay && delay < 0 {
				return fmt.Errorf("--delay must not be negative")
			}
			if hasAt {
				t, err := time.Parse(time.RFC3339Nano, at)
				if err != nil {
					return fmt.Errorf("--at: want an RFC 3339 time: %w", err)
				}
				when = t
			}
			return c.with(cmd, 0, func(ctx context.Context, client *quorumq.Client) error {
				visible, err := client.Queue(args[0]).Reschedule(ctx, args[1], when)
				if err != nil {
					return err
				}
				return c.done(cmd, &qv1.RescheduleMessageResponse{VisibleAt: timestamppb.New(visible)},
					fmt.Sprintf("message %s visible at %s", args[1], visible.UTC().Format(time.RFC3339Nano)))
			})
		}),
	}
	c.register(cmd)
	f := cmd.Flags()
	f.DurationVar(&delay, "delay", 0, "visible this long from now (by this machine's clock)")
	f.StringVar(&at, "at", "", "visible at this RFC 3339 time")
	return cmd
}

package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	quorumq "github.com/quorumq/quorumq/sdk"
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
		c      clientCmd
		target string
		max    int
		all    bool
	)
	cmd := &cobra.Command{
		Use:   "redrive DLQ",
		Short: "Move messages of a dead-letter queue back to their source queues (or to --target)",
		Long: clientLong(`Move messages of a dead-letter queue back to each message's source queue, with the
receive count reset, or every message to --target. Messages in flight in the DLQ
stay (and on a FIFO DLQ hold back the rest of their group). Delivery to the
target is asynchronous and exactly once.

Prints how many messages moved (-o json: {"moved": N}). With --all the call
is repeated until one moves nothing, with a progress line per call (on
standard error with -o json); an interrupted --all can simply be run again.`),
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if max < 0 {
				return fmt.Errorf("--max must not be negative (0: the server's default)")
			}
			opts := quorumq.RedriveOptions{MaxMessages: max, TargetQueue: target}
			redrive := func() (moved int64, err error) {
				err = c.with(cmd, 0, func(ctx context.Context, client *quorumq.Client) error {
					moved, err = client.Redrive(ctx, args[0], opts)
					return err
				})
				return moved, err
			}
			out := cmd.OutOrStdout()
			if !all {
				moved, err := redrive()
				if err != nil {
					return err
				}
				return printMoved(out, c.output, moved, fmt.Sprintf("moved %d messages from %s", moved, args[0]))
			}
			progress := out
			if c.structured() {
				progress = cmd.ErrOrStderr()
			}
			var total int64
			for round := 1; ; round++ {
				if err := cmd.Context().Err(); err != nil {
					return fmt.Errorf("interrupted after moving %d messages: %w", total, err)
				}
				moved, err := redrive()
				if err != nil {
					if total > 0 {
						return fmt.Errorf("after moving %d messages: %w", total, err)
					}
					return err
				}
				if moved == 0 {
					return printMoved(out, c.output, total, fmt.Sprintf("done: moved %d messages from %s in %d calls", total, args[0], round))
				}
				total += moved
				fmt.Fprintf(progress, "call %d: moved %d (total %d)\n", round, moved, total)
			}
		}),
	}
	c.register(cmd)
	f := cmd.Flags()
	f.StringVar(&target, "target", "", "move every message to this queue instead of its source")
	f.IntVar(&max, "max", 0, "messages per call, 1 to 10000 (default 1000)")
	f.BoolVar(&all, "all", false, "repeat until a call moves nothing, printing progress")
	return cmd
}

// printMoved prints a redrive's outcome: line, or {"moved": N}.
func printMoved(w io.Writer, format outputFormat, moved int64, line string) error {
	if format.structured() {
		return writeMessage(w, format, &qv1.RedriveMessagesResponse{Moved: moved})
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

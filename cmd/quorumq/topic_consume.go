package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	quorumq "github.com/quorumq/quorumq/sdk"
)

// errCountReached refuses messages past --count: they stay uncommitted
// for the group's next reader.
var errCountReached = errors.New("--count reached")

// quorumq topic consume: a consumer group member (the SDK's GroupConsumer).
func newTopicConsumeCmd() *cobra.Command {
	var c clientCmd
	var (
		group   string
		count   int
		idle    time.Duration
		session time.Duration
		max     int
	)
	cmd := &cobra.Command{
		Use: "consume TOPIC --group GROUP", Short: "Consume as a member of a consumer group (partitions assigned, committed)", Args: cobra.ExactArgs(1),
		Long: clientLong(`Join the consumer group as a member: the group's coordinator assigns
this member partitions (sharing them with the group's other members and
rebalancing when one joins, leaves or stops heartbeating). Print one line
per message, "partition offset id body", in offset order per partition,
and commit after printing. Stop on Ctrl-C, after --count messages or when
nothing came for --idle; then commit, leave the group and exit.`),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			client, err := c.dial(ctx)
			if err != nil {
				return err
			}
			defer client.Close()
			out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
			var mu sync.Mutex
			handled := 0
			var outErr error
			kick := make(chan struct{}, 1)
			o := quorumq.GroupConsumerOptions{SessionTimeout: session, MaxMessages: max,
				OnAssigned: func(_ context.Context, ps []int32) { fmt.Fprintf(errOut, "assigned partitions %v\n", ps) },
				OnRevoked:  func(_ context.Context, ps []int32) { fmt.Fprintf(errOut, "revoked partitions %v\n", ps) },
				OnError: func(err error) {
					if !errors.Is(err, errCountReached) {
						fmt.Fprintln(errOut, "error:", err)
					}
				}}
			runCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			if idle > 0 {
				go func() { // owned by runCtx: ends with the command
					t := time.NewTimer(idle)
					defer t.Stop()
					for {
						select {
						case <-runCtx.Done():
							return
						case <-kick:
							t.Reset(idle)
						case <-t.C:
							cancel()
							return
						}
					}
				}()
			}
			err = client.Topic(args[0]).NewGroupConsumer(group, o).Run(runCtx, func(_ context.Context, m *quorumq.GroupMessage) error {
				mu.Lock()
				defer mu.Unlock()
				if count > 0 && handled >= count {
					return errCountReached
				}
				if _, err := fmt.Fprintf(out, "%d\t%d\t%s\t%s\n", m.Partition, m.Offset, m.MessageID, m.Body); err != nil {
					outErr = err
					cancel()
					return err
				}
				handled++
				if count > 0 && handled >= count {
					cancel()
				}
				select {
				case kick <- struct{}{}:
				default:
				}
				return nil
			})
			if err == nil {
				err = outErr
			}
			return err
		}),
	}
	c.register(cmd)
	f := cmd.Flags()
	f.StringVar(&group, "group", "", "consumer group (required; create it with `topic group create`)")
	f.IntVar(&count, "count", 0, "stop after this many messages (0: no limit)")
	f.DurationVar(&idle, "idle", 0, "stop when no message came for this long (0: never)")
	f.DurationVar(&session, "session-timeout", 10*time.Second, "without a heartbeat for this long the member is dropped (3s to 5m)")
	f.IntVar(&max, "max", 100, "read at most this many messages of a partition at once (1 to 1000)")
	_ = cmd.MarkFlagRequired("group")
	return cmd
}

// Command worker consumes a quorumq queue with the SDK's Consumer: several
// handlers at once, leases kept alive while they run, deletes on success.
// SIGINT or SIGTERM shuts it down gracefully: running handlers finish and
// messages received but not started go back to the queue.
//
//	go run ./sdk/examples/worker -endpoints 127.0.0.1:9090 -queue jobs -concurrency 8
//
// A bearer token, when the cluster requires one, comes from $QUORUMQ_TOKEN.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	quorumq "github.com/quorumq/quorumq/sdk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	endpoints := fs.String("endpoints", "127.0.0.1:9090", "comma-separated gRPC addresses of any nodes")
	queue := fs.String("queue", "jobs", "queue name")
	concurrency := fs.Int("concurrency", 8, "handlers running at once")
	work := fs.Duration("work", 10*time.Millisecond, "time one job takes")
	limit := fs.Int64("max", 0, "stop after this many jobs (0: run until signalled)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var opts []quorumq.Option
	if tok := os.Getenv("QUORUMQ_TOKEN"); tok != "" {
		opts = append(opts, quorumq.WithTokenSource(quorumq.StaticToken(tok)))
	}
	client, err := quorumq.Dial(ctx, strings.Split(*endpoints, ","), opts...)
	if err != nil {
		return err
	}
	defer client.Close()

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var done atomic.Int64
	consumer := client.Queue(*queue).NewConsumer(quorumq.ConsumerOptions{Concurrency: *concurrency})
	err = consumer.Run(ctx, func(ctx context.Context, m *quorumq.Message) error {
		select { // the job
		case <-time.After(*work):
		case <-ctx.Done():
			return ctx.Err() // drain timeout: the message goes back to the queue
		}
		if n := done.Add(1); *limit > 0 && n >= *limit {
			stop()
		}
		return nil
	})
	fmt.Fprintf(out, "handled %d messages from %s\n", done.Load(), *queue)
	return err
}

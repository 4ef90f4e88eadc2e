// Command producer publishes messages to a quorumq queue through the SDK's
// batching Producer and reports how many were stored.
//
//	go run ./sdk/examples/producer -endpoints 127.0.0.1:9090 -queue jobs -count 1000
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
		fmt.Fprintln(os.Stderr, "producer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("producer", flag.ContinueOnError)
	endpoints := fs.String("endpoints", "127.0.0.1:9090", "comma-separated gRPC addresses of any nodes")
	queue := fs.String("queue", "jobs", "queue name (created if missing)")
	count := fs.Int("count", 1000, "messages to publish")
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
	if _, err := client.CreateQueue(ctx, *queue, quorumq.QueueAttributes{}, nil); err != nil {
		return err
	}

	var sent, failed atomic.Int64
	p := client.Queue(*queue).NewProducer(quorumq.ProducerOptions{
		OnResult: func(m *quorumq.OutgoingMessage, _ quorumq.SendResult, err error) {
			if err != nil {
				failed.Add(1)
				fmt.Fprintf(os.Stderr, "send %q: %v\n", m.Body, err)
				return
			}
			sent.Add(1)
		},
	})
	start := time.Now()
	var publishErr error
	for i := range *count {
		if _, publishErr = p.Publish(ctx, quorumq.OutgoingMessage{Body: fmt.Sprintf("job %d", i)}); publishErr != nil {
			break // interrupted: Close still sends what was published
		}
	}
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := p.Close(closeCtx); err != nil {
		return err
	}
	fmt.Fprintf(out, "sent %d messages to %s (%d failed) in %v\n", sent.Load(), *queue, failed.Load(), time.Since(start).Round(time.Millisecond))
	if publishErr != nil {
		return publishErr
	}
	if failed.Load() > 0 {
		return fmt.Errorf("%d sends failed", failed.Load())
	}
	return nil
}

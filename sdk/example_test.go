package quorumq_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"slices"
	"sync"
	"time"

	quorumq "github.com/quorumq/quorumq/sdk"
)

// Send a message, receive it and delete it. (endpoints are the gRPC
// addresses of any nodes, e.g. []string{"127.0.0.1:9090"}.)
func Example() {
	ctx := context.Background()
	client, err := quorumq.Dial(ctx, endpoints)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	if _, err := client.CreateQueue(ctx, "example-orders", quorumq.QueueAttributes{VisibilityTimeout: 30 * time.Second}, nil); err != nil {
		log.Fatal(err)
	}
	orders := client.Queue("example-orders")
	if _, err := orders.Send(ctx, quorumq.OutgoingMessage{Body: "order 1", Attributes: map[string]string{"customer": "42"}}); err != nil {
		log.Fatal(err)
	}
	msgs, err := orders.Receive(ctx, quorumq.MaxMessages(10), quorumq.WaitTime(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range msgs {
		fmt.Println(m.Body, m.Attributes["customer"], m.ReceiveCount)
		if err := m.Delete(ctx); err != nil {
			log.Fatal(err)
		}
	}
	// Output: order 1 42 1
}

// Errors match sentinels with errors.Is, and carry details for errors.As.
func ExampleError() {
	ctx := context.Background()
	client, err := quorumq.Dial(ctx, endpoints)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	_, err = client.GetQueue(ctx, "no-such-queue")
	fmt.Println(errors.Is(err, quorumq.ErrQueueNotFound))

	_, err = client.CreateQueue(ctx, "bad name!", quorumq.QueueAttributes{}, nil)
	var qe *quorumq.Error
	if errors.Is(err, quorumq.ErrInvalidArgument) && errors.As(err, &qe) {
		fmt.Println(qe.Reason, qe.Field)
	}
	// Output:
	// true
	// INVALID_ARGUMENT name
}

// A Producer batches messages; Close sends what is buffered.
func ExampleProducer() {
	ctx := context.Background()
	client, err := quorumq.Dial(ctx, endpoints)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	if _, err := client.CreateQueue(ctx, "example-events", quorumq.QueueAttributes{}, nil); err != nil {
		log.Fatal(err)
	}

	p := client.Queue("example-events").NewProducer(quorumq.ProducerOptions{Linger: 10 * time.Millisecond})
	var futures []*quorumq.Future
	for i := range 250 {
		f, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: fmt.Sprint("event ", i)})
		if err != nil {
			log.Fatal(err)
		}
		futures = append(futures, f)
	}
	if err := p.Close(ctx); err != nil {
		log.Fatal(err)
	}
	sent := 0
	for _, f := range futures {
		if _, err := f.Result(); err == nil {
			sent++
		}
	}
	fmt.Println("sent", sent)
	info, err := client.GetQueue(ctx, "example-events")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("visible", info.Stats.Visible)
	if err := client.DeleteQueue(ctx, "example-events"); err != nil {
		log.Fatal(err)
	}
	// Output:
	// sent 250
	// visible 250
}

// A Consumer runs handlers concurrently, keeps their leases alive and
// deletes each message its handler accepts. Cancelling ctx shuts it down
// gracefully.
func ExampleConsumer_Run() {
	ctx := context.Background()
	client, err := quorumq.Dial(ctx, endpoints)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	if _, err := client.CreateQueue(ctx, "example-jobs", quorumq.QueueAttributes{}, nil); err != nil {
		log.Fatal(err)
	}
	jobs := client.Queue("example-jobs")
	if _, err := jobs.SendBatch(ctx, []quorumq.OutgoingMessage{{Body: "resize a.png"}, {Body: "resize b.png"}, {Body: "resize c.png"}}); err != nil {
		log.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	var mu sync.Mutex
	var done []string
	consumer := jobs.NewConsumer(quorumq.ConsumerOptions{Concurrency: 4})
	err = consumer.Run(runCtx, func(ctx context.Context, m *quorumq.Message) error {
		mu.Lock()
		defer mu.Unlock()
		done = append(done, m.Body)
		if len(done) == 3 {
			stop() // shut down once the three jobs are handled
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	slices.Sort(done)
	fmt.Println(done)
	info, err := client.GetQueue(ctx, "example-jobs")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("left", info.Stats.Visible+info.Stats.InFlight)
	// Output:
	// [resize a.png resize b.png resize c.png]
	// left 0
}

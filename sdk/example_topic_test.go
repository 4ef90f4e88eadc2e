package quorumq_test

import (
	"context"
	"fmt"
	"log"
	"sync"

	quorumq "github.com/quorumq/quorumq/sdk"
)

// A Publisher appends to a topic's partitions (one key, one partition, in
// order); a GroupConsumer is a member of a consumer group: it reads the
// partitions the group's coordinator assigns it, commits after handling,
// and leaves the group when ctx is cancelled.
func ExampleGroupConsumer_Run() {
	ctx := context.Background()
	client, err := quorumq.Dial(ctx, endpoints)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	orders, err := client.CreateTopic(ctx, "example-orders", quorumq.TopicAttributes{Partitions: 2})
	if err != nil {
		log.Fatal(err)
	}
	if err := orders.CreateGroup(ctx, "billing"); err != nil {
		log.Fatal(err)
	}
	pub := orders.NewPublisher()
	for _, body := range []string{"order 1", "order 2", "order 3"} {
		if _, err := pub.Publish(ctx, quorumq.TopicMessage{Body: body, PartitionKey: "customer-7"}); err != nil {
			log.Fatal(err)
		}
	}

	runCtx, stop := context.WithCancel(ctx)
	var mu sync.Mutex
	var billed []string
	consumer := orders.NewGroupConsumer("billing", quorumq.GroupConsumerOptions{})
	err = consumer.Run(runCtx, func(ctx context.Context, m *quorumq.GroupMessage) error {
		mu.Lock()
		defer mu.Unlock()
		billed = append(billed, m.Body)
		if len(billed) == 3 {
			stop() // leave the group once the three orders are billed
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(billed) // one key: one partition, in publish order
	// Output:
	// [order 1 order 2 order 3]
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	quorumq "github.com/quorumq/quorumq/sdk"
	"github.com/quorumq/quorumq/sdk/internal/testcluster"
)

func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := testcluster.Start(ctx, testcluster.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	client, err := quorumq.Dial(ctx, c.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.CreateQueue(ctx, "jobs", quorumq.QueueAttributes{}, nil); err != nil {
		t.Fatal(err)
	}
	msgs := make([]quorumq.OutgoingMessage, 50)
	for i := range msgs {
		msgs[i].Body = fmt.Sprint("job ", i)
	}
	if _, err := client.Queue("jobs").SendBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	args := []string{"-endpoints", strings.Join(c.Endpoints(), ","), "-queue", "jobs", "-max", "50", "-work", "1ms"}
	if err := run(ctx, args, &out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "handled 50 messages from jobs\n" {
		t.Errorf("output: %q", got)
	}
	info, err := client.GetQueue(ctx, "jobs")
	if err != nil {
		t.Fatal(err)
	}
	if s := info.Stats; s.Visible+s.InFlight != 0 {
		t.Errorf("queue holds %+v after the worker", s)
	}
}

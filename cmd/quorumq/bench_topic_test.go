package main

import (
	"context"
	"io"
	"testing"
	"time"
)

// Topic mode: producers publish, the subscribed queue's consumers receive
// every message once (end to end through the fan-out).
func TestBenchTopicMode(t *testing.T) {
	n := startBenchNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := defaultBenchOptions()
	o.endpoint = n.GRPCAddr()
	o.queue, o.topic, o.create = "bench-topic-q", "bench-topic", true
	o.producers, o.consumers, o.inflight, o.batch, o.partitions = 2, 2, 2, 10, 2
	o.size, o.duration, o.messages, o.progress = 256, 0, 300, 0
	o.drainTimeout = 15 * time.Second
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	res, err := runBench(ctx, o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 300 || res.Received != 300 || res.Deleted != 300 || !res.Drained || len(res.Errors) != 0 || res.EndToEndLatency.Count != 300 {
		t.Fatalf("topic mode: %+v", res)
	}
}

package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// Topic mode of `quorumq bench` (--topic): producers publish to the topic
// instead of sending to --queue; with --create the topic is made (with
// --partitions) and --queue subscribed to it, so the consumers measure
// the whole path, publish -> fan-out -> receive.

// prepareTopic makes the topic and subscribes the queue (--create only).
func prepareTopic(ctx context.Context, o benchOptions, conn *grpc.ClientConn) error {
	if o.topic == "" {
		return nil
	}
	tc := qv1.NewTopicServiceClient(conn)
	req := &qv1.CreateTopicRequest{Name: o.topic, Attributes: &qv1.TopicAttributes{Partitions: int32(o.partitions)}}
	if _, err := tc.CreateTopic(ctx, req); err != nil {
		return fmt.Errorf("create topic %s: %w", o.topic, err)
	}
	if _, err := tc.Subscribe(ctx, &qv1.SubscribeRequest{Topic: o.topic, Queue: o.queue}); err != nil {
		return fmt.Errorf("subscribe queue %s to topic %s: %w", o.queue, o.topic, err)
	}
	return nil
}

// publishTopic publishes messages first..first+n-1 in one request (Publish for
// --batch 1, else PublishBatch).
func (r *benchRun) publishTopic(ctx context.Context, p *benchProducer, first int64, n int, intended time.Time) error {
	stamp := strconv.FormatInt(intended.UnixNano(), 10)
	ctx, cancel := context.WithTimeout(ctx, benchCallTimeout)
	defer cancel()
	k, _ := p.api()
	tc := p.topics[k]
	ok := int64(n)
	if r.o.batch == 1 {
		e := r.entry(first, 0, stamp)
		if _, err := tc.Publish(ctx, &qv1.PublishRequest{Topic: r.o.topic, Body: e.Body, Attributes: e.Attributes, Tags: e.Tags}); err != nil {
			return err
		}
	} else {
		entries := make([]*qv1.PublishBatchEntry, n)
		for i := range entries {
			e := r.entry(first+int64(i), i, stamp)
			entries[i] = &qv1.PublishBatchEntry{Id: e.Id, Body: e.Body, Attributes: e.Attributes, Tags: e.Tags}
		}
		resp, err := tc.PublishBatch(ctx, &qv1.PublishBatchRequest{Topic: r.o.topic, Entries: entries})
		if err != nil {
			return err
		}
		for _, f := range resp.GetFailed() {
			r.errs.add(f.GetCode(), 1)
		}
		ok = int64(len(resp.GetSuccessful()))
		r.sendFailed.Add(int64(len(resp.GetFailed())))
	}
	r.sent.Add(ok)
	r.sendLat.record(time.Since(intended), ok)
	return nil
}

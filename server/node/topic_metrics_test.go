package node_test

import (
	"fmt"
	"strings"
	"testing"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server/node"
	"github.com/quorumq/quorumq/server/shardserver"
)

// Topic partitions' disk usage is on /metrics: quorumq_topic_bytes and
// quorumq_topic_messages per tenant, topic and partition.
func TestTopicDiskUsageMetrics(t *testing.T) {
	n := startNode(t, node.Config{})
	ctx := testCtx(t)
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	tc := qv1.NewTopicServiceClient(dial(t, n.GRPCAddr()))
	if _, err := tc.CreateTopic(ctx, &qv1.CreateTopicRequest{Name: "m"}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := tc.Publish(ctx, &qv1.PublishRequest{Topic: "m", Body: strings.Repeat("x", 100)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() error {
		s := scrapeMetrics(t, n.MetricsAddr())
		for _, want := range []struct {
			name  string
			value float64
		}{{"quorumq_topic_bytes", 300}, {"quorumq_topic_messages", 3}} {
			f := s[want.name]
			if f == nil || len(f.series) != 1 {
				return fmt.Errorf("%s: %v", want.name, f)
			}
			got := f.series[0]
			if got.value != want.value || got.labels["topic"] != "m" || got.labels["tenant"] != "default" || got.labels["partition"] != "0" {
				return fmt.Errorf("%s = %v %v, want %v", want.name, got.value, got.labels, want.value)
			}
		}
		return nil
	})
}

// TestTopicLabelCap: past MaxQueueLabels topics, the partition gauges of
// the other topics are summed under tenant and topic "_other", so the
// number of series a scrape carries stays bounded.
func TestTopicLabelCap(t *testing.T) {
	n := startNode(t, node.Config{Server: shardserver.Config{MaxQueueLabels: 2}})
	ctx := testCtx(t)
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	c := qv1.NewTopicServiceClient(dial(t, n.GRPCAddr()))
	for _, name := range []string{"a", "b", "c", "d"} {
		if _, err := c.CreateTopic(ctx, &qv1.CreateTopicRequest{Name: name, Attributes: &qv1.TopicAttributes{Partitions: 1}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Publish(ctx, &qv1.PublishRequest{Topic: name, Body: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	var s scrape
	waitFor(t, func() error {
		s = scrapeMetrics(t, n.MetricsAddr())
		_, err := s.value("quorumq_topic_messages", "topic", shardserver.OtherLabel)
		return err
	})
	for _, w := range []struct {
		topic string
		value float64
	}{{"a", 1}, {"b", 1}, {shardserver.OtherLabel, 2}} {
		if v, err := s.value("quorumq_topic_messages", "topic", w.topic); err != nil || v != w.value {
			t.Errorf("quorumq_topic_messages{topic=%q} = %v, %v; want %v", w.topic, v, err, w.value)
		}
	}
	if v, err := s.value("quorumq_topic_bytes", "topic", shardserver.OtherLabel); err != nil || v <= 0 {
		t.Errorf("quorumq_topic_bytes{topic=_other} = %v, %v; want the two topics' bytes", v, err)
	}
	for _, name := range []string{"c", "d"} {
		if _, err := s.value("quorumq_topic_messages", "topic", name); err == nil {
			t.Errorf("topic %s has its own series past the cap", name)
		}
	}
}

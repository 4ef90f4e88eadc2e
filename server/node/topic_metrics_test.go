package node_test

import (
	"fmt"
	"strings"
	"testing"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server/node"
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

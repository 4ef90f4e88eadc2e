package node_test

import (
	"fmt"
	"testing"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// TestEveryNodeRecordsItsClientAddress: the bootstrap records only its
// writer's client address; every node then records its own, so
// `cluster nodes` shows each node's gRPC address.
func TestEveryNodeRecordsItsClientAddress(t *testing.T) {
	const shards = 2
	c := startMemCluster(t, 3, shards)
	waitLong(t, 30*time.Second, func() error {
		r, err := c.nodesResp()
		if err != nil {
			return err
		}
		if len(r.GetNodes()) != len(c.nodes) {
			return fmt.Errorf("%d node records", len(r.GetNodes()))
		}
		for _, rec := range r.GetNodes() {
			if want := c.nodes[rec.GetId()].GRPCAddr(); rec.GetClientAddress() != want {
				return fmt.Errorf("node %d: client address %q, want %q", rec.GetId(), rec.GetClientAddress(), want)
			}
		}
		return nil
	})
	// ListNodes through each node shows the same.
	for id, n := range c.nodes {
		r, err := qv1.NewClusterServiceClient(dial(t, n.GRPCAddr())).ListNodes(testCtx(t), &qv1.ListNodesRequest{})
		if err != nil {
			t.Fatalf("ListNodes through node %d: %v", id, err)
		}
		for _, rec := range r.GetNodes() {
			if rec.GetClientAddress() == "" {
				t.Fatalf("ListNodes through node %d: node %d has no client address", id, rec.GetId())
			}
		}
	}
}

package tests

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// The README's "Add shards" walkthrough runs as written against a
// three-node cluster with the Makefile's shard count (its endpoint mapped
// to node 3): 4 shards become 6, the message sent before is received
// after, the grown queue keeps its first partitions and spreads onto the
// new shards. Then more messages go to both queues through an API-tier
// node (it learnt the new count), node 1 is killed and restarted with its
// original flags, and every message is received through it; a node that
// joins afterwards learns the count and serves both queues.
func TestReadmeAddShards(t *testing.T) {
	needTools(t, "bash")
	c := startCluster(t, 3, "--shards", "4")
	waitReady(t, c.client(1))
	api := c.startAPINode(9) // learns the new count from the storage nodes
	bin := withBin(t)
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for _, line := range readmeBlocks(t, "### Add shards") {
		if strings.Contains(strings.ReplaceAll(line, "127.0.0.1:9093", ""), "127.0.0.1:") {
			t.Fatalf("README line names an address the walkthrough did not start: %s", line)
		}
		line = strings.ReplaceAll(line, "127.0.0.1:9093", c.procs[3].grpcAddr)
		script.WriteString(echoed(line))
	}
	out := runScript(t, bin, script.String())
	for _, re := range []string{
		`(?m)^shards: 4 -> 6$`,
		`placed before`,
		`(?m)^partitions\s+4 \(on shards \d,\d,\d,\d\)$`,
		`(?m)^5\s+3\s+1,2,3\s`, // cluster nodes: the new shard 5's replica set
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Fatalf("the transcript lacks %s:\n%s", re, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	checkFor(t, 30*time.Second, func() error {
		gc, err := qv1.NewClusterServiceClient(api.grpcConn(t)).GetCluster(ctx, &qv1.GetClusterRequest{})
		if err != nil {
			return err
		}
		if gc.GetShardCount() != 6 || gc.GetBaseShardCount() != 4 {
			return fmt.Errorf("API node: shard count %d, base %d", gc.GetShardCount(), gc.GetBaseShardCount())
		}
		return nil
	})
	q := api.client(t) // sends through the API tier
	ev, err := q.GetQueue(ctx, &qv1.GetQueueRequest{Name: "events"})
	if err != nil {
		t.Fatal(err)
	}
	if ps := slices.Sorted(slices.Values(ev.GetQueue().GetPartitionShards())); !slices.Equal(ps, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("events' partitions on %v, want every data shard", ev.GetQueue().GetPartitionShards())
	}
	orders, err := q.GetQueue(ctx, &qv1.GetQueueRequest{Name: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if ps := orders.GetQueue().GetPartitionShards(); !slices.Contains(ps, 4) || !slices.Contains(ps, 5) {
		t.Fatalf("grown orders' partitions on %v, want the new shards 4 and 5 among them", ps)
	}
	sent := map[string]map[string]bool{"events": {}, "orders": {}}
	for queue := range sent {
		for i := range 20 {
			body := fmt.Sprintf("%s-%d", queue, i)
			if _, err := q.SendMessage(ctx, &qv1.SendMessageRequest{Queue: queue, Body: body, PartitionKey: body}); err != nil {
				t.Fatalf("send %s: %v", body, err)
			}
			sent[queue][body] = true
		}
	}
	c.kill(1)
	c.start(1) // the same flags: --shards 4, the bootstrap count
	waitReady(t, c.client(1))
	q1 := c.client(1)
	for queue, want := range sent {
		got := map[string]bool{}
		checkFor(t, time.Minute, func() error {
			r, err := q1.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: queue, MaxMessages: 10})
			if err != nil {
				return err
			}
			for _, m := range r.GetMessages() {
				got[m.GetBody()] = true
				if _, err := q1.DeleteMessage(ctx, &qv1.DeleteMessageRequest{Queue: queue, ReceiptHandle: m.GetReceiptHandle()}); err != nil {
					return err
				}
			}
			if len(got) < len(want) {
				return fmt.Errorf("%s: received %d of %d", queue, len(got), len(want))
			}
			return nil
		})
	}
	gc, err := c.clusterClient(1).GetCluster(ctx, &qv1.GetClusterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if gc.GetShardCount() != 6 || len(gc.GetShards()) != 6 {
		t.Fatalf("restarted node 1: shard count %d, hosts %d shards", gc.GetShardCount(), len(gc.GetShards()))
	}

	// A node that joins later learns the count from the cluster and routes
	// both placements.
	joiner := startServe(t, t.TempDir(), "--join", c.raftAddr(2), "--raft-addr", freePort(t))
	checkFor(t, time.Minute, func() error {
		gc, err := qv1.NewClusterServiceClient(joiner.grpcConn(t)).GetCluster(ctx, &qv1.GetClusterRequest{})
		if err != nil {
			return err
		}
		if gc.GetShardCount() != 6 || gc.GetBaseShardCount() != 4 {
			return fmt.Errorf("joined node: shard count %d, base %d", gc.GetShardCount(), gc.GetBaseShardCount())
		}
		return nil
	})
	qj := joiner.client(t)
	for _, queue := range []string{"events", "orders"} {
		if _, err := qj.SendMessage(ctx, &qv1.SendMessageRequest{Queue: queue, Body: "via the joined node"}); err != nil {
			t.Fatalf("send to %s through the joined node: %v", queue, err)
		}
		checkFor(t, time.Minute, func() error {
			r, err := qj.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: queue, MaxMessages: 10})
			if err != nil {
				return err
			}
			if len(r.GetMessages()) != 1 || r.GetMessages()[0].GetBody() != "via the joined node" {
				return fmt.Errorf("%s through the joined node: %v", queue, r.GetMessages())
			}
			return nil
		})
	}
}

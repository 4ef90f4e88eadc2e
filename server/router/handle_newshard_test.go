package router_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server/internal/servertest"
	"github.com/quorumq/quorumq/server/node"
	"github.com/quorumq/quorumq/store"
)

func handleShard(t *testing.T, h string) uint64 {
	t.Helper()
	return servertest.ParseHandle(t, h).Shard
}

func clusterClient(t *testing.T, n *node.Node) qv1.ClusterServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return qv1.NewClusterServiceClient(conn)
}

// After `cluster add-shards`, a node whose view of the shard count is
// still the old one (here node 3, whose membership pass, which learns the
// count, runs once an hour) gets receipt handles issued by a new shard:
// every by-handle call (delete, visibility change, nack, one or a batch)
// must reach that shard, not be answered "invalid receipt handle" by
// partition 0's.
func TestHandleOfAddedShardOnStaleNode(t *testing.T) {
	c := startMemCluster(t, 3, func(cfg *node.Config) {
		cfg.Shards, cfg.BalanceInterval, cfg.MembershipInterval = 3, time.Hour, 100*time.Millisecond
		if cfg.NodeID == 3 {
			cfg.MembershipInterval = time.Hour
		}
	})
	ctx := tctx(t)
	// Node 3 must not coordinate (the coordinator's passes record the
	// membership and the added shards).
	for l := c.Leader(t, 1, 2, 3); l == 3; l = c.Leader(t, 1, 2, 3) {
		tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_ = c.Nodes[3].Host().TransferLeadership(tctx, 0, 1)
		cancel()
	}
	stale := clusterClient(t, c.Nodes[3])
	resp, err := clusterClient(t, c.Nodes[1]).AddShards(ctx, &qv1.AddShardsRequest{Count: 2, ExpectShards: 3})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetShardCount() != 5 {
		t.Fatalf("AddShards: %v", resp)
	}
	// A queue over every data shard, new ones included; messages on each
	// partition, received through node 1 (which knows the new shards).
	createPartitioned(t, c.Clients[1], "late", 4, nil)
	q, err := c.Clients[1].GetQueue(ctx, &qv1.GetQueueRequest{Name: "late"})
	if err != nil {
		t.Fatal(err)
	}
	p0 := q.GetQueue().GetPartitionShards()[0]
	for i := range 4 {
		for j := range 8 {
			if _, err := c.Clients[1].SendMessage(ctx, &qv1.SendMessageRequest{Queue: "late", Body: fmt.Sprint(i, "-", j),
				PartitionKey: keyForPartition(4, i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Handles from the new shard that does not hold partition 0 (where a
	// handle of an unknown shard goes).
	var handles []string
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		r, err := c.Clients[1].ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "late", MaxMessages: 10, VisibilityTimeout: durationpb.New(time.Hour)})
		if err != nil {
			return err
		}
		for _, m := range r.GetMessages() {
			if sh := handleShard(t, m.GetReceiptHandle()); sh >= 3 && sh != p0 {
				handles = append(handles, m.GetReceiptHandle())
			}
		}
		if len(handles) < 6 {
			return fmt.Errorf("%d handles from a new shard", len(handles))
		}
		return nil
	})
	// Node 3 still counts 3 shards: its view is stale.
	gc, err := stale.GetCluster(ctx, &qv1.GetClusterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if gc.GetShardCount() != 3 {
		t.Fatalf("node 3 counts %d shards: the test needs its view stale", gc.GetShardCount())
	}

	q3 := c.Clients[3]
	if _, err := q3.DeleteMessage(ctx, &qv1.DeleteMessageRequest{Queue: "late", ReceiptHandle: handles[0]}); err != nil {
		t.Fatalf("DeleteMessage of a new shard's handle through node 3: %v", err)
	}
	if _, err := q3.ChangeMessageVisibility(ctx, &qv1.ChangeMessageVisibilityRequest{Queue: "late", ReceiptHandle: handles[1],
		VisibilityTimeout: durationpb.New(time.Hour)}); err != nil {
		t.Fatalf("ChangeMessageVisibility: %v", err)
	}
	if _, err := q3.NackMessage(ctx, &qv1.NackMessageRequest{Queue: "late", ReceiptHandle: handles[2]}); err != nil {
		t.Fatalf("NackMessage: %v", err)
	}
	db, err := q3.DeleteMessageBatch(ctx, &qv1.DeleteMessageBatchRequest{Queue: "late", Entries: []*qv1.DeleteMessageBatchEntry{{Id: "a", ReceiptHandle: handles[3]}}})
	if err != nil || len(db.GetSuccessful()) != 1 {
		t.Fatalf("DeleteMessageBatch: %v %v", db, err)
	}
	vb, err := q3.ChangeMessageVisibilityBatch(ctx, &qv1.ChangeMessageVisibilityBatchRequest{Queue: "late",
		Entries: []*qv1.ChangeMessageVisibilityBatchEntry{{Id: "a", ReceiptHandle: handles[4], VisibilityTimeout: durationpb.New(time.Hour)}}})
	if err != nil || len(vb.GetSuccessful()) != 1 {
		t.Fatalf("ChangeMessageVisibilityBatch: %v %v", vb, err)
	}
	nb, err := q3.NackMessageBatch(ctx, &qv1.NackMessageBatchRequest{Queue: "late", Entries: []*qv1.NackMessageBatchEntry{{Id: "a", ReceiptHandle: handles[5]}}})
	if err != nil || len(nb.GetSuccessful()) != 1 {
		t.Fatalf("NackMessageBatch: %v %v", nb, err)
	}
	// The deletes took: 30 of the 32 messages are left.
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		q, err := c.Clients[1].GetQueue(ctx, &qv1.GetQueueRequest{Name: "late"})
		if err != nil {
			return err
		}
		if st := q.GetQueue().GetStats(); st.GetVisible()+st.GetInFlight()+st.GetDelayed() != 30 {
			return fmt.Errorf("queue stats %v, want 30 messages left of 32", st)
		}
		return nil
	})
	// A handle of a shard the cluster does not have stays invalid.
	forged := []byte{2}
	forged = append(forged, make([]byte, store.HandleLen-1)...)
	forged[8] = 9 // shard 9
	if _, err := q3.DeleteMessage(ctx, &qv1.DeleteMessageRequest{Queue: "late", ReceiptHandle: base64.RawURLEncoding.EncodeToString(forged)}); reasonOfErr(err) != "INVALID_RECEIPT_HANDLE" {
		t.Fatalf("handle of shard 9: %v, want INVALID_RECEIPT_HANDLE", err)
	}
}

func reasonOfErr(err error) string {
	_, reason, _ := reasonOf(err)
	return reason
}

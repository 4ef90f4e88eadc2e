package node_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/node"
	"github.com/quorumq/quorumq/server/router"
)

func reasonOf(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// sendAll sends n messages to queue through c, each its own partition key.
func sendAll(t *testing.T, c qv1.QueueServiceClient, queue, prefix string, n int) map[string]bool {
	t.Helper()
	sent := map[string]bool{}
	for i := range n {
		body := fmt.Sprintf("%s-%d", prefix, i)
		if _, err := c.SendMessage(testCtx(t), &qv1.SendMessageRequest{Queue: queue, Body: body, PartitionKey: body}); err != nil {
			t.Fatalf("send %s: %v", body, err)
		}
		sent[body] = true
	}
	return sent
}

// receiveAll receives and deletes until every body of want came.
func receiveAll(t *testing.T, c qv1.QueueServiceClient, queue string, want map[string]bool) {
	t.Helper()
	got := map[string]bool{}
	waitLong(t, 30*time.Second, func() error {
		r, err := c.ReceiveMessages(testCtx(t), &qv1.ReceiveMessagesRequest{Queue: queue, MaxMessages: 10})
		if err != nil {
			return err
		}
		for _, m := range r.GetMessages() {
			got[m.GetBody()] = true
			if _, err := c.DeleteMessage(testCtx(t), &qv1.DeleteMessageRequest{Queue: queue, ReceiptHandle: m.GetReceiptHandle()}); err != nil {
				return err
			}
		}
		for b := range want {
			if !got[b] {
				return fmt.Errorf("%s: received %d of %d", queue, len(got), len(want))
			}
		}
		return nil
	})
}

// TestAddShardsOnline: a running 3-node cluster (3 shards, replication
// factor 2) adds 2 shards. They get replica sets of 2 nodes, spread to the
// least loaded, and leaders; a queue made before keeps its partitions
// where they were (its messages are received after), a new queue and a
// queue that grows partitions spread onto the new shards; a node restarted
// with the bootstrap --shards (or the new count) serves everything, and
// another count is refused.
func TestAddShardsOnline(t *testing.T) {
	c := startMemCluster(t, 3, 3, func(cfg *node.Config) { cfg.ReplicationFactor = 2 })
	waitLong(t, 30*time.Second, func() error {
		r, err := c.nodesResp()
		if err != nil {
			return err
		}
		if len(r.GetReplicaSets()) != 3 {
			return fmt.Errorf("replica sets %v", r.GetReplicaSets())
		}
		return nil
	})
	q2 := qv1.NewQueueServiceClient(dial(t, c.nodes[2].GRPCAddr()))
	if _, err := q2.CreateQueue(testCtx(t), &qv1.CreateQueueRequest{Name: "old", Attributes: &qv1.QueueAttributes{Partitions: 2}}); err != nil {
		t.Fatal(err)
	}
	oldQ, err := q2.GetQueue(testCtx(t), &qv1.GetQueueRequest{Name: "old"})
	if err != nil {
		t.Fatal(err)
	}
	before := oldQ.GetQueue().GetPartitionShards()
	oldSent := sendAll(t, q2, "old", "before", 12)

	cl := qv1.NewClusterServiceClient(dial(t, c.nodes[3].GRPCAddr()))
	for _, bad := range []*qv1.AddShardsRequest{{Count: 0}, {Count: 300}, {Count: 254}} {
		if _, err := cl.AddShards(testCtx(t), bad); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("AddShards(%v): %v, want INVALID_ARGUMENT", bad, err)
		}
	}
	// AddShards places on nodes the metadata leader hears from last: wait
	// until it hears from every node (each observes the metadata shard).
	waitLong(t, 30*time.Second, func() error {
		cfgs, err := c.configs(3)
		if err != nil {
			return err
		}
		if len(cfgs[0].Members) != 3 {
			return fmt.Errorf("metadata shard members %v", cfgs[0].Members)
		}
		for _, p := range cfgs[0].Peers {
			if !p.RecentActive || p.State != "StateReplicate" {
				return fmt.Errorf("metadata shard member %+v", p)
			}
		}
		return nil
	})
	resp, err := cl.AddShards(testCtx(t), &qv1.AddShardsRequest{Count: 2, ExpectShards: 3})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetShardCount() != 5 || len(resp.GetReplicaSets()) != 2 {
		t.Fatalf("AddShards: %v", resp)
	}
	for _, rs := range resp.GetReplicaSets() {
		if len(rs.GetVoters()) != 2 {
			t.Fatalf("new replica set %v", rs)
		}
	}
	// The new replicas go to the least loaded nodes: every node holds its
	// share of the data shards' replicas (8 over 3 nodes: 2 or 3).
	lr, err := c.nodesResp()
	if err != nil {
		t.Fatal(err)
	}
	load := map[uint64]int{}
	for _, rs := range lr.GetReplicaSets() {
		if rs.GetShard() != router.MetadataShard {
			for _, v := range rs.GetVoters() {
				load[v]++
			}
		}
	}
	for id := uint64(1); id <= 3; id++ {
		if load[id] < 2 || load[id] > 3 {
			t.Fatalf("data shard replicas per node %v", load)
		}
	}
	// A retry of the same call (the count moved on) adds nothing.
	if _, err := cl.AddShards(testCtx(t), &qv1.AddShardsRequest{Count: 2, ExpectShards: 3}); status.Code(err) != codes.FailedPrecondition ||
		reasonOf(err) != server.ReasonShardCountChanged {
		t.Fatalf("retried AddShards: %v", err)
	}
	// Every node learns the count and hosts the new shards it is named in.
	waitLong(t, 30*time.Second, func() error {
		for id, n := range c.nodes {
			gc, err := qv1.NewClusterServiceClient(dial(t, n.GRPCAddr())).GetCluster(testCtx(t), &qv1.GetClusterRequest{})
			if err != nil {
				return err
			}
			if gc.GetShardCount() != 5 || gc.GetBaseShardCount() != 3 {
				return fmt.Errorf("node %d: shard count %d base %d", id, gc.GetShardCount(), gc.GetBaseShardCount())
			}
		}
		_, err := c.configs(5)
		return err
	})
	if got, _ := q2.GetQueue(testCtx(t), &qv1.GetQueueRequest{Name: "old"}); !slices.Equal(got.GetQueue().GetPartitionShards(), before) {
		t.Fatalf("old queue moved: %v, was %v", got.GetQueue().GetPartitionShards(), before)
	}

	q1 := qv1.NewQueueServiceClient(dial(t, c.nodes[1].GRPCAddr()))
	if _, err := q1.CreateQueue(testCtx(t), &qv1.CreateQueueRequest{Name: "new", Attributes: &qv1.QueueAttributes{Partitions: 4}}); err != nil {
		t.Fatal(err)
	}
	nq, err := q1.GetQueue(testCtx(t), &qv1.GetQueueRequest{Name: "new"})
	if err != nil {
		t.Fatal(err)
	}
	if ps := slices.Sorted(slices.Values(nq.GetQueue().GetPartitionShards())); !slices.Equal(ps, []uint64{1, 2, 3, 4}) {
		t.Fatalf("new queue's partitions on %v, want every data shard", nq.GetQueue().GetPartitionShards())
	}
	// The old queue grows onto the new shards; its first partitions stay.
	if _, err := q1.UpdateQueue(testCtx(t), &qv1.UpdateQueueRequest{Name: "old", Attributes: &qv1.QueueAttributes{Partitions: 4},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"partitions"}}}); err != nil {
		t.Fatal(err)
	}
	grown, err := q1.GetQueue(testCtx(t), &qv1.GetQueueRequest{Name: "old"})
	if err != nil {
		t.Fatal(err)
	}
	ps := grown.GetQueue().GetPartitionShards()
	if len(ps) != 4 || !slices.Equal(ps[:2], before) || !slices.Contains(ps, 3) || !slices.Contains(ps, 4) {
		t.Fatalf("grown queue's partitions on %v (were %v)", ps, before)
	}
	// A dead-letter queue made after, its partition 0 on a new shard: the
	// outbox relay finds it from its record.
	dlq := "dlq"
	for i := 0; router.ShardOf(5, server.DevTenant, dlq, 0) < 3; i++ {
		dlq = fmt.Sprintf("dlq%d", i)
	}
	if _, err := q1.CreateQueue(testCtx(t), &qv1.CreateQueueRequest{Name: dlq, Attributes: &qv1.QueueAttributes{Partitions: 3}}); err != nil {
		t.Fatal(err)
	}
	if _, err := q1.CreateQueue(testCtx(t), &qv1.CreateQueueRequest{Name: "src", Attributes: &qv1.QueueAttributes{
		DeadLetter: &qv1.DeadLetterPolicy{Queue: dlq, MaxReceiveCount: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := q1.SendMessage(testCtx(t), &qv1.SendMessageRequest{Queue: "src", Body: "poison"}); err != nil {
		t.Fatal(err)
	}
	waitLong(t, 30*time.Second, func() error { // received once, then moved on the next receive
		if _, err := q1.ReceiveMessages(testCtx(t), &qv1.ReceiveMessagesRequest{Queue: "src", VisibilityTimeout: durationpb.New(0)}); err != nil {
			return err
		}
		r, err := q1.GetQueue(testCtx(t), &qv1.GetQueueRequest{Name: dlq})
		if err != nil {
			return err
		}
		if r.GetQueue().GetStats().GetVisible() != 1 {
			return fmt.Errorf("dlq stats %v", r.GetQueue().GetStats())
		}
		return nil
	})
	newSent := sendAll(t, q1, "new", "new", 16)
	for b := range sendAll(t, q1, "old", "after", 16) {
		oldSent[b] = true
	}

	// Node 1 restarts: the bootstrap count it was given is fine, so is the
	// new one, another is refused.
	c.stop(1)
	for _, shards := range []int{4, 2} {
		cfg := c.cfg(1)
		cfg.Shards, cfg.HTTPAddr, cfg.GRPCAddr = shards, "127.0.0.1:0", "127.0.0.1:0"
		if n, err := node.Start(testCtx(t), cfg); err == nil {
			_ = n.Stop(testCtx(t))
			t.Fatalf("restart with --shards %d: started", shards)
		}
	}
	c.nodes[1] = c.start(1)
	c.stop(1)
	restart := c.cfg
	c.cfg = func(id uint64) node.Config {
		cfg := restart(id)
		cfg.Shards = 5
		return cfg
	}
	c.nodes[1] = c.start(1)
	q1 = qv1.NewQueueServiceClient(dial(t, c.nodes[1].GRPCAddr()))
	receiveAll(t, q1, "old", oldSent)
	receiveAll(t, q1, "new", newSent)
	if n := c.nodes[1].ShardServer(4); n == nil {
		t.Fatal("restarted node has no server of shard 4")
	}
}

// scopeAuth grants tenant "acme" exactly the scopes of the "scopes" header.
type scopeAuth struct{}

func (scopeAuth) Authenticate(ctx context.Context) (*server.Principal, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	p := &server.Principal{Tenant: "acme", Scopes: map[string]bool{}}
	for _, s := range md.Get("scopes") {
		p.Scopes[s] = true
	}
	return p, nil
}

// AddShards needs cluster:admin (gRPC and REST); a single-node cluster
// refuses it with a reason that says why.
func TestAddShardsNeedsClusterAdmin(t *testing.T) {
	n := startNode(t, node.Config{Authenticator: scopeAuth{}})
	cl := qv1.NewClusterServiceClient(dial(t, n.GRPCAddr()))
	as := func(scope string) context.Context {
		return metadata.AppendToOutgoingContext(testCtx(t), "scopes", scope)
	}
	if _, err := cl.AddShards(as(server.ScopeQueuesAdmin), &qv1.AddShardsRequest{Count: 1}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("queues:admin: %v", err)
	}
	req, err := http.NewRequest("POST", "http://"+n.HTTPAddr()+"/v1/cluster/shards:add", strings.NewReader(`{"count":1}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("scopes", server.ScopeMessagesSend)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("REST without cluster:admin: %d", resp.StatusCode)
	}
	if _, err := cl.AddShards(as(server.ScopeClusterAdmin), &qv1.AddShardsRequest{Count: 1}); status.Code(err) != codes.FailedPrecondition ||
		reasonOf(err) != server.ReasonSingleNode {
		t.Fatalf("single node: %v", err)
	}
}

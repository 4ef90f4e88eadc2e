package servertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/internal/testports"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server/node"
	"github.com/quorumq/quorumq/server/shardserver"
)

// MemCluster is three in-process nodes whose Raft traffic goes through an
// in-memory network that can drop and partition; API calls and forwarding
// use real gRPC on loopback.
type MemCluster struct {
	Net     *raftnode.MemNetwork
	Nodes   map[uint64]*node.Node
	Clients map[uint64]qv1.QueueServiceClient
}

// FreeAddr is a loopback address free at the time of the call, from below
// the ephemeral range: a ":0" port can be taken by any outgoing connection
// before the node binds it (see testports).
func FreeAddr(t *testing.T) string {
	t.Helper()
	addr, err := testports.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// StartMemCluster starts size nodes on an in-memory Raft network; opts
// adjust each node's config (e.g. its shard count).
func StartMemCluster(t *testing.T, size int, opts ...func(*node.Config)) *MemCluster {
	t.Helper()
	c := &MemCluster{Net: raftnode.NewMemNetwork(), Nodes: map[uint64]*node.Node{}, Clients: map[uint64]qv1.QueueServiceClient{}}
	peers := map[uint64]string{}
	for id := uint64(1); id <= uint64(size); id++ {
		peers[id] = FreeAddr(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for id := uint64(1); id <= uint64(size); id++ {
		cfg := node.Config{
			DataDir: t.TempDir(), NodeID: id, Peers: peers, RaftAddr: peers[id],
			HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
			Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
			Server:        shardserver.Config{HousekeepingInterval: 50 * time.Millisecond, ProposeTimeout: 2 * time.Second},
			RaftTransport: c.Net.Transport(id),
			AttachHost:    func(h *raftnode.Host) { c.Net.Attach(id, h) },
		}
		for _, o := range opts {
			o(&cfg)
		}
		n, err := node.Start(ctx, cfg)
		if err != nil {
			t.Fatalf("start node %d: %v", id, err)
		}
		c.Nodes[id] = n
		t.Cleanup(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = n.Stop(sctx)
		})
		conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		c.Clients[id] = qv1.NewQueueServiceClient(conn)
	}
	for _, n := range c.Nodes {
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// Leader returns the node that every live node agrees leads shard 0.
func (c *MemCluster) Leader(t *testing.T, among ...uint64) uint64 {
	t.Helper()
	var leader uint64
	CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		leader = 0
		for _, id := range among {
			st, err := c.Nodes[id].Host().Status(0)
			if err != nil {
				return err
			}
			if st.LeaderID == 0 || (leader != 0 && st.LeaderID != leader) {
				return fmt.Errorf("node %d sees leader %d", id, st.LeaderID)
			}
			leader = st.LeaderID
		}
		return nil
	})
	return leader
}

// StartShardedCluster is StartMemCluster with PartShards shards per node
// and no leader balancing, so tests can place the leaders.
func StartShardedCluster(t *testing.T) *MemCluster {
	t.Helper()
	return StartMemCluster(t, 3, func(c *node.Config) {
		c.Shards, c.BalanceInterval = PartShards, time.Hour
	})
}

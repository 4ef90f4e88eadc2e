package node_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server/node"
	"github.com/quorumq/quorumq/server/shardserver"
)

// Leaders spread over the nodes: with 6 shards on 3 nodes each node ends up
// leading 2, also after a node stops and comes back (it led nothing then).
func TestShardLeadersSpreadAndRebalance(t *testing.T) {
	mem := raftnode.NewMemNetwork()
	peers := map[uint64]string{}
	dirs := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		peers[id] = freeAddr(t)
		dirs[id] = t.TempDir()
	}
	cfgOf := func(id uint64) node.Config {
		return node.Config{NodeID: id, Peers: peers, RaftAddr: peers[id], Shards: 6, DataDir: filepath.Join(dirs[id], "d"),
			BalanceInterval: 200 * time.Millisecond, TickInterval: 20 * time.Millisecond,
			Server:        shardserver.Config{ProposeTimeout: 2 * time.Second},
			RaftTransport: mem.Transport(id), AttachHost: func(h *raftnode.Host) { mem.Attach(id, h) }}
	}
	nodes := map[uint64]*node.Node{}
	for id := uint64(1); id <= 3; id++ {
		nodes[id] = startNode(t, cfgOf(id))
	}
	spread := func() error {
		led := map[uint64]int{}
		for s := uint64(0); s < 6; s++ {
			st, err := nodes[1].Host().Status(s)
			if err != nil {
				return err
			}
			if st.LeaderID == 0 {
				return fmt.Errorf("shard %d has no leader", s)
			}
			led[st.LeaderID]++
		}
		for id := range nodes {
			if led[id] != 2 {
				return fmt.Errorf("leaders per node %v, want 2 each", led)
			}
		}
		return nil
	}
	waitFor(t, spread)
	// Node 3 stops (handing its leaderships away) and comes back.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nodes[3].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	mem.Detach(3)
	nodes[3] = startNode(t, cfgOf(3))
	waitFor(t, spread)
	// The cluster view names the roles.
	r, err := qv1.NewClusterServiceClient(dial(t, nodes[1].GRPCAddr())).GetCluster(testCtx(t), &qv1.GetClusterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetShards()[0].GetRole() != "metadata" || r.GetShards()[5].GetRole() != "data" || r.GetRole() != "storage" {
		t.Fatalf("roles: %v", r)
	}
}

// A data directory keeps the shard count it was made with.
func TestShardCountIsFixedAtBootstrap(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, node.Config{DataDir: dir, Shards: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := node.Start(ctx, node.Config{DataDir: dir, Shards: 4, HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0"})
	if err == nil {
		t.Fatal("a data dir made with 3 shards started with 4")
	}
	t.Log(err)
}

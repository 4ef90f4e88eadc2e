package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server/node"
	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/server/shardserver"
)

// memCluster is n in-process nodes on a MemNetwork.
type memCluster struct {
	t     *testing.T
	mem   *raftnode.MemNetwork
	peers map[uint64]string
	dirs  map[uint64]string
	nodes map[uint64]*node.Node
	cfg   func(id uint64) node.Config
	logMu sync.Mutex
	logs  bytes.Buffer
}

func startMemCluster(t *testing.T, n, shards int, opts ...func(*node.Config)) *memCluster {
	c := &memCluster{t: t, mem: raftnode.NewMemNetwork(), peers: map[uint64]string{}, dirs: map[uint64]string{}, nodes: map[uint64]*node.Node{}}
	for id := uint64(1); id <= uint64(n); id++ {
		c.peers[id] = freeAddr(t)
		c.dirs[id] = t.TempDir()
	}
	c.cfg = func(id uint64) node.Config {
		return node.Config{NodeID: id, Peers: c.peers, RaftAddr: c.peers[id], Shards: shards, DataDir: filepath.Join(c.dirs[id], "d"),
			TickInterval: 20 * time.Millisecond, MembershipInterval: 100 * time.Millisecond, BalanceInterval: 200 * time.Millisecond,
			Server:        shardserver.Config{ProposeTimeout: 3 * time.Second},
			RaftTransport: c.mem.Transport(id), AttachHost: func(h *raftnode.Host) { c.mem.Attach(id, h) }}
	}
	if len(opts) > 0 {
		base := c.cfg
		c.cfg = func(id uint64) node.Config {
			cfg := base(id)
			for _, o := range opts {
				o(&cfg)
			}
			return cfg
		}
	}
	for id := uint64(1); id <= uint64(n); id++ {
		c.nodes[id] = c.start(id)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		c.logMu.Lock()
		defer c.logMu.Unlock()
		for _, line := range strings.Split(c.logs.String(), "\n") {
			if strings.Contains(line, "membership") || strings.Contains(line, "leader") || strings.Contains(line, "level=WARN") {
				t.Log(line)
			}
		}
	})
	return c
}

// start starts node id, its log (debug) into c.logs.
func (c *memCluster) start(id uint64) *node.Node {
	c.t.Helper()
	cfg := c.cfg(id)
	cfg.HTTPAddr, cfg.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(lockedWriter{c}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", id)
	n, err := node.Start(testCtx(c.t), cfg)
	if err != nil {
		c.t.Fatalf("start node %d: %v", id, err)
	}
	c.t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Stop(sctx)
		if k := n.PebbleAPIMisuse(); k != 0 {
			c.t.Errorf("node %d: Pebble reported %d possible API misuses (single deletes that broke the set-once rule)", id, k)
		}
	})
	return n
}

type lockedWriter struct{ c *memCluster }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.c.logMu.Lock()
	defer w.c.logMu.Unlock()
	return w.c.logs.Write(p)
}

func (c *memCluster) stop(id uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.nodes[id].Stop(ctx); err != nil {
		c.t.Fatal(err)
	}
	c.mem.Detach(id)
	delete(c.nodes, id)
}

// configs reads every shard's configuration from the nodes that are
// members of it: voters and learners as the shard's leader applied them.
func (c *memCluster) configs(shards int) (map[uint64]raftnode.GroupStatus, error) {
	out := map[uint64]raftnode.GroupStatus{}
	for g := uint64(0); g < uint64(shards); g++ {
		for id, n := range c.nodes {
			st, err := n.Host().Status(g)
			if err != nil || !st.IsLeader {
				continue
			}
			if st.Joint {
				return nil, fmt.Errorf("shard %d is joint", g)
			}
			out[g] = st
			_ = id
		}
		if _, ok := out[g]; !ok {
			return nil, fmt.Errorf("shard %d has no leader", g)
		}
	}
	return out, nil
}

func (c *memCluster) nodesResp() (*qv1.ListNodesResponse, error) {
	for _, n := range c.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		return qv1.NewClusterServiceClient(dial(c.t, n.GRPCAddr())).ListNodes(ctx, &qv1.ListNodesRequest{})
	}
	return nil, fmt.Errorf("no node")
}

// waitLong polls cond for up to d.
func waitLong(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", d, err)
		}
		<-time.After(50 * time.Millisecond)
	}
}

// sendReceiveEverywhere sends a message through every node and receives
// them all through every node in turn.
func sendReceiveEverywhere(t *testing.T, nodes map[uint64]*node.Node, queue string) {
	t.Helper()
	ctx := testCtx(t)
	sent := map[string]bool{}
	for id, n := range nodes {
		c := qv1.NewQueueServiceClient(dial(t, n.GRPCAddr()))
		for i := range 4 {
			body := fmt.Sprintf("from %d #%d", id, i)
			if _, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: queue, Body: body, PartitionKey: body}); err != nil {
				t.Fatalf("send through node %d: %v", id, err)
			}
			sent[body] = true
		}
	}
	got := map[string]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < len(sent) && time.Now().Before(deadline) {
		for id, n := range nodes {
			c := qv1.NewQueueServiceClient(dial(t, n.GRPCAddr()))
			r, err := c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: queue, MaxMessages: 10})
			if err != nil {
				t.Fatalf("receive through node %d: %v", id, err)
			}
			for _, m := range r.GetMessages() {
				got[m.GetBody()] = true
				if _, err := c.DeleteMessage(ctx, &qv1.DeleteMessageRequest{Queue: queue, ReceiptHandle: m.GetReceiptHandle()}); err != nil {
					t.Fatalf("delete through node %d: %v", id, err)
				}
			}
		}
	}
	if len(got) != len(sent) {
		t.Fatalf("received %d of %d messages", len(got), len(sent))
	}
}

// TestReplicaSetsSmallerThanCluster: 5 nodes with the default replication
// factor 3 put each shard on 3 of them (every node observes the metadata
// shard as a learner or votes in it); each node holds its share of the
// data shards' replicas, and sends and receives work through every node,
// whether it holds the queue's shards or not.
func TestReplicaSetsSmallerThanCluster(t *testing.T) {
	const shards = 6
	c := startMemCluster(t, 5, shards)
	waitLong(t, 30*time.Second, func() error {
		cfgs, err := c.configs(shards)
		if err != nil {
			return err
		}
		load := map[uint64]int{}
		for g, st := range cfgs {
			if len(st.Voters) != 3 {
				return fmt.Errorf("shard %d: voters %v", g, st.Voters)
			}
			if g == router.MetadataShard {
				if len(st.Members) != 5 {
					return fmt.Errorf("metadata shard: voters %v learners %v, want every node", st.Voters, st.Learners)
				}
				continue
			}
			if len(st.Learners) != 0 {
				return fmt.Errorf("shard %d: learners %v", g, st.Learners)
			}
			for _, v := range st.Voters {
				load[v]++
			}
		}
		for id := uint64(1); id <= 5; id++ {
			if load[id] != 3 { // 5 data shards x 3 replicas over 5 nodes
				return fmt.Errorf("replicas per node %v", load)
			}
		}
		return nil
	})
	// The nodes host exactly their shards (once each applied its
	// configurations).
	waitLong(t, 30*time.Second, func() error {
		for id, n := range c.nodes {
			hosted := 0
			for g := uint64(0); g < shards; g++ {
				if router.IsMember(n.Host(), id, g) {
					hosted++
				}
			}
			if hosted != 4 { // the metadata shard and 3 data shards
				return fmt.Errorf("node %d hosts %d shards", id, hosted)
			}
		}
		return nil
	})
	r, err := c.nodesResp()
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range r.GetReplicaSets() {
		if len(rs.GetVoters()) != 3 || rs.GetReplicationFactor() != 3 {
			t.Fatalf("replica set record %v", rs)
		}
	}
	cq := qv1.NewQueueServiceClient(dial(t, c.nodes[4].GRPCAddr()))
	if _, err := cq.CreateQueue(testCtx(t), &qv1.CreateQueueRequest{Name: "spread", Attributes: &qv1.QueueAttributes{Partitions: 5}}); err != nil {
		t.Fatal(err)
	}
	sendReceiveEverywhere(t, c.nodes, "spread")
	// GetCluster shows the replica sets and the whole shard count on a
	// node that hosts only some of the shards.
	gc, err := qv1.NewClusterServiceClient(dial(t, c.nodes[5].GRPCAddr())).GetCluster(testCtx(t), &qv1.GetClusterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if gc.GetShardCount() != shards || len(gc.GetShards()) != 4 || len(gc.GetReplicaSets()) != shards {
		t.Fatalf("GetCluster: shard count %d, shards %d, replica sets %d", gc.GetShardCount(), len(gc.GetShards()), len(gc.GetReplicaSets()))
	}
}

// TestMoveReplicaResumesAfterCoordinatorStops: a move is recorded, then
// the coordinator (the metadata shard's leader) stops at once; the next
// coordinator and the shard's leader finish it: the new node votes, the
// old one is out, and the queue's messages are all there.
func TestMoveReplicaResumesAfterCoordinatorStops(t *testing.T) {
	const shards = 2
	c := startMemCluster(t, 4, shards)
	cfgs := c.waitMetadataMembers(t, shards, 4)
	// Shard 1 is on {2,3,4} (initial placement); move 4's replica to 1.
	if !slices.Equal(cfgs[1].Voters, []uint64{2, 3, 4}) {
		t.Fatalf("shard 1 voters %v", cfgs[1].Voters)
	}
	cq := qv1.NewQueueServiceClient(dial(t, c.nodes[1].GRPCAddr()))
	ctx := testCtx(t)
	if _, err := cq.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "moved"}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := cq.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "moved", Body: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	coordinator := cfgs[0].LeaderID
	admin := qv1.NewClusterServiceClient(dial(t, c.nodes[1].GRPCAddr()))
	mv, err := admin.MoveReplica(ctx, &qv1.MoveReplicaRequest{Shard: 1, FromNode: 4, ToNode: 1})
	if err != nil {
		t.Fatal(err)
	}
	if mv.GetReplicaSet().GetPendingNode() != 1 || mv.GetReplicaSet().GetPendingRemoveNode() != 4 {
		t.Fatalf("move recorded as %v", mv.GetReplicaSet())
	}
	// A second change of the same shard waits for the first.
	if _, err := admin.MoveReplica(ctx, &qv1.MoveReplicaRequest{Shard: 1, FromNode: 3, ToNode: 1}); err == nil {
		t.Fatal("a second move of shard 1 was accepted while the first is under way")
	}
	c.stop(coordinator)
	if coordinator == 1 || coordinator == 4 { // the move needs both: bring it back
		c.nodes[coordinator] = c.start(coordinator)
	}
	waitLong(t, 60*time.Second, func() error {
		r, err := c.nodesResp()
		if err != nil {
			return err
		}
		rs := r.GetReplicaSets()[1]
		if !slices.Equal(rs.GetVoters(), []uint64{1, 2, 3}) || rs.GetPendingNode() != 0 {
			return fmt.Errorf("shard 1's replica set %v", rs)
		}
		return nil
	})
	var via *node.Node
	for _, n := range c.nodes {
		via = n
	}
	got := 0
	for got < 50 {
		r, err := qv1.NewQueueServiceClient(dial(t, via.GRPCAddr())).ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "moved", MaxMessages: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetMessages()) == 0 {
			t.Fatalf("received %d of 50 messages after the move", got)
		}
		got += len(r.GetMessages())
	}
}

// TestDrainNode: `cluster remove` (drain) of a node moves each of its
// replicas to another node, then the node is REMOVED; every shard keeps 3
// voters, none of them the drained node.
func TestDrainNode(t *testing.T) {
	const shards = 3
	c := startMemCluster(t, 4, shards)
	c.waitMetadataMembers(t, shards, 4)
	admin := qv1.NewClusterServiceClient(dial(t, c.nodes[4].GRPCAddr()))
	if _, err := admin.RemoveNode(testCtx(t), &qv1.RemoveNodeRequest{NodeId: 2}); err != nil {
		t.Fatal(err)
	}
	waitLong(t, 90*time.Second, func() error {
		r, err := c.nodesResp()
		if err != nil {
			return err
		}
		if st := r.GetNodes()[1].GetState(); st != qv1.NodeState_NODE_STATE_REMOVED {
			return fmt.Errorf("node 2 is %v; replica sets %v", st, r.GetReplicaSets())
		}
		for _, rs := range r.GetReplicaSets() {
			if len(rs.GetVoters()) != 3 || slices.Contains(rs.GetVoters(), 2) || slices.Contains(rs.GetLearners(), 2) || rs.GetPendingNode() != 0 {
				return fmt.Errorf("replica set %v", rs)
			}
		}
		return nil
	})
	c.stop(2)
	cq := qv1.NewQueueServiceClient(dial(t, c.nodes[1].GRPCAddr()))
	if _, err := cq.CreateQueue(testCtx(t), &qv1.CreateQueueRequest{Name: "after-drain", Attributes: &qv1.QueueAttributes{Partitions: 2}}); err != nil {
		t.Fatal(err)
	}
	sendReceiveEverywhere(t, c.nodes, "after-drain")
}

// TestAutoRepair: with --auto-repair, a node silent for longer is drained:
// its replicas are recreated on the other nodes (each shard back to 3
// voters) and it is removed, all without an operator.
func TestAutoRepair(t *testing.T) {
	const shards = 3
	c := startMemCluster(t, 4, shards, func(cfg *node.Config) { cfg.AutoRepair = 3 * time.Second })
	c.waitMetadataMembers(t, shards, 4)
	cq := qv1.NewQueueServiceClient(dial(t, c.nodes[1].GRPCAddr()))
	if _, err := cq.CreateQueue(testCtx(t), &qv1.CreateQueueRequest{Name: "repaired", Attributes: &qv1.QueueAttributes{Partitions: 2}}); err != nil {
		t.Fatal(err)
	}
	c.stop(4) // node 4 holds replicas of both data shards (initial placement)
	waitLong(t, 90*time.Second, func() error {
		r, err := c.nodesResp()
		if err != nil {
			return err
		}
		if st := r.GetNodes()[3].GetState(); st != qv1.NodeState_NODE_STATE_REMOVED {
			return fmt.Errorf("node 4 is %v; replica sets %v", st, r.GetReplicaSets())
		}
		for _, rs := range r.GetReplicaSets() {
			if !slices.Equal(rs.GetVoters(), []uint64{1, 2, 3}) || rs.GetPendingNode() != 0 {
				return fmt.Errorf("replica set %v", rs)
			}
		}
		return nil
	})
	sendReceiveEverywhere(t, c.nodes, "repaired")
}

// waitMetadataMembers waits until the metadata shard has n members (every
// node observes it) and returns the groups' configurations then.
func (c *memCluster) waitMetadataMembers(t *testing.T, shards, n int) map[uint64]raftnode.GroupStatus {
	t.Helper()
	var cfgs map[uint64]raftnode.GroupStatus
	waitLong(t, 30*time.Second, func() error {
		var err error
		if cfgs, err = c.configs(shards); err != nil {
			return err
		}
		if len(cfgs[0].Members) != n {
			return fmt.Errorf("metadata shard members %v", cfgs[0].Members)
		}
		return nil
	})
	return cfgs
}

// TestRemovedReplicaDroppedAndReAdded: a node whose replica moved away
// drops its raft group (no longer hosted); moved back later, it hosts the
// shard again from nothing and catches up, and the node the second move
// took the replica from drops its group in turn.
func TestRemovedReplicaDroppedAndReAdded(t *testing.T) {
	const shards = 2
	c := startMemCluster(t, 4, shards)
	cfgs := c.waitMetadataMembers(t, shards, 4)
	if !slices.Equal(cfgs[1].Voters, []uint64{2, 3, 4}) { // initial placement
		t.Fatalf("shard 1 voters %v", cfgs[1].Voters)
	}
	ctx := testCtx(t)
	cq := qv1.NewQueueServiceClient(dial(t, c.nodes[1].GRPCAddr()))
	if _, err := cq.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "dropped"}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := cq.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "dropped", Body: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	admin := qv1.NewClusterServiceClient(dial(t, c.nodes[1].GRPCAddr()))
	move := func(from, to uint64, voters []uint64) {
		t.Helper()
		waitLong(t, 30*time.Second, func() error {
			_, err := admin.MoveReplica(ctx, &qv1.MoveReplicaRequest{Shard: 1, FromNode: from, ToNode: to})
			return err
		})
		waitLong(t, 60*time.Second, func() error {
			r, err := c.nodesResp()
			if err != nil {
				return err
			}
			if rs := r.GetReplicaSets()[1]; !slices.Equal(rs.GetVoters(), voters) || rs.GetPendingNode() != 0 {
				return fmt.Errorf("shard 1's replica set %v", rs)
			}
			return nil
		})
	}
	dropped := func(id uint64) {
		t.Helper()
		waitLong(t, 30*time.Second, func() error {
			if _, err := c.nodes[id].Host().Status(1); !errors.Is(err, raftnode.ErrGroupNotFound) {
				return fmt.Errorf("node %d still hosts shard 1 (%v)", id, err)
			}
			return nil
		})
	}
	move(4, 1, []uint64{1, 2, 3})
	dropped(4)
	move(3, 4, []uint64{1, 2, 4})
	dropped(3)
	waitLong(t, 30*time.Second, func() error {
		st, err := c.nodes[4].Host().Status(1)
		if err != nil {
			return err
		}
		lead, err := c.configs(shards)
		if err != nil {
			return err
		}
		if !slices.Contains(st.Voters, 4) || st.Applied < lead[1].Applied {
			return fmt.Errorf("node 4's replica: voters %v applied %d, leader applied %d", st.Voters, st.Applied, lead[1].Applied)
		}
		return nil
	})
	got := 0
	for got < 20 {
		r, err := qv1.NewQueueServiceClient(dial(t, c.nodes[4].GRPCAddr())).ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "dropped", MaxMessages: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetMessages()) == 0 {
			t.Fatalf("received %d of 20 messages after the moves", got)
		}
		got += len(r.GetMessages())
	}
}

// TestRemovedReplicaDroppedAfterRestart: a node that stops after its
// replica moved away, before dropping it, hosts the replica again at
// restart and then drops it; before, the replica's keys stayed on its disk
// for good (nothing hosted the group, so nothing dropped it).
func TestRemovedReplicaDroppedAfterRestart(t *testing.T) {
	const shards = 2
	c := startMemCluster(t, 4, shards, func(cfg *node.Config) { cfg.DropRemovedAfter = time.Hour })
	cfgs := c.waitMetadataMembers(t, shards, 4)
	if !slices.Equal(cfgs[1].Voters, []uint64{2, 3, 4}) { // initial placement
		t.Fatalf("shard 1 voters %v", cfgs[1].Voters)
	}
	ctx := testCtx(t)
	admin := qv1.NewClusterServiceClient(dial(t, c.nodes[1].GRPCAddr()))
	waitLong(t, 30*time.Second, func() error {
		_, err := admin.MoveReplica(ctx, &qv1.MoveReplicaRequest{Shard: 1, FromNode: 4, ToNode: 1})
		return err
	})
	waitLong(t, 60*time.Second, func() error {
		r, err := c.nodesResp()
		if err != nil {
			return err
		}
		if rs := r.GetReplicaSets()[1]; !slices.Equal(rs.GetVoters(), []uint64{1, 2, 3}) || rs.GetPendingNode() != 0 {
			return fmt.Errorf("shard 1's replica set %v", rs)
		}
		return nil
	})
	// Node 4's metadata replica holds the finished move (so at restart
	// its records no longer name it for shard 1), and it still hosts its
	// replica (DropRemovedAfter keeps it).
	lead, err := c.configs(shards)
	if err != nil {
		t.Fatal(err)
	}
	waitLong(t, 30*time.Second, func() error {
		st, err := c.nodes[4].Host().Status(router.MetadataShard)
		if err != nil {
			return err
		}
		if st.Applied < lead[router.MetadataShard].Applied {
			return fmt.Errorf("node 4's metadata applied %d, leader's %d", st.Applied, lead[router.MetadataShard].Applied)
		}
		return nil
	})
	if stored, err := c.nodes[4].Host().HasStoredGroup(1); err != nil || !stored {
		t.Fatalf("node 4 holds shard 1 before its restart: %v, %v", stored, err)
	}
	c.stop(4)
	base := c.cfg
	c.cfg = func(id uint64) node.Config {
		cfg := base(id)
		cfg.DropRemovedAfter = 0 // the default: three election timeouts
		return cfg
	}
	c.nodes[4] = c.start(4)
	waitLong(t, 30*time.Second, func() error {
		stored, err := c.nodes[4].Host().HasStoredGroup(1)
		if err != nil {
			return err
		}
		if stored {
			return errors.New("node 4 still stores shard 1's replica")
		}
		return nil
	})
	if _, err := c.nodes[4].Host().Status(1); !errors.Is(err, raftnode.ErrGroupNotFound) {
		t.Fatalf("node 4 hosts shard 1 after dropping it: %v", err)
	}
	if stored, err := c.nodes[2].Host().HasStoredGroup(1); err != nil || !stored {
		t.Fatalf("node 2 (a member) lost shard 1: %v, %v", stored, err)
	}
}

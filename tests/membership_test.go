package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// TestJoinNodeUnderLoad: three nodes serve a steady send load; a fourth
// starts empty with --join, is admitted under a new id and observes the
// metadata shard as a learner (with RF 3 and one data shard there is
// nothing to rebalance onto it); node 1 is then retired (cluster remove)
// under the same load: each of its replicas moves to the new node
// (learner, caught up, then promoted in the change that removes node 1),
// and node 1 is killed; no acknowledged message is lost, and the new node
// serves the queue.
func TestJoinNodeUnderLoad(t *testing.T) {
	c := startCluster(t, 3, "--shards", "2", "--log-level", "info")
	waitReady(t, c.client(1))
	createQueueOn(t, c.client(1), "grow")

	acks := newAckLog()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	live := func() []uint64 { return []uint64{1, 2, 3} }
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() { produce(ctx, c, live, "grow", w, 1<<30, acks) })
	}
	checkFor(t, 30*time.Second, func() error {
		if n := acks.count(); n < 50 {
			return fmt.Errorf("%d sends acknowledged", n)
		}
		return nil
	})

	joiner := startServe(t, t.TempDir(), "--join", c.raftAddr(2), "--raft-addr", freePort(t), "--log-level", "info")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("joiner's log:\n%s", joiner.stderr.String())
			for id, p := range c.procs {
				t.Logf("node %d's log:\n%s", id, p.stderr.String())
			}
		}
	})
	admin := c.clusterClient(1)
	var newID uint64
	checkFor(t, 90*time.Second, func() error {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := admin.ListNodes(cctx, &qv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		if len(r.GetNodes()) != 4 {
			return fmt.Errorf("nodes %v", r.GetNodes())
		}
		n := r.GetNodes()[3]
		if n.GetId() != 4 || n.GetIncarnation() == 0 {
			return fmt.Errorf("new node record %v", n)
		}
		newID = n.GetId()
		if n.GetState() != qv1.NodeState_NODE_STATE_ACTIVE {
			return fmt.Errorf("node 4 is %v; replica sets %v", n.GetState(), r.GetReplicaSets())
		}
		for _, rs := range r.GetReplicaSets() {
			want := []uint64(nil)
			if rs.GetShard() == 0 {
				want = []uint64{newID}
			}
			if !slices.Equal(rs.GetVoters(), []uint64{1, 2, 3}) || !slices.Equal(rs.GetLearners(), want) || rs.GetPendingNode() != 0 {
				return fmt.Errorf("replica set %v", rs)
			}
		}
		return nil
	})
	// The new node's own view: a learner of the metadata shard, the data
	// shard on the other nodes.
	checkFor(t, 30*time.Second, func() error {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := qv1.NewClusterServiceClient(joiner.grpcConn(t)).GetCluster(cctx, &qv1.GetClusterRequest{})
		if err != nil {
			return err
		}
		if r.GetNodeId() != newID || len(r.GetShards()) != 1 || r.GetShardCount() != 2 {
			return fmt.Errorf("node %d, shards %v", r.GetNodeId(), r.GetShards())
		}
		sh := r.GetShards()[0]
		if !slices.Equal(sh.GetVoters(), []uint64{1, 2, 3}) || !slices.Equal(sh.GetLearners(), []uint64{4}) || sh.GetLeader() == 0 {
			return fmt.Errorf("shard %d: voters %v learners %v leader %d", sh.GetId(), sh.GetVoters(), sh.GetLearners(), sh.GetLeader())
		}
		return nil
	})
	// The operator's view: `quorumq cluster nodes` and `cluster status`.
	nodes := cli(t, joiner, "cluster", "nodes")
	if !regexp.MustCompile(`(?m)^4\s+active\s+127\.0\.0\.1:\d+.*\s0$`).MatchString(nodes) ||
		!regexp.MustCompile(`(?m)^0\s+3\s+1,2,3\s+4\s+-$`).MatchString(nodes) ||
		!regexp.MustCompile(`(?m)^1\s+3\s+1,2,3\s+-\s+-$`).MatchString(nodes) {
		t.Fatalf("cluster nodes:\n%s", nodes)
	}
	// Retire node 1 while the load goes on: its replicas move to node 4
	// (a shard it leads hands leadership over first).
	if out := cli(t, joiner, "cluster", "remove", "1"); !strings.Contains(out, "node 1: draining") {
		t.Fatalf("cluster remove 1: %s", out)
	}
	checkFor(t, 60*time.Second, func() error {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := c.clusterClient(2).ListNodes(cctx, &qv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		if r.GetNodes()[0].GetState() != qv1.NodeState_NODE_STATE_REMOVED {
			return fmt.Errorf("node 1 is %v; replica sets %v", r.GetNodes()[0].GetState(), r.GetReplicaSets())
		}
		for _, rs := range r.GetReplicaSets() {
			if !slices.Equal(rs.GetVoters(), []uint64{2, 3, 4}) || rs.GetPendingNode() != 0 {
				return fmt.Errorf("replica set %v", rs)
			}
		}
		return nil
	})
	before := acks.count()
	checkFor(t, 30*time.Second, func() error {
		if n := acks.count(); n < before+50 {
			return fmt.Errorf("%d sends acknowledged since the removal", n-before)
		}
		return nil
	})
	stop()
	wg.Wait()

	// Node 1, removed, goes; 2, 3 and the new node are the configuration.
	c.kill(1)
	got := drain(t, joiner.client(t), "grow")
	acks.mu.Lock()
	defer acks.mu.Unlock()
	var lost []string
	for id := range acks.ids {
		if !got[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages lost, e.g. %v", len(lost), len(acks.ids), lost[:min(5, len(lost))])
	}
	when := slices.Clone(acks.when)
	slices.SortFunc(when, func(a, b time.Time) int { return a.Compare(b) })
	var gap time.Duration
	for i := 1; i < len(when); i++ {
		gap = max(gap, when[i].Sub(when[i-1]))
	}
	t.Logf("%d acknowledged sends, all received through the joined node after node 1 was killed; longest gap between acknowledgements %v",
		len(acks.ids), gap)
}

// checkFor polls cond until it returns nil or timeout passes.
func checkFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		<-time.After(100 * time.Millisecond)
	}
}

// TestWipedNodeIsFencedAndRejoins: node 2 loses its disk (kill -9, data
// directory wiped) and is restarted as before, with its old id and
// --peers: the other nodes refuse its raft messages (another incarnation
// of node 2), so it cannot vote with the state it lost, and it says so.
// Wiped again and started with --join, it becomes node 4 (an observer of
// the metadata shard); `cluster remove 2` moves the old id's replicas to
// node 4, and with node 1 killed too, nodes 3 and 4 still serve every
// acknowledged message.
func TestWipedNodeIsFencedAndRejoins(t *testing.T) {
	c := startCluster(t, 3, "--shards", "2")
	waitReady(t, c.client(1))
	createQueueOn(t, c.client(1), "wiped")
	acks := newAckLog()
	produce(context.Background(), c, func() []uint64 { return []uint64{1, 3} }, "wiped", 0, 100, acks)

	wipe := func() {
		c.kill(2)
		if err := os.RemoveAll(c.dirs[2]); err != nil {
			t.Fatal(err)
		}
	}
	wipe()
	p := c.start(2) // same id, same --peers, empty disk
	checkFor(t, 60*time.Second, func() error {
		if !strings.Contains(p.stderr.String(), "this node can never vote again under its id") {
			return errors.New("the wiped node does not report that it is fenced")
		}
		return nil
	})
	// Node 2 may have led a shard before it was killed: 1 and 3 elect a
	// leader among themselves once its lease is over (the views can lag
	// until then), and the fenced node 2 can never win one.
	checkFor(t, 30*time.Second, func() error {
		for _, id := range []uint64{1, 3} {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := c.clusterClient(id).GetCluster(cctx, &qv1.GetClusterRequest{})
			cancel()
			if err != nil {
				return err
			}
			for _, sh := range r.GetShards() {
				if sh.GetLeader() == 2 || sh.GetLeader() == 0 {
					return fmt.Errorf("node %d sees shard %d led by %d", id, sh.GetId(), sh.GetLeader())
				}
			}
		}
		return nil
	})

	wipe()
	joiner := startServe(t, c.dirs[2], "--join", c.raftAddr(1), "--raft-addr", c.raftAddr(2))
	checkFor(t, 90*time.Second, func() error {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := c.clusterClient(1).ListNodes(cctx, &qv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		if len(r.GetNodes()) != 4 || r.GetNodes()[3].GetState() != qv1.NodeState_NODE_STATE_ACTIVE {
			return fmt.Errorf("nodes %v", r.GetNodes())
		}
		if r.GetNodes()[1].GetIncarnation() == r.GetNodes()[3].GetIncarnation() {
			return errors.New("the new node has the old node's incarnation")
		}
		for _, rs := range r.GetReplicaSets() {
			if !slices.Equal(rs.GetVoters(), []uint64{1, 2, 3}) || rs.GetPendingNode() != 0 {
				return fmt.Errorf("replica set %v", rs)
			}
		}
		return nil
	})
	// Retire the lost node 2: its replicas move to node 4, and {1, 3, 4} is the
	// configuration, so 3 and 4 alone are a quorum once 1 is killed.
	if out := cli(t, joiner, "cluster", "remove", "2"); !strings.Contains(out, "node 2: draining") {
		t.Fatalf("cluster remove 2: %s", out)
	}
	checkFor(t, 60*time.Second, func() error {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := c.clusterClient(1).ListNodes(cctx, &qv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		if r.GetNodes()[1].GetState() != qv1.NodeState_NODE_STATE_REMOVED {
			return fmt.Errorf("node 2 is %v; replica sets %v", r.GetNodes()[1].GetState(), r.GetReplicaSets())
		}
		for _, rs := range r.GetReplicaSets() {
			if !slices.Equal(rs.GetVoters(), []uint64{1, 3, 4}) || rs.GetPendingNode() != 0 {
				return fmt.Errorf("replica set %v", rs)
			}
		}
		return nil
	})
	c.kill(1)
	got := drain(t, joiner.client(t), "wiped")
	for id := range acks.ids {
		if !got[id] {
			t.Fatalf("acknowledged message %s lost (%d of %d received)", id, len(got), len(acks.ids))
		}
	}
}

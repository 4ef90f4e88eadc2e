package node_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server/node"
)

// TestJoiningNodeNeverHeardFromIsRemoved: JoinCluster admits two nodes
// (JOINING, new ids) that never start, as a joiner that lost the answer or
// its disk leaves behind. The one an operator removes (`cluster remove`)
// is removed at once; the other, never heard from, is never made active
// and is removed by the coordinator once the move timeout has passed since
// it became an observer of the metadata shard. Neither stays one.
func TestJoiningNodeNeverHeardFromIsRemoved(t *testing.T) {
	const shards, moveTimeout = 2, 8 * time.Second
	c := startMemCluster(t, 3, shards, func(cfg *node.Config) { cfg.MoveTimeout = moveTimeout })
	c.waitMetadataMembers(t, shards, 3)
	ctx := testCtx(t)
	cl := qv1.NewClusterServiceClient(dial(t, c.nodes[1].GRPCAddr()))
	var orphans []uint64
	var admitted time.Time
	for i := range 2 {
		var resp *qv1.JoinClusterResponse
		waitLong(t, 30*time.Second, func() error { // a new cluster records its nodes first
			var err error
			resp, err = cl.JoinCluster(ctx, &qv1.JoinClusterRequest{PeerAddress: freeAddr(t), Incarnation: uint64(1000 + i)})
			return err
		})
		if i == 0 {
			admitted = time.Now()
		}
		if st := resp.GetNode().GetState(); st != qv1.NodeState_NODE_STATE_JOINING {
			t.Fatalf("admitted node %v", resp.GetNode())
		}
		orphans = append(orphans, resp.GetNode().GetId())
	}
	first, second := orphans[0], orphans[1]
	if _, err := cl.RemoveNode(ctx, &qv1.RemoveNodeRequest{NodeId: second}); err != nil {
		t.Fatalf("cluster remove %d (joining): %v", second, err)
	}
	states := func() (map[uint64]qv1.NodeState, error) {
		r, err := c.nodesResp()
		if err != nil {
			return nil, err
		}
		out := map[uint64]qv1.NodeState{}
		for _, n := range r.GetNodes() {
			out[n.GetId()] = n.GetState()
		}
		return out, nil
	}
	waitLong(t, 30*time.Second, func() error {
		st, err := states()
		if err != nil {
			return err
		}
		if st[second] != qv1.NodeState_NODE_STATE_REMOVED {
			return fmt.Errorf("node %d (cluster remove) is %v", second, st[second])
		}
		return nil
	})
	if time.Since(admitted) < moveTimeout {
		// Removed on request, not by the timeout; the other one is still
		// joining (never active: it was never heard from).
		st, err := states()
		if err != nil {
			t.Fatal(err)
		}
		if st[first] != qv1.NodeState_NODE_STATE_JOINING {
			t.Fatalf("node %d, never heard from, %v after admission: %v, want JOINING", first, time.Since(admitted), st[first])
		}
	}
	waitLong(t, 60*time.Second, func() error {
		st, err := states()
		if err != nil {
			return err
		}
		if st[first] == qv1.NodeState_NODE_STATE_ACTIVE {
			return fmt.Errorf("node %d, never heard from, became active", first) // and stays so: the wait fails
		}
		if st[first] != qv1.NodeState_NODE_STATE_REMOVED {
			return fmt.Errorf("node %d, never heard from, is %v", first, st[first])
		}
		cfgs, err := c.configs(shards)
		if err != nil {
			return err
		}
		if m := cfgs[0].Members; slices.Contains(m, first) || slices.Contains(m, second) {
			return fmt.Errorf("metadata shard members %v", m)
		}
		return nil
	})
	if d := time.Since(admitted); d < moveTimeout {
		t.Fatalf("node %d removed %v after admission, before the move timeout %v", first, d, moveTimeout)
	}
}

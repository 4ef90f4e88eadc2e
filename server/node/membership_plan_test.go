package node

import (
	"slices"
	"testing"

	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Nodes 4 and 5 join a 3-node cluster of 9 data shards (RF 3): moves
// picked one at a time bring every node within one replica of the others,
// each move narrowing the spread, and no shard ever holds a node twice.
func TestRebalanceConverges(t *testing.T) {
	var recs []*storepb.NodeRecord
	for id := uint64(1); id <= 5; id++ {
		recs = append(recs, &storepb.NodeRecord{Id: id, State: storepb.NodeState_NODE_STATE_ACTIVE})
	}
	var sets []*storepb.ReplicaSetRecord
	for g := range uint64(10) {
		sets = append(sets, &storepb.ReplicaSetRecord{Shard: g, ReplicationFactor: 3, Voters: store.InitialPlacement([]uint64{1, 2, 3}, g, 3)})
	}
	moves := 0
	for {
		load := replicaLoad(recs, sets)
		rs, p := rebalanceMove(sets, load)
		if p == nil {
			break
		}
		if rs.GetShard() == 0 {
			t.Fatal("the metadata shard was rebalanced")
		}
		v := slices.DeleteFunc(slices.Clone(rs.Voters), func(id uint64) bool { return id == p.GetRemoveNodeId() })
		if slices.Contains(v, p.GetNodeId()) || len(v) != 2 {
			t.Fatalf("move %v on shard %v", p, rs.Voters)
		}
		rs.Voters = append(v, p.GetNodeId())
		slices.Sort(rs.Voters)
		if moves++; moves > 20 {
			t.Fatal("no convergence")
		}
	}
	load := replicaLoad(recs, sets)
	lo, hi := 100, 0
	for _, n := range load {
		lo, hi = min(lo, n), max(hi, n)
	}
	if hi-lo > 1 || moves != 10 { // 27 replicas: 5 or 6 each, from 9 each on 3 nodes
		t.Fatalf("after %d moves: %v", moves, load)
	}
}

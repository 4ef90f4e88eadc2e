package node_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/quorumq/quorumq/raftnode"
)

// TestShardAboveReplicationFactorShrinks: a data shard that got a fourth
// voter outside the coordinator (raft's configuration is what counts: the
// records follow it) is brought back to its replication factor of 3; the
// node that gave its replica up drops its group.
func TestShardAboveReplicationFactorShrinks(t *testing.T) {
	const shards = 2
	c := startMemCluster(t, 4, shards)
	cfgs := c.waitMetadataMembers(t, shards, 4)
	if !slices.Equal(cfgs[1].Voters, []uint64{2, 3, 4}) { // initial placement
		t.Fatalf("shard 1 voters %v", cfgs[1].Voters)
	}
	lead := c.nodes[cfgs[1].LeaderID]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := lead.Host().ChangeMembers(ctx, 1, raftnode.MemberChange{Kind: raftnode.AddVoter, ID: 1}); err != nil {
		t.Fatal(err)
	}
	var gaveUp uint64
	waitLong(t, 60*time.Second, func() error {
		cfgs, err := c.configs(shards)
		if err != nil {
			return err
		}
		if v := cfgs[1].Voters; len(v) != 3 || !slices.Contains(v, 1) {
			return fmt.Errorf("shard 1 voters %v", v)
		}
		r, err := c.nodesResp()
		if err != nil {
			return err
		}
		rs := r.GetReplicaSets()[1]
		if !slices.Equal(rs.GetVoters(), cfgs[1].Voters) || rs.GetPendingNode() != 0 {
			return fmt.Errorf("shard 1's replica set %v, configuration %v", rs, cfgs[1].Voters)
		}
		for id := uint64(2); id <= 4; id++ {
			if !slices.Contains(rs.GetVoters(), id) {
				gaveUp = id
			}
		}
		return nil
	})
	waitLong(t, 30*time.Second, func() error {
		if _, err := c.nodes[gaveUp].Host().Status(1); !errors.Is(err, raftnode.ErrGroupNotFound) {
			return fmt.Errorf("node %d still hosts shard 1 (%v)", gaveUp, err)
		}
		return nil
	})
}

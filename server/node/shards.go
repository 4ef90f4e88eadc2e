package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumq/quorumq/internal/keys"
	"github.com/quorumq/quorumq/server/router"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// checkShardCount records the shard count in a new data directory and
// refuses another one later (current: the cluster's count since shards
// were added, as the local metadata replica has it; 0: none added): the
// queues made before the first AddShards are placed by a function of the
// bootstrap count, so another count would hide their messages. The current
// count is accepted too (an operator who updated --shards after
// add-shards); the placement follows the metadata shard either way.
func checkShardCount(db *pebble.DB, shards, current int) error {
	k := keys.NodeShardCount()
	v, closer, err := db.Get(k)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(shards))
		if err := db.Set(k, b[:], pebble.Sync); err != nil {
			return fmt.Errorf("record shard count: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("read shard count: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return fmt.Errorf("shard count record is %d bytes, want 8", len(v))
	}
	if was := binary.BigEndian.Uint64(v); was != uint64(shards) && (current == 0 || shards != current) {
		if current > 0 {
			return fmt.Errorf("--shards %d: this data directory was created with --shards %d and the cluster has %d shards now (cluster add-shards); give either", shards, was, current)
		}
		return fmt.Errorf("--shards %d: this data directory was created with --shards %d; start it with that (it learns shards added since, by `quorumq cluster add-shards`, from the cluster)", shards, was)
	}
	return nil
}

// balanceEvery is how often a storage node checks the leader spread.
const balanceEvery = 5 * time.Second

// balanceLeaders keeps leaderships spread over the storage nodes: elections
// put leaders anywhere, and a node that returns after a crash leads
// nothing. Every few seconds, a node that leads more than its share
// (shards / nodes, rounded up) hands one shard to the member that leads
// the fewest. Each node decides from its own replicas' status, so no
// coordinator is needed; a transfer at a time keeps it gentle.
func (n *Node) balanceLeaders(ctx context.Context) {
	if !n.multiNode() {
		return
	}
	every := n.cfg.BalanceInterval
	if every <= 0 {
		every = balanceEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.balanceOnce(ctx)
	}
}

func (n *Node) balanceOnce(ctx context.Context) {
	nodes := n.members()
	if n.shardCount() < 2 {
		return
	}
	if recs, err := n.metaStore().Nodes(); err == nil && len(recs) > 0 {
		nodes = nodes[:0:0] // nodes joined or removed since start (membership.go)
		for _, r := range recs {
			if r.GetState() == storepb.NodeState_NODE_STATE_ACTIVE {
				nodes = append(nodes, r.GetId())
			}
		}
	}
	if len(nodes) == 0 {
		return
	}
	// Not the leadership of a shard with a membership change under way:
	// the change's proposals would be dropped while it moves (the raft
	// host also skips a transfer while a change is in its log).
	changing := map[uint64]bool{}
	if sets, err := n.metaStore().ReplicaSets(); err == nil {
		for _, rs := range sets {
			changing[rs.GetShard()] = rs.GetPending() != nil
		}
	}
	// Leaders of every shard: this node's replicas', else the other nodes'
	// answers (replica sets smaller than the cluster).
	led := map[uint64]int{}
	var mine []uint64
	for _, g := range n.groups() {
		if !router.IsMember(n.host, n.cfg.NodeID, g) {
			if n.others != nil {
				if l := n.others.KnownLeader(g); l != 0 {
					led[l]++
				}
			}
			continue
		}
		st, err := n.host.Status(g)
		if err != nil || st.LeaderID == 0 {
			return // an election is running: wait for a settled picture
		}
		led[st.LeaderID]++
		if st.LeaderID == n.cfg.NodeID {
			mine = append(mine, g)
		}
	}
	share := (n.shardCount() + len(nodes) - 1) / len(nodes)
	if len(mine) <= share {
		return
	}
	online := map[uint64]bool{}
	if n.tr != nil {
		for id, ps := range n.tr.PeerStatus() {
			online[id] = ps.Connected
		}
	}
	for i := len(mine) - 1; i >= 0; i-- {
		g := mine[i]
		st, err := n.host.Status(g)
		if err != nil || !st.IsLeader || st.Joint || changing[g] {
			continue
		}
		var to uint64
		for _, m := range st.Voters { // a learner cannot lead
			if m == n.cfg.NodeID || !slices.Contains(nodes, m) || (n.tr != nil && !online[m]) {
				continue
			}
			if to == 0 || led[m] < led[to] {
				to = m
			}
		}
		if to == 0 || led[to]+1 > share {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if err := n.host.TransferLeadership(tctx, g, to); err != nil {
			n.log.Debug("leader rebalancing: transfer failed", "shard", g, "to", to, "err", err)
			return
		}
		n.log.Info("leader rebalancing: transferred", "shard", g, "to", to, "led", len(mine), "share", share)
		return
	}
}

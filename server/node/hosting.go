package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Which shards a storage node hosts (issue 17). Each shard has a replica
// set (metadata shard records, 0x41): its voters and learners, and the
// change under way. A node runs the raft group of every shard whose set
// names it, and of the metadata shard always: every node holds a replica
// of it (a voter, or a learner that only observes) to read the membership
// records locally. The queue server and store of every shard exist on
// every node (they cost nothing while their group is not running); the
// router asks MemberView which node leads a shard.

// defaultReplicationFactor: nodes per shard when Config.ReplicationFactor
// is 0.
const defaultReplicationFactor = 3

func (n *Node) replicationFactor() int {
	if n.cfg.ReplicationFactor > 0 {
		return n.cfg.ReplicationFactor
	}
	return defaultReplicationFactor
}

// startGroups starts the raft groups of the shards this node hosts at
// start: those its metadata replica's records name; before any record
// exists (a new cluster), those the initial placement gives it, which it
// bootstraps with the placement's voters, and the metadata shard, which a
// node outside its initial voters joins empty (the coordinator adds it as
// a learner). A joined node starts the metadata shard only. Besides, it
// hosts every shard whose storage it still holds: a replica it was
// removed from and had not dropped yet when it stopped.
func (n *Node) startGroups() error {
	sets, err := n.metaStore().ReplicaSets()
	if err != nil {
		return fmt.Errorf("read replica sets: %w", err)
	}
	initial := map[uint64][]uint64{}
	want := map[uint64]bool{router.MetadataShard: true}
	n.booted = map[uint64]bool{}
	boot := map[uint64][]uint64{}
	for _, rs := range sets {
		if names(rs, n.cfg.NodeID) {
			want[rs.GetShard()] = true
			if p := bootstrapVoters(rs, n.cfg.NodeID); p != nil {
				initial[rs.GetShard()] = p
			}
		}
	}
	if len(sets) == 0 && !n.joined {
		for _, g := range n.groups() {
			if p := store.InitialPlacement(n.members(), g, n.replicationFactor()); slices.Contains(p, n.cfg.NodeID) {
				want[g], boot[g] = true, p
			}
		}
	}
	for _, g := range n.groups() {
		if !want[g] {
			// A replica removed from its shard, whose node stopped before
			// dropping it: host it again (as a member that never
			// bootstraps), so that dropRemoved gives its storage back
			// once its removal is confirmed, or it catches up if the
			// records this node holds are stale and it is still a member.
			stored, err := n.host.HasStoredGroup(g)
			if err != nil {
				return fmt.Errorf("start shard %d: %w", g, err)
			}
			if !stored {
				continue
			}
		}
		var err error
		if p, ok := boot[g]; ok {
			err = n.host.AddGroup(g, p, n.srv(g).StateMachine())
			n.booted[g] = true
		} else if p, ok := initial[g]; ok {
			err = n.host.AddGroup(g, p, n.srv(g).StateMachine()) // an added shard: its stored state if any, else its initial voters
		} else {
			err = n.host.JoinGroup(g, n.srv(g).StateMachine()) // never bootstraps: a leader adds this node
		}
		if err != nil {
			return fmt.Errorf("start shard %d: %w", g, err)
		}
	}
	return nil
}

// hostNamed starts, empty, the group of every shard whose replica set now
// names this node (a move or a new learner): the shard's leader then
// sends it a snapshot and the log. A replica removed from its shard is
// dropped later (dropRemoved); until then, if the shard comes back, it
// catches up from where it is. Every replica set's members are recorded
// with the host first: such a replica's stale configuration may not name
// the shard's current leader, whose appends and snapshot its transport
// would otherwise drop.
func (n *Node) hostNamed(sets []*storepb.ReplicaSetRecord) {
	for _, rs := range sets {
		g := rs.GetShard()
		n.host.RecordMembers(g, recordedMembers(rs))
		srv := n.srv(g)
		if !names(rs, n.cfg.NodeID) || srv == nil {
			continue
		}
		if _, err := n.host.Status(g); !errors.Is(err, raftnode.ErrGroupNotFound) {
			continue
		}
		var err error
		if p := bootstrapVoters(rs, n.cfg.NodeID); p != nil {
			err = n.host.AddGroup(g, p, srv.StateMachine()) // a shard AddShards made: every initial voter starts it alike
		} else {
			err = n.host.JoinGroup(g, srv.StateMachine())
		}
		if err != nil && !errors.Is(err, raftnode.ErrGroupExists) {
			n.log.Warn("membership: cannot start a replica", "shard", g, "err", err)
			continue
		}
		n.log.Info("membership: hosting a new replica", "shard", g, "initial_voters", bootstrapVoters(rs, n.cfg.NodeID))
	}
}

// dropRemoved removes the raft group (and its storage) of every shard this
// node has left, so it stops ticking and holding it. Safety first: raft
// assumes a member's log never shrinks, so a group is dropped only once,
// continuously for dropQuiet,
//
//   - the replica set record names this node neither as a voter or
//     learner nor in the change under way (a re-add is recorded before it
//     starts);
//   - the shard's leader (its answer in this pass's view, not a
//     follower's) applied a configuration, not joint, without this node;
//   - this replica has heard no append, heartbeat or snapshot (a leader
//     sends them to its members every tick) for dropQuiet, and leads
//     nothing.
//
// The metadata shard is never dropped: every node observes it.
func (n *Node) dropRemoved(ctx context.Context, sets []*storepb.ReplicaSetRecord) {
	quiet := n.dropQuiet()
	now := time.Now()
	for _, rs := range sets {
		g := rs.GetShard()
		if !n.droppable(rs, now, quiet) {
			delete(n.dropping, g)
			continue
		}
		if n.dropping == nil {
			n.dropping = map[uint64]time.Time{}
		}
		since, ok := n.dropping[g]
		if !ok {
			n.dropping[g] = now
			continue
		}
		if now.Sub(since) < quiet {
			continue
		}
		delete(n.dropping, g)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := n.host.RemoveGroup(rctx, g, quiet)
		cancel()
		if err != nil {
			n.log.Warn("membership: cannot drop the replica of a shard this node left", "shard", g, "err", err)
			continue
		}
		n.log.Info("membership: dropped the replica of a shard this node left", "shard", g)
	}
}

// droppable reports whether this node's replica of rs's shard may be
// dropped now (dropRemoved).
func (n *Node) droppable(rs *storepb.ReplicaSetRecord, now time.Time, quiet time.Duration) bool {
	g, self := rs.GetShard(), n.cfg.NodeID
	if g == router.MetadataShard || n.others == nil || names(rs, self) || rs.GetPending().GetRemoveNodeId() == self ||
		rs.GetPending().GetNodeId() == self {
		return false
	}
	st, err := n.host.Status(g)
	if err != nil || st.IsLeader || now.Sub(st.LeaderContact) < quiet {
		return false // not hosted, halted, leading, or heard from a leader lately
	}
	sh, fromLeader, ok := n.others.ShardStatus(g)
	return ok && fromLeader && !sh.GetJoint() && sh.GetLeader() != self && len(sh.GetVoters()) > 0 &&
		!slices.Contains(sh.GetMembers(), self) && !slices.Contains(sh.GetVoters(), self) && !slices.Contains(sh.GetLearners(), self)
}

// dropQuiet is how long a replica must look removed before it is dropped:
// Config.DropRemovedAfter, by default three election timeouts.
func (n *Node) dropQuiet() time.Duration {
	if n.cfg.DropRemovedAfter > 0 {
		return n.cfg.DropRemovedAfter
	}
	tick := n.cfg.TickInterval
	if tick <= 0 {
		tick = 100 * time.Millisecond
	}
	return 30 * tick
}

// recordedMembers are the nodes replica set rs names: voters, learners
// and the node a change under way adds. A replica hears from them even
// while its own configuration is stale (raftnode.Host.RecordMembers).
func recordedMembers(rs *storepb.ReplicaSetRecord) []uint64 {
	ids := append(slices.Clone(rs.GetVoters()), rs.GetLearners()...)
	if p := rs.GetPending(); p != nil && p.GetAdd() {
		ids = append(ids, p.GetNodeId())
	}
	return ids
}

// names reports whether replica set rs names node id: a voter, a learner,
// or the node a change under way adds.
func names(rs *storepb.ReplicaSetRecord, id uint64) bool {
	p := rs.GetPending()
	return slices.Contains(rs.GetVoters(), id) || slices.Contains(rs.GetLearners(), id) ||
		(p != nil && p.GetAdd() && p.GetNodeId() == id)
}

// replicaSetsAPI is GetCluster's view of the replica sets (this node's
// metadata replica; nil if it cannot be read).
func (n *Node) replicaSetsAPI() []*qv1.ReplicaSet {
	sets, err := n.metaStore().ReplicaSets()
	if err != nil {
		return nil
	}
	out := make([]*qv1.ReplicaSet, 0, len(sets))
	for _, rs := range sets {
		out = append(out, shardserver.ReplicaSetToAPI(rs))
	}
	return out
}

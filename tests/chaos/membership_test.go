package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// Membership changes as the harness drives them, the way an operator does
// (README, Operations): `serve --join`, RemoveNode (drain, then remove),
// MoveReplica. Every shard is on every slot (replication factor = slots),
// so each episode ends with each slot's current Raft id a voter of every
// shard again: the replica comparison reads every shard on every slot.

// rejoin repairs slot id, whose data was wiped, as an operator repairs a
// lost disk (README, Operations: Lost disk): `serve --join` to the peer
// address of the running member via (admitted under a new Raft id), then
// RemoveNode of the old id, which moves its replicas to the new one. It
// returns once the recorded membership names every slot's current id, and
// no other, as the voters of every shard with no change under way.
func (c *cluster) rejoin(id, via uint64, limit time.Duration) (uint64, error) {
	deadline := time.Now().Add(limit)
	old := c.raftID(id)
	nid, err := c.joinAs(id, via, deadline)
	if err != nil {
		return nid, err
	}
	if err := c.removeNode(via, old, deadline); err != nil {
		return nid, err
	}
	return nid, c.waitSettled(via, deadline)
}

// joinAs starts slot id, whose data directory is empty, with --join to the
// peer address of slot via, and returns the Raft id the cluster gave it.
func (c *cluster) joinAs(id, via uint64, deadline time.Time) (uint64, error) {
	old := c.raftID(id)
	n := c.nodes[id]
	n.mu.Lock()
	n.join = c.nodes[via].raftAd
	n.mu.Unlock()
	if err := c.start(id); err != nil {
		return 0, err
	}
	var nid uint64
	for nid == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := c.admin(id).GetCluster(ctx, &qv1.GetClusterRequest{})
		cancel()
		if err == nil {
			nid = r.GetNodeId()
		}
		if nid == 0 {
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("node %d: no id after --join (last error: %v)", id, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if nid == old {
		return 0, fmt.Errorf("node %d rejoined under its old id %d", id, old)
	}
	n.mu.Lock()
	n.raftID, n.former = nid, append(n.former, old)
	n.mu.Unlock()
	// Partitions name slots: cut the running nodes off from the new id too.
	for _, o := range c.idsIn(up) {
		on := c.nodes[o]
		on.mu.Lock()
		cut := on.blocked
		on.mu.Unlock()
		if len(cut) > 0 {
			if err := c.setBlocked(o, cut); err != nil {
				return nid, err
			}
		}
	}
	return nid, nil
}

// removeNode asks slot via to remove Raft id raftID (RemoveNode: drain,
// then remove), retrying until the cluster takes it.
func (c *cluster) removeNode(via, raftID uint64, deadline time.Time) error {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.admin(via).RemoveNode(ctx, &qv1.RemoveNodeRequest{NodeId: raftID})
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("RemoveNode %d: %w", raftID, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// membership reads the node records and replica sets through slot via.
func (c *cluster) membership(via uint64) (*qv1.ListNodesResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := c.admin(via).ListNodes(ctx, &qv1.ListNodesRequest{})
	if err != nil {
		return nil, err
	}
	if len(r.GetReplicaSets()) != c.shards {
		return nil, fmt.Errorf("%d replica sets, want %d", len(r.GetReplicaSets()), c.shards)
	}
	return r, nil
}

// waitMembership polls the membership through via until done reports
// nothing missing ("").
func (c *cluster) waitMembership(via uint64, deadline time.Time, what string, done func(*qv1.ListNodesResponse) string) error {
	for {
		r, err := c.membership(via)
		why := ""
		if err != nil {
			why = err.Error()
		} else {
			why = done(r)
		}
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not done in time: %s", what, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitSettled waits until every shard's voters are the slots' current Raft
// ids, with no learner and no change under way.
func (c *cluster) waitSettled(via uint64, deadline time.Time) error {
	var want []uint64
	for _, s := range c.ids {
		want = append(want, c.raftID(s))
	}
	slices.Sort(want)
	return c.waitMembership(via, deadline, "membership settled", func(r *qv1.ListNodesResponse) string {
		for _, rs := range r.GetReplicaSets() {
			voters := slices.Sorted(slices.Values(rs.GetVoters()))
			if !slices.Equal(voters, want) || len(rs.GetLearners()) > 0 || rs.GetPendingNode() != 0 {
				return fmt.Sprintf("replica set %v (want voters %v)", rs, want)
			}
		}
		return ""
	})
}

// waitRemoved waits until Raft id raftID is recorded removed and no shard
// names it any more.
func (c *cluster) waitRemoved(via, raftID uint64, deadline time.Time) error {
	return c.waitMembership(via, deadline, fmt.Sprintf("node %d removed", raftID), func(r *qv1.ListNodesResponse) string {
		for _, rs := range r.GetReplicaSets() {
			if slices.Contains(rs.GetVoters(), raftID) || slices.Contains(rs.GetLearners(), raftID) ||
				rs.GetPendingNode() == raftID || rs.GetPendingRemoveNode() == raftID {
				return fmt.Sprintf("replica set %v names it", rs)
			}
		}
		for _, n := range r.GetNodes() {
			if n.GetId() == raftID && n.GetState() != qv1.NodeState_NODE_STATE_REMOVED {
				return fmt.Sprintf("its record is %v", n.GetState())
			}
		}
		return ""
	})
}

// moveReplica moves shard's replica from Raft id from to Raft id to with
// MoveReplica through slot via, and waits until the move is done. A
// refused call (the node to not active yet, another change under way, no
// leader) is made again; the replica sets say when it is done.
func (c *cluster) moveReplica(via, shard, from, to uint64, deadline time.Time) error {
	var lastErr error
	for {
		r, err := c.membership(via)
		i := -1
		if err == nil {
			i = slices.IndexFunc(r.GetReplicaSets(), func(rs *qv1.ReplicaSet) bool { return rs.GetShard() == shard })
		}
		if i >= 0 {
			rs := r.GetReplicaSets()[i]
			switch {
			case slices.Contains(rs.GetVoters(), to) && !slices.Contains(rs.GetVoters(), from) && rs.GetPendingNode() == 0:
				return nil
			case rs.GetPendingNode() == 0 && slices.Contains(rs.GetVoters(), from):
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, lastErr = c.admin(via).MoveReplica(ctx, &qv1.MoveReplicaRequest{Shard: shard, FromNode: from, ToNode: to})
				cancel()
			}
		} else if err != nil {
			lastErr = err
		} else {
			lastErr = fmt.Errorf("no replica set of shard %d", shard)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("move of shard %d from %d to %d not done in time (last error: %v)", shard, from, to, lastErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// membershipEpisode runs the membership episodes (runEpisode's).
func membershipEpisode(c *cluster, rng *rand.Rand, ep episode, leader uint64, sched *scheduleLog, res *runResult) error {
	all := c.ids
	victim := all[rng.IntN(len(all))]
	if leader != 0 && rng.IntN(2) == 0 {
		victim = leader // the metadata shard's leader: the coordinator
	}
	survivors := without(all, victim)
	via := survivors[rng.IntN(len(survivors))]
	old := c.raftID(victim)
	start := time.Now()
	deadline := start.Add(membershipLimit)
	switch ep {
	case drainRejoin:
		// A running node is retired: its replicas cannot move (every other
		// node holds one), so each shard drops to one replica fewer; the
		// node leaves, and comes back empty under a new id, and every
		// shard gets its replica back on it.
		sched.add("%s: node %d (raft id %d; leader was %d) drained through node %d", ep, victim, old, leader, via)
		if err := c.removeNode(via, old, deadline); err != nil {
			return err
		}
		if err := c.waitRemoved(via, old, deadline); err != nil {
			return err
		}
		sched.add("  raft id %d drained and removed after %v", old, time.Since(start).Round(time.Millisecond))
		if err := c.kill(victim, false); err != nil {
			return err
		}
		if err := c.wipe(victim); err != nil {
			return err
		}
		nid, err := c.joinAs(victim, via, deadline)
		if err != nil {
			return err
		}
		if err := c.waitSettled(via, deadline); err != nil {
			return err
		}
		sched.add("  node %d joined empty as raft id %d and holds every shard again after %v", victim, nid, time.Since(start).Round(time.Millisecond))
	case wipeMove:
		// A lost disk repaired by hand: the node joins under a new id and
		// each shard's replica is moved to it from the old id (down) with
		// MoveReplica, in a random order; then the old id is removed.
		if err := c.kill(victim, false); err != nil {
			return err
		}
		if err := c.holdCommitted(survivors, 20*time.Second); err != nil {
			return fmt.Errorf("survivors did not catch up before the wipe: %w", err)
		}
		if err := c.wipe(victim); err != nil {
			return err
		}
		sched.add("%s: node %d (raft id %d; leader was %d) killed, wiped, joins empty through node %d", ep, victim, old, leader, via)
		nid, err := c.joinAs(victim, via, deadline)
		if err != nil {
			return err
		}
		for _, i := range rng.Perm(c.shards) {
			if err := c.moveReplica(via, uint64(i), old, nid, deadline); err != nil {
				return err
			}
			sched.add("  shard %d moved from raft id %d to %d after %v", i, old, nid, time.Since(start).Round(time.Millisecond))
		}
		if err := c.removeNode(via, old, deadline); err != nil {
			return err
		}
		if err := c.waitSettled(via, deadline); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown episode %q", ep)
	}
	target := map[uint64]uint64{}
	for _, id := range survivors {
		if v, err := c.view(id, time.Second); err == nil {
			for s, ci := range v.commit {
				target[s] = max(target[s], ci)
			}
		}
	}
	if err := c.waitApplied([]uint64{victim}, target, 30*time.Second); err != nil {
		return fmt.Errorf("node %d did not catch up: %w", victim, err)
	}
	res.catchUps = append(res.catchUps, time.Since(start))
	sched.add("  node %d caught up after %v", victim, time.Since(start).Round(time.Millisecond))
	return nil
}

// membershipLimit bounds one membership episode until every shard is on
// every slot again.
const membershipLimit = 90 * time.Second

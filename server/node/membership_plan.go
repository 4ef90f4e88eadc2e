package node

import (
	"context"
	"math"
	"slices"
	"time"

	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/server/shardserver"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// The coordinator (the metadata shard's leader) and the shard leaders'
// part of a membership pass. A shard's change is one record (the replica
// set's pending change), written before anything happens and cleared
// once the shard's applied configuration shows it done:
//
//   - add learner: node_id becomes a learner and stays one (every node
//     observes the metadata shard so it reads the records locally);
//   - add: node_id becomes a learner, catches up (snapshot, then the log),
//     and is promoted; with remove_node_id (a move) the promotion and the
//     removal are one ConfChangeV2: joint consensus, left by raft itself;
//   - remove: node_id leaves (its leader hands leadership over first).
//
// The coordinator writes with compare-and-set on the pending change, so a
// move recorded by MoveReplica meanwhile is never lost, and at most
// maxDataMoves changes that copy a shard run at once in the cluster, so
// foreground traffic keeps most of the disk and network.

// maxDataMoves bounds the changes that copy a replica (adds and moves)
// under way at once in the cluster.
const maxDataMoves = 1

// defaultMoveTimeout: Config.MoveTimeout's default.
const defaultMoveTimeout = 2 * time.Minute

// shardConfig is a shard's applied configuration as this node knows it:
// from its own replica, else from the other nodes' answers (the leader's
// first). fromLeader: the shard's leader applied it (a follower's may be
// older than what the records already say).
type shardConfig struct {
	voters, learners, members []uint64
	joint, fromLeader         bool
}

func (n *Node) shardConfig(g uint64) (shardConfig, bool) {
	if router.IsMember(n.host, n.cfg.NodeID, g) {
		st, err := n.host.Status(g)
		if err != nil {
			return shardConfig{}, false
		}
		if st.IsLeader || n.others == nil {
			return shardConfig{voters: st.Voters, learners: st.Learners, members: st.Members, joint: st.Joint, fromLeader: st.IsLeader}, true
		}
	}
	if n.others == nil {
		return shardConfig{}, false
	}
	sh, fromLeader, ok := n.others.ShardStatus(g)
	if !ok {
		return shardConfig{}, false
	}
	return shardConfig{voters: sh.GetVoters(), learners: sh.GetLearners(), members: sh.GetMembers(), joint: sh.GetJoint(), fromLeader: fromLeader}, true
}

// changeDone reports whether configuration c shows change p done.
func changeDone(c shardConfig, p *storepb.ReplicaChange) bool {
	if c.joint {
		return false
	}
	x := p.GetNodeId()
	switch {
	case !p.GetAdd():
		return !slices.Contains(c.members, x)
	case p.GetLearner():
		return slices.Contains(c.members, x)
	}
	return slices.Contains(c.voters, x) && (p.GetRemoveNodeId() == 0 || !slices.Contains(c.members, p.GetRemoveNodeId()))
}

// copies reports whether change p copies a replica (counted against
// maxDataMoves).
func copies(p *storepb.ReplicaChange) bool { return p != nil && p.GetAdd() && !p.GetLearner() }

// coordinate is the metadata leader's part of a pass.
func (n *Node) coordinate(ctx context.Context, recs []*storepb.NodeRecord, sets []*storepb.ReplicaSetRecord) error {
	meta := n.srv(router.MetadataShard)
	propose := func(cmd *storepb.Command) error {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := meta.ProposeMembership(pctx, cmd)
		return err
	}
	if len(recs) == 0 {
		if n.joined {
			return nil // a joined node never bootstraps; the records will arrive
		}
		boot := &storepb.BootstrapMembership{Shards: uint32(n.cfg.Shards), ReplicationFactor: uint32(n.replicationFactor()), Placed: true}
		for _, id := range n.members() {
			rec := &storepb.NodeRecord{Id: id, PeerAddr: n.cfg.Peers[id]}
			if id == n.cfg.NodeID {
				rec.ClientAddr, rec.Incarnation = n.clientAddr(), n.host.Incarnation()
			}
			boot.Nodes = append(boot.Nodes, rec)
		}
		n.log.Info("membership: recording the bootstrap nodes", "nodes", n.members(), "shards", n.cfg.Shards, "replication_factor", n.replicationFactor())
		return propose(&storepb.Command{Op: &storepb.Command_BootstrapMembership{BootstrapMembership: boot}})
	}
	for _, r := range recs {
		if r.GetIncarnation() != 0 {
			continue
		}
		inc := n.host.PinnedIncarnation(r.GetId())
		if r.GetId() == n.cfg.NodeID {
			inc = n.host.Incarnation()
		}
		if inc != 0 {
			reg := &storepb.NodeRecord{Id: r.GetId(), Incarnation: inc}
			if err := propose(&storepb.Command{Op: &storepb.Command_RegisterNode{RegisterNode: &storepb.RegisterNode{Node: reg}}}); err != nil {
				return err
			}
		}
	}
	busy, err := n.finishChanges(sets, n.shardConfig, time.Now(), propose)
	if err != nil {
		return err
	}
	return n.plan(recs, sets, busy, n.alive(), n.downTooLong(recs), n.shardConfig, time.Now(), propose)
}

// finishChanges records the end of every change the shards' configurations
// show done, rolls back the adds that did not catch up in time, and keeps
// the records in line with the configurations. It returns the number of
// replica copies under way.
//
// config is a shard's applied configuration (shardConfig); now, the time.
func (n *Node) finishChanges(sets []*storepb.ReplicaSetRecord, config func(uint64) (shardConfig, bool), now time.Time,
	propose func(*storepb.Command) error) (busy int, err error) {
	timeout := n.moveTimeout()
	for _, rs := range sets {
		p := rs.GetPending()
		c, ok := config(rs.GetShard())
		switch {
		case !ok:
			// No configuration from the shard (no leader, or none this
			// node hears from): its copy holds back the others only
			// until the move timeout. A shard that lost its quorum must
			// not stop the repair of every other shard.
			if copies(p) && now.Sub(time.UnixMilli(p.GetStartedAtMs())) <= timeout {
				busy++
			}
		case p == nil:
			if c.fromLeader && !c.joint && (!slices.Equal(rs.GetVoters(), c.voters) || !slices.Equal(rs.GetLearners(), c.learners)) {
				rs.Voters, rs.Learners = c.voters, c.learners
				if err := propose(shardserver.SetReplicaSetCommand(rs, nil)); err != nil {
					return busy, err
				}
			}
		case learnerRemoval(rs) && c.fromLeader && !c.joint && slices.Contains(c.voters, p.GetNodeId()):
			// A rollback lost the race with the promotion it meant to
			// stop (nextStep leaves the voter alone): the add is done.
			rs.Pending, rs.Voters, rs.Learners = nil, c.voters, c.learners
			if err := propose(shardserver.SetReplicaSetCommand(rs, p)); err != nil {
				return busy, err
			}
			n.log.Warn("membership: a rollback found its replica promoted meanwhile; keeping it", "shard", rs.GetShard(),
				"node", p.GetNodeId(), "voters", c.voters, "learners", c.learners)
		case changeDone(c, p):
			rs.Pending, rs.Voters, rs.Learners = nil, c.voters, c.learners
			if err := propose(shardserver.SetReplicaSetCommand(rs, p)); err != nil {
				return busy, err
			}
			n.log.Info("membership: shard change done", "shard", rs.GetShard(), "node", p.GetNodeId(), "add", p.GetAdd(),
				"replaces", p.GetRemoveNodeId(), "voters", c.voters, "learners", c.learners)
		case copies(p) && p.GetRemoveNodeId() != 0 && c.fromLeader && !c.joint && !slices.Contains(c.members, p.GetRemoveNodeId()) &&
			!slices.Contains(c.voters, p.GetNodeId()):
			// A move of a replica the shard no longer has (planned on an
			// outdated record): promoting would add a voter. Cancel it.
			var back *storepb.ReplicaChange
			if slices.Contains(c.members, p.GetNodeId()) {
				back = &storepb.ReplicaChange{NodeId: p.GetNodeId(), StartedAtMs: now.UnixMilli()}
			}
			next := &storepb.ReplicaSetRecord{Shard: rs.GetShard(), ReplicationFactor: rs.GetReplicationFactor(),
				Voters: c.voters, Learners: c.learners, Pending: back}
			if err := propose(shardserver.SetReplicaSetCommand(next, p)); err != nil {
				return busy, err
			}
			rs.Pending, rs.Voters, rs.Learners = back, c.voters, c.learners
			n.log.Warn("membership: cancelling a move of a replica the shard no longer has", "shard", rs.GetShard(), "from", p.GetRemoveNodeId(), "to", p.GetNodeId())
		case copies(p) && c.fromLeader && !c.joint && !slices.Contains(c.voters, p.GetNodeId()) && now.Sub(time.UnixMilli(p.GetStartedAtMs())) > timeout:
			// The new replica never caught up (its node is down, or too
			// slow): take it out again; the plan may try elsewhere. Only
			// on the leader's configuration (a follower's may not show
			// the promotion yet), and as a learner only: the promotion
			// may still be in the log (learnerRemoval).
			back := &storepb.ReplicaChange{NodeId: p.GetNodeId(), StartedAtMs: now.UnixMilli()}
			next := &storepb.ReplicaSetRecord{Shard: rs.GetShard(), ReplicationFactor: rs.GetReplicationFactor(),
				Voters: rs.GetVoters(), Learners: rs.GetLearners(), Pending: back}
			if err := propose(shardserver.SetReplicaSetCommand(next, p)); err != nil {
				return busy, err
			}
			rs.Pending = back
			n.log.Warn("membership: rolling back a replica add that did not catch up", "shard", rs.GetShard(), "node", p.GetNodeId(), "after", timeout)
		case copies(p):
			busy++
		}
	}
	return busy, nil
}

// moveTimeout is Config.MoveTimeout or its default.
func (n *Node) moveTimeout() time.Duration {
	if n.cfg.MoveTimeout > 0 {
		return n.cfg.MoveTimeout
	}
	return defaultMoveTimeout
}

// orphanJoiner returns a joining node that observes the metadata shard
// (so raft would have heard from it) but was never heard from (not alive)
// for longer than the move timeout; nil: none. The time counts from the
// later of its record's last change (its admission, or an address it
// recorded itself) and the metadata shard's replica set's (written when it
// became an observer, or later), so a joiner made an observer late is
// given the whole timeout. Such a node was admitted but never started
// under that id: it lost the answer, or its disk, and was admitted again
// under another one.
func (n *Node) orphanJoiner(recs []*storepb.NodeRecord, metaSet *storepb.ReplicaSetRecord, alive map[uint64]bool, now time.Time) *storepb.NodeRecord {
	for _, r := range recs {
		id := r.GetId()
		if r.GetState() != storepb.NodeState_NODE_STATE_JOINING || alive[id] ||
			!(slices.Contains(metaSet.GetVoters(), id) || slices.Contains(metaSet.GetLearners(), id)) {
			continue
		}
		since := time.UnixMilli(max(r.GetUpdatedAtMs(), metaSet.GetUpdatedAtMs()))
		if now.Sub(since) > n.moveTimeout() {
			return r
		}
	}
	return nil
}

// plan records at most one new change per pass, most urgent first: a
// joining node that observes the metadata shard but was never heard from
// within the move timeout starts draining (orphanJoiner); a node without a metadata replica gets one; a joining
// node that has one and was heard from becomes active; a node down past
// AutoRepair (down) starts draining; a shard short
// of its replication factor gets a replica; a draining node's replicas move
// away (then it is removed); a shard above its replication factor loses a
// replica (shrinkMove); else one replica moves from the fullest active
// node to the emptiest. alive: the nodes heard from lately; config: a
// shard's applied configuration (shardConfig); now: the time.
func (n *Node) plan(recs []*storepb.NodeRecord, sets []*storepb.ReplicaSetRecord, busy int, alive map[uint64]bool, down uint64,
	config func(uint64) (shardConfig, bool), now time.Time, propose func(*storepb.Command) error) error {
	if len(sets) == 0 {
		return nil
	}
	setState := func(id uint64, st storepb.NodeState) error {
		n.log.Info("membership: node state", "node", id, "state", st.String())
		return propose(&storepb.Command{Op: &storepb.Command_SetNodeState{SetNodeState: &storepb.SetNodeState{NodeId: id, State: st}}})
	}
	record := func(rs *storepb.ReplicaSetRecord, p *storepb.ReplicaChange) error {
		p.StartedAtMs = now.UnixMilli()
		next := &storepb.ReplicaSetRecord{Shard: rs.GetShard(), ReplicationFactor: rs.GetReplicationFactor(),
			Voters: rs.GetVoters(), Learners: rs.GetLearners(), Pending: p}
		n.log.Info("membership: shard change recorded", "shard", rs.GetShard(), "node", p.GetNodeId(), "add", p.GetAdd(),
			"learner", p.GetLearner(), "replaces", p.GetRemoveNodeId())
		return propose(shardserver.SetReplicaSetCommand(next, nil))
	}
	metaSet := sets[0]
	if r := n.orphanJoiner(recs, metaSet, alive, now); r != nil {
		// Drained, not removed at once: the drain takes it out of the
		// metadata shard it observes, then removes it.
		n.log.Warn("membership: a joining node was never heard from; draining it", "node", r.GetId(), "peer_addr", r.GetPeerAddr(),
			"admitted", time.UnixMilli(r.GetUpdatedAtMs()).UTC(), "after", n.moveTimeout())
		return setState(r.GetId(), storepb.NodeState_NODE_STATE_DRAINING)
	}
	live := func(r *storepb.NodeRecord) bool {
		return r.GetState() == storepb.NodeState_NODE_STATE_JOINING || r.GetState() == storepb.NodeState_NODE_STATE_ACTIVE
	}
	// Every live node observes the metadata shard.
	for _, r := range recs {
		if !live(r) || slices.Contains(metaSet.GetVoters(), r.GetId()) || slices.Contains(metaSet.GetLearners(), r.GetId()) {
			continue
		}
		if metaSet.GetPending() == nil {
			return record(metaSet, &storepb.ReplicaChange{NodeId: r.GetId(), Add: true, Learner: true})
		}
		break
	}
	// Active once heard from: an active node the coordinator never hears
	// from holds the rebalancer back ("not while a node is down").
	for _, r := range recs {
		if r.GetState() == storepb.NodeState_NODE_STATE_JOINING && alive[r.GetId()] &&
			(slices.Contains(metaSet.GetVoters(), r.GetId()) || slices.Contains(metaSet.GetLearners(), r.GetId())) {
			return setState(r.GetId(), storepb.NodeState_NODE_STATE_ACTIVE)
		}
	}
	if down != 0 {
		n.log.Warn("membership: auto-repair: draining a node down for too long", "node", down, "after", n.cfg.AutoRepair)
		return setState(down, storepb.NodeState_NODE_STATE_DRAINING)
	}
	load := replicaLoad(recs, sets)
	// A shard short of its replication factor (a drain that had no node
	// to move to; a node joined since) gets a replica back first.
	if busy < maxDataMoves {
		for _, rs := range sets {
			if rs.GetPending() != nil || len(rs.GetVoters()) >= int(rs.GetReplicationFactor()) {
				continue
			}
			if to := pickTarget(rs, recs, load, alive); to != 0 {
				return record(rs, &storepb.ReplicaChange{NodeId: to, Add: true})
			}
		}
	}
	joining := slices.ContainsFunc(recs, func(r *storepb.NodeRecord) bool { return r.GetState() == storepb.NodeState_NODE_STATE_JOINING })
	draining := false
	for _, r := range recs {
		if r.GetState() != storepb.NodeState_NODE_STATE_DRAINING {
			continue
		}
		draining = true
		d, named := r.GetId(), false
		// The metadata shard last: the node reads the changes it leads
		// from its replica of it.
		order := append(slices.Clone(sets[1:]), sets[0])
		for _, rs := range order {
			if !names(rs, d) && rs.GetPending().GetRemoveNodeId() != d {
				continue
			}
			if rs.GetShard() == router.MetadataShard && named {
				break
			}
			named = true
			if rs.GetPending() != nil {
				continue
			}
			if !slices.Contains(rs.GetVoters(), d) { // an observer (or a learner): just leave
				return record(rs, &storepb.ReplicaChange{NodeId: d})
			}
			if busy >= maxDataMoves {
				continue
			}
			if to := pickTarget(rs, recs, load, alive); to != 0 {
				return record(rs, &storepb.ReplicaChange{NodeId: to, Add: true, RemoveNodeId: d})
			}
			if pickTarget(rs, recs, load, nil) != 0 || joining {
				// A node could take it once heard from (a new coordinator
				// hears from them within a heartbeat) or once active (a
				// joining node is, a pass after it observes the metadata
				// shard): removing it meanwhile leaves the shard a replica
				// short until the step above adds one back.
				continue
			}
			if len(rs.GetVoters()) > 1 {
				return record(rs, &storepb.ReplicaChange{NodeId: d})
			}
			n.log.Warn("membership: not removing the last voter of a shard", "node", d, "shard", rs.GetShard())
		}
		if !named {
			return setState(d, storepb.NodeState_NODE_STATE_REMOVED)
		}
	}
	if draining {
		return nil
	}
	for id := range load {
		if !alive[id] {
			return nil // not while a node is down: it may come back, or be drained
		}
	}
	// Only a shard whose leader applied more voters than the factor, the
	// one to go among them: a record may be behind raft.
	confirmed := func(rs *storepb.ReplicaSetRecord, x uint64) bool {
		c, ok := config(rs.GetShard())
		return ok && c.fromLeader && !c.joint && len(c.voters) > int(rs.GetReplicationFactor()) && slices.Contains(c.voters, x)
	}
	if rs, p := shrinkMove(sets, load, confirmed); p != nil {
		n.log.Info("membership: shard above its replication factor", "shard", rs.GetShard(), "voters", rs.GetVoters(),
			"replication_factor", rs.GetReplicationFactor(), "removing", p.GetNodeId())
		return record(rs, p)
	}
	if busy >= maxDataMoves || !n.rebalancing() {
		return nil
	}
	if rs, p := rebalanceMove(sets, load); p != nil {
		return record(rs, p)
	}
	return nil
}

// shrinkMove picks one removal from a data shard with more voters than
// its replication factor (a move whose removal was lost, a voter added
// back by hand, records from before replica sets) and no change under
// way: the voter on a node that is not active, else on the node holding
// the most replicas (of equals, the highest id), if confirmed; nil if
// none. A record without a replication factor (0: every node) never
// shrinks.
func shrinkMove(sets []*storepb.ReplicaSetRecord, load map[uint64]int,
	confirmed func(*storepb.ReplicaSetRecord, uint64) bool) (*storepb.ReplicaSetRecord, *storepb.ReplicaChange) {
	for _, rs := range sets {
		rf := int(rs.GetReplicationFactor())
		if rs.GetPending() != nil || rf <= 0 || len(rs.GetVoters()) <= rf || (rs.GetShard() == router.MetadataShard && len(sets) > 1) {
			continue
		}
		var from uint64
		most := -1
		for _, v := range rs.GetVoters() {
			l, active := load[v]
			if !active {
				l = math.MaxInt
			}
			if l > most || (l == most && v > from) {
				from, most = v, l
			}
		}
		if confirmed(rs, from) {
			return rs, &storepb.ReplicaChange{NodeId: from}
		}
	}
	return nil, nil
}

func (n *Node) rebalancing() bool { return n.cfg.Rebalance == nil || *n.cfg.Rebalance }

// downTooLong returns an active node the metadata shard's leader (this
// node: every node holds a replica of it) has not heard from for longer
// than AutoRepair (0: none, or auto-repair off). A node not heard from
// since this node began coordinating counts from then.
func (n *Node) downTooLong(recs []*storepb.NodeRecord) uint64 {
	if n.cfg.AutoRepair <= 0 {
		return 0
	}
	st, err := n.host.Status(router.MetadataShard)
	if err != nil || !st.IsLeader {
		return 0
	}
	now := time.Now()
	if n.seen == nil || n.seenTerm != st.Term {
		n.seen, n.seenTerm = map[uint64]time.Time{}, st.Term // a new coordinator starts counting now
		for _, r := range recs {
			n.seen[r.GetId()] = now
		}
	}
	for _, p := range st.Peers {
		if p.RecentActive {
			n.seen[p.ID] = now
		}
	}
	for _, r := range recs {
		id := r.GetId()
		if r.GetState() != storepb.NodeState_NODE_STATE_ACTIVE || id == n.cfg.NodeID {
			continue
		}
		if _, ok := n.seen[id]; !ok {
			n.seen[id] = now
		}
		if now.Sub(n.seen[id]) > n.cfg.AutoRepair {
			return id
		}
	}
	return 0
}

// replicaLoad counts the voting replicas of the data shards on every
// active node (the metadata shard is small and moves only off draining
// nodes; a one-shard cluster counts its only shard).
func replicaLoad(recs []*storepb.NodeRecord, sets []*storepb.ReplicaSetRecord) map[uint64]int {
	load := map[uint64]int{}
	for _, r := range recs {
		if r.GetState() == storepb.NodeState_NODE_STATE_ACTIVE {
			load[r.GetId()] = 0
		}
	}
	for _, rs := range sets {
		if rs.GetShard() == router.MetadataShard && len(sets) > 1 {
			continue
		}
		for _, v := range rs.GetVoters() {
			if _, ok := load[v]; ok {
				load[v]++
			}
		}
		if p := rs.GetPending(); copies(p) { // count a move as done
			if _, ok := load[p.GetNodeId()]; ok {
				load[p.GetNodeId()]++
			}
			if _, ok := load[p.GetRemoveNodeId()]; ok {
				load[p.GetRemoveNodeId()]--
			}
		}
	}
	return load
}

// alive is the nodes the metadata shard's leader (this node) heard from
// within an election timeout and replicates to, itself included. Raft
// counts a member it just added as recently active for an election
// timeout, up or not (a node down re-added as an observer of the metadata
// shard after MoveReplica took its replica away): only a member that
// answered is in StateReplicate.
func (n *Node) alive() map[uint64]bool {
	out := map[uint64]bool{n.cfg.NodeID: true}
	if st, err := n.host.Status(router.MetadataShard); err == nil {
		for _, p := range st.Peers {
			out[p.ID] = out[p.ID] || (p.RecentActive && p.State == "StateReplicate")
		}
	}
	return out
}

// pickTarget is the active node (alive, unless alive is nil) without a
// voting replica of rs that holds the fewest replicas (0: none).
func pickTarget(rs *storepb.ReplicaSetRecord, recs []*storepb.NodeRecord, load map[uint64]int, alive map[uint64]bool) uint64 {
	var to uint64
	for _, r := range recs {
		id := r.GetId()
		if r.GetState() != storepb.NodeState_NODE_STATE_ACTIVE || slices.Contains(rs.GetVoters(), id) || (alive != nil && !alive[id]) {
			continue
		}
		if to == 0 || load[id] < load[to] {
			to = id
		}
	}
	return to
}

// rebalanceMove picks one move that narrows the spread of load: from the
// fullest active node to the emptiest, on a data shard that has the one
// and not the other and no change under way; nil once every node is
// within one replica of the others.
func rebalanceMove(sets []*storepb.ReplicaSetRecord, load map[uint64]int) (*storepb.ReplicaSetRecord, *storepb.ReplicaChange) {
	ids := make([]uint64, 0, len(load))
	for id := range load {
		ids = append(ids, id)
	}
	if len(ids) < 2 {
		return nil, nil
	}
	slices.Sort(ids)
	slices.SortStableFunc(ids, func(a, b uint64) int { return load[a] - load[b] })
	for hi := len(ids) - 1; hi > 0; hi-- {
		from := ids[hi]
		for lo := 0; lo < hi; lo++ {
			to := ids[lo]
			if load[from]-load[to] <= 1 {
				break
			}
			for _, rs := range sets {
				if rs.GetPending() != nil || (rs.GetShard() == router.MetadataShard && len(sets) > 1) {
					continue
				}
				if slices.Contains(rs.GetVoters(), from) && !slices.Contains(rs.GetVoters(), to) {
					return rs, &storepb.ReplicaChange{NodeId: to, Add: true, RemoveNodeId: from}
				}
			}
		}
	}
	return nil, nil
}

package node

import (
	"log/slog"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

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

// planSim runs the coordinator's plan on records, raft finishing each
// recorded change one pass after it was recorded.
type planSim struct {
	now  time.Time // the coordinator's clock (zero: time.Now())
	t    *testing.T
	n    *Node
	recs []*storepb.NodeRecord
	sets []*storepb.ReplicaSetRecord
}

func newPlanSim(t *testing.T, recs []*storepb.NodeRecord, sets []*storepb.ReplicaSetRecord) *planSim {
	return &planSim{t: t, n: &Node{log: slog.New(slog.DiscardHandler)}, recs: recs, sets: sets}
}

func (s *planSim) propose(cmd *storepb.Command) error {
	switch op := cmd.GetOp().(type) {
	case *storepb.Command_SetNodeState:
		for _, r := range s.recs {
			if r.GetId() == op.SetNodeState.GetNodeId() {
				r.State = op.SetNodeState.GetState()
			}
		}
	case *storepb.Command_SetReplicaSet:
		rs := proto.Clone(op.SetReplicaSet.GetReplicaSet()).(*storepb.ReplicaSetRecord)
		rs.UpdatedAtMs = s.now.UnixMilli() // as apply stamps it (zero: the epoch)
		if !proto.Equal(s.sets[rs.GetShard()].GetPending(), op.SetReplicaSet.GetExpectPending()) {
			return store.ErrReplicaSetChanged
		}
		s.sets[rs.GetShard()] = rs
	default:
		s.t.Fatalf("unexpected command %v", cmd)
	}
	return nil
}

// config is a shard's configuration: as recorded (raft finishes each
// change before the next pass), on its leader.
func (s *planSim) config(g uint64) (shardConfig, bool) {
	rs := s.sets[g]
	members := slices.Sorted(slices.Values(append(slices.Clone(rs.GetVoters()), rs.GetLearners()...)))
	return shardConfig{voters: rs.GetVoters(), learners: rs.GetLearners(), members: members, fromLeader: true}, true
}

// pass is one coordinator pass: the changes recorded before it are done
// after it.
func (s *planSim) pass(alive map[uint64]bool) {
	var due []uint64
	busy := 0
	for _, rs := range s.sets {
		if p := rs.GetPending(); p != nil {
			due = append(due, rs.GetShard())
			if copies(p) {
				busy++
			}
		}
	}
	now := s.now
	if now.IsZero() {
		now = time.Now()
	}
	if err := s.n.plan(s.recs, s.sets, busy, alive, 0, s.config, now, s.propose); err != nil {
		s.t.Fatal(err)
	}
	for _, g := range due {
		rs := s.sets[g]
		p := rs.GetPending()
		x, y := p.GetNodeId(), p.GetRemoveNodeId()
		drop := func(ids []uint64, id uint64) []uint64 {
			return slices.DeleteFunc(slices.Clone(ids), func(v uint64) bool { return v == id })
		}
		switch {
		case !p.GetAdd():
			rs.Voters, rs.Learners = drop(rs.Voters, x), drop(rs.Learners, x)
		case p.GetLearner():
			rs.Learners = append(rs.Learners, x)
		default:
			rs.Learners, rs.Voters = drop(rs.Learners, x), append(drop(rs.Voters, y), x)
			slices.Sort(rs.Voters)
		}
		rs.Pending, rs.UpdatedAtMs = nil, s.now.UnixMilli() // the coordinator records it done
	}
}

// A wiped node 1 of a 3-node, 4-shard cluster comes back under id 4
// (joining) and node 1 is drained at once, as an operator replaces a lost
// disk: every shard must end on [2 3 4], never dropping below its
// replication factor on the way (the drain once removed node 1 from the
// first data shard while node 4 was still joining, and nothing added a
// replica back).
func TestPlanReplacesWipedNode(t *testing.T) {
	recs := []*storepb.NodeRecord{
		{Id: 1, State: storepb.NodeState_NODE_STATE_DRAINING},
		{Id: 2, State: storepb.NodeState_NODE_STATE_ACTIVE},
		{Id: 3, State: storepb.NodeState_NODE_STATE_ACTIVE},
		{Id: 4, State: storepb.NodeState_NODE_STATE_JOINING},
	}
	var sets []*storepb.ReplicaSetRecord
	for g := range uint64(4) {
		sets = append(sets, &storepb.ReplicaSetRecord{Shard: g, ReplicationFactor: 3, Voters: []uint64{1, 2, 3}})
	}
	s := newPlanSim(t, recs, sets)
	alive := map[uint64]bool{2: true, 3: true, 4: true}
	for i := 0; i < 40; i++ {
		s.pass(alive)
		for _, rs := range s.sets {
			if len(rs.GetVoters()) < 3 {
				t.Fatalf("pass %d: shard %d down to voters %v", i, rs.GetShard(), rs.GetVoters())
			}
		}
	}
	for _, rs := range s.sets {
		if !slices.Equal(rs.GetVoters(), []uint64{2, 3, 4}) || len(rs.GetLearners()) > 0 || rs.GetPending() != nil {
			t.Errorf("shard %d: %v", rs.GetShard(), rs)
		}
	}
	if st := s.recs[0].GetState(); st != storepb.NodeState_NODE_STATE_REMOVED {
		t.Errorf("node 1 is %v", st)
	}
}

// A shard short of its replication factor (a drain that had no node to
// move to, later a node joined) gets a replica on a live node without one.
func TestPlanRestoresReplicationFactor(t *testing.T) {
	recs := []*storepb.NodeRecord{
		{Id: 1, State: storepb.NodeState_NODE_STATE_REMOVED},
		{Id: 2, State: storepb.NodeState_NODE_STATE_ACTIVE},
		{Id: 3, State: storepb.NodeState_NODE_STATE_ACTIVE},
		{Id: 4, State: storepb.NodeState_NODE_STATE_ACTIVE},
	}
	sets := []*storepb.ReplicaSetRecord{
		{Shard: 0, ReplicationFactor: 3, Voters: []uint64{2, 3, 4}},
		{Shard: 1, ReplicationFactor: 3, Voters: []uint64{2, 3}},
		{Shard: 2, ReplicationFactor: 3, Voters: []uint64{2, 3, 4}},
		{Shard: 3, ReplicationFactor: 3, Voters: []uint64{2, 3, 4}},
	}
	s := newPlanSim(t, recs, sets)
	s.pass(map[uint64]bool{2: true, 3: true, 4: false})
	if p := s.sets[1].GetPending(); p != nil {
		t.Fatalf("a replica added on a node not heard from: %v", p)
	}
	s.pass(map[uint64]bool{2: true, 3: true, 4: true})
	if p := s.sets[1].GetPending(); p.GetNodeId() != 4 || !p.GetAdd() || p.GetLearner() || p.GetRemoveNodeId() != 0 {
		t.Fatalf("shard 1 change %v, want node 4 added", p)
	}
	s.pass(map[uint64]bool{2: true, 3: true, 4: true})
	if v := s.sets[1].GetVoters(); !slices.Equal(v, []uint64{2, 3, 4}) {
		t.Fatalf("shard 1 voters %v", v)
	}
}

// A shard with more voters than its replication factor (here 5 of RF 3)
// loses one at a time, from the node holding the most replicas, down to
// the replication factor and never below; not while a node is down or
// draining, nor on a record its leader's configuration does not bear out.
func TestPlanShrinksAboveReplicationFactor(t *testing.T) {
	records := func(draining uint64) []*storepb.NodeRecord {
		var recs []*storepb.NodeRecord
		for id := uint64(1); id <= 5; id++ {
			st := storepb.NodeState_NODE_STATE_ACTIVE
			if id == draining {
				st = storepb.NodeState_NODE_STATE_DRAINING
			}
			recs = append(recs, &storepb.NodeRecord{Id: id, State: st})
		}
		return recs
	}
	shards := func() []*storepb.ReplicaSetRecord {
		return []*storepb.ReplicaSetRecord{
			{Shard: 0, ReplicationFactor: 3, Voters: []uint64{1, 2, 3}, Learners: []uint64{4, 5}},
			{Shard: 1, ReplicationFactor: 3, Voters: []uint64{1, 2, 3, 4, 5}},
			{Shard: 2, ReplicationFactor: 3, Voters: []uint64{1, 2, 3}},
			{Shard: 3, ReplicationFactor: 3, Voters: []uint64{1, 2, 4}},
		}
	}
	all := map[uint64]bool{1: true, 2: true, 3: true, 4: true, 5: true}
	off := false

	down := newPlanSim(t, records(0), shards())
	down.n.cfg.Rebalance = &off
	down.pass(map[uint64]bool{1: true, 2: true, 3: true, 4: true})
	if p := down.sets[1].GetPending(); p != nil || len(down.sets[1].GetVoters()) != 5 {
		t.Fatalf("shard 1 shrunk while node 5 is down: %v", down.sets[1])
	}

	draining := newPlanSim(t, records(5), shards())
	draining.n.cfg.Rebalance = &off
	draining.pass(all)
	if p := draining.sets[1].GetPending(); p != nil && !p.GetAdd() && p.GetNodeId() != 5 {
		t.Fatalf("shard 1 shrunk while node 5 drains: %v", p)
	}

	// A record ahead of raft (the leader applied 3 voters): nothing.
	behind := newPlanSim(t, records(0), shards())
	behind.n.cfg.Rebalance = &off
	three := func(g uint64) (shardConfig, bool) {
		c, ok := behind.config(g)
		if g == 1 {
			c.voters, c.members = []uint64{3, 4, 5}, []uint64{3, 4, 5}
		}
		return c, ok
	}
	if err := behind.n.plan(behind.recs, behind.sets, 0, all, 0, three, time.Now(), behind.propose); err != nil {
		t.Fatal(err)
	}
	if p := behind.sets[1].GetPending(); p != nil {
		t.Fatalf("shard 1 shrunk on a record its leader's configuration does not show: %v", p)
	}

	s := newPlanSim(t, records(0), shards())
	s.n.cfg.Rebalance = &off
	var removed []uint64
	for pass := 0; pass < 10; pass++ {
		if p := s.sets[1].GetPending(); p != nil && !p.GetAdd() {
			removed = append(removed, p.GetNodeId())
		}
		s.pass(all)
		for _, rs := range s.sets {
			if len(rs.GetVoters()) < 3 {
				t.Fatalf("pass %d: shard %d down to voters %v", pass, rs.GetShard(), rs.GetVoters())
			}
		}
	}
	// Replicas of the data shards: node 1 and 2 hold 3 each, then 1 holds
	// 3 alone once 2 gave one up.
	if !slices.Equal(removed, []uint64{2, 1}) {
		t.Fatalf("removed %v, want [2 1] (the fullest node first)", removed)
	}
	for _, rs := range s.sets {
		if len(rs.GetVoters()) != 3 || rs.GetPending() != nil {
			t.Errorf("shard %d: %v", rs.GetShard(), rs)
		}
	}
}

// orphanSim is a 3-node cluster (4 shards, RF 3) with node 4 admitted
// (JOINING) at t0.
func orphanSim(t *testing.T, t0 time.Time) *planSim {
	recs := []*storepb.NodeRecord{
		{Id: 1, State: storepb.NodeState_NODE_STATE_ACTIVE},
		{Id: 2, State: storepb.NodeState_NODE_STATE_ACTIVE},
		{Id: 3, State: storepb.NodeState_NODE_STATE_ACTIVE},
		{Id: 4, State: storepb.NodeState_NODE_STATE_JOINING, UpdatedAtMs: t0.UnixMilli()},
	}
	var sets []*storepb.ReplicaSetRecord
	for g := range uint64(4) {
		sets = append(sets, &storepb.ReplicaSetRecord{Shard: g, ReplicationFactor: 3, Voters: []uint64{1, 2, 3}})
	}
	return newPlanSim(t, recs, sets)
}

// A node admitted (JOINING) that never starts (it lost the answer, or its
// disk, and joined again under another id) is never heard from: it does
// not become active (which would hold the rebalancer back for good: "not
// while a node is down"), and once the move timeout has passed since its
// admission the coordinator drains it: it leaves the metadata shard it
// observes, and is removed.
func TestPlanRemovesJoinerNeverHeardFrom(t *testing.T) {
	t0 := time.UnixMilli(1_800_000_000_000)
	s := orphanSim(t, t0)
	alive := map[uint64]bool{1: true, 2: true, 3: true}
	for i := range 10 {
		s.now = t0.Add(time.Duration(i) * time.Second)
		s.pass(alive)
		if st := s.recs[3].GetState(); st != storepb.NodeState_NODE_STATE_JOINING {
			t.Fatalf("pass %d (%v after admission): node 4 never heard from is %v, want JOINING", i, s.now.Sub(t0), st)
		}
	}
	for i := range 10 {
		s.now = t0.Add(defaultMoveTimeout + time.Duration(i+1)*time.Second)
		s.pass(alive)
	}
	if st := s.recs[3].GetState(); st != storepb.NodeState_NODE_STATE_REMOVED {
		t.Fatalf("node 4, never heard from, %v after admission: %v, want REMOVED", defaultMoveTimeout+10*time.Second, st)
	}
	for _, rs := range s.sets {
		if names(rs, 4) || rs.GetPending() != nil {
			t.Fatalf("shard %d still names node 4: %v", rs.GetShard(), rs)
		}
	}
}

// A joiner heard from becomes active and is never taken for an orphan,
// however long ago it was admitted; one heard from only after a while is
// fine too while the move timeout has not passed.
func TestPlanActivatesJoinerHeardFrom(t *testing.T) {
	t0 := time.UnixMilli(1_800_000_000_000)
	s := orphanSim(t, t0)
	s.now = t0.Add(time.Second)
	s.pass(map[uint64]bool{1: true, 2: true, 3: true}) // becomes an observer of the metadata shard
	for i := range 5 {
		s.now = t0.Add(defaultMoveTimeout - time.Second + time.Duration(i)*time.Minute)
		s.pass(map[uint64]bool{1: true, 2: true, 3: true, 4: true})
	}
	if st := s.recs[3].GetState(); st != storepb.NodeState_NODE_STATE_ACTIVE {
		t.Fatalf("node 4, heard from: %v, want ACTIVE", st)
	}
	if !slices.Contains(s.sets[0].GetLearners(), 4) {
		t.Fatalf("node 4 does not observe the metadata shard: %v", s.sets[0])
	}
}

// `cluster remove` of a node still JOINING (RemoveNode makes it
// DRAINING): it leaves the metadata shard it observes and is removed.
func TestPlanRemovesJoiningNodeOnRequest(t *testing.T) {
	t0 := time.UnixMilli(1_800_000_000_000)
	s := orphanSim(t, t0)
	s.now = t0.Add(time.Second)
	s.pass(map[uint64]bool{1: true, 2: true, 3: true})
	s.pass(map[uint64]bool{1: true, 2: true, 3: true})
	if !slices.Contains(s.sets[0].GetLearners(), 4) {
		t.Fatalf("node 4 does not observe the metadata shard: %v", s.sets[0])
	}
	s.recs[3].State = storepb.NodeState_NODE_STATE_DRAINING // RemoveNode
	for range 5 {
		s.pass(map[uint64]bool{1: true, 2: true, 3: true})
	}
	if st := s.recs[3].GetState(); st != storepb.NodeState_NODE_STATE_REMOVED {
		t.Fatalf("node 4 after cluster remove: %v, want REMOVED", st)
	}
	if names(s.sets[0], 4) {
		t.Fatalf("metadata shard still names node 4: %v", s.sets[0])
	}
}

// While a joiner never heard from is still within the move timeout, it
// holds nothing back: node 5 (active, empty) gets data shard replicas.
// (Made active, it stopped the rebalancer: "not while a node is down".)
func TestPlanJoinerNeverHeardFromHoldsNothingBack(t *testing.T) {
	t0 := time.UnixMilli(1_800_000_000_000)
	s := orphanSim(t, t0)
	s.recs = append(s.recs, &storepb.NodeRecord{Id: 5, State: storepb.NodeState_NODE_STATE_ACTIVE})
	s.sets[0].Learners = []uint64{4, 5} // both observe the metadata shard already
	alive := map[uint64]bool{1: true, 2: true, 3: true, 5: true}
	for i := range 20 {
		s.now = t0.Add(time.Duration(i) * time.Second)
		s.pass(alive)
	}
	if load := replicaLoad(s.recs, s.sets); load[5] == 0 {
		t.Fatalf("node 5 holds no replica after 20 passes: %v (node 4 is %v)", load, s.recs[3].GetState())
	}
}

// A joiner made an observer of the metadata shard late (the shard was
// busy with another change) gets the whole move timeout from then, not
// from its admission.
func TestPlanLateObserverGetsTheWholeTimeout(t *testing.T) {
	t0 := time.UnixMilli(1_800_000_000_000)
	s := orphanSim(t, t0)
	late := t0.Add(3 * defaultMoveTimeout)
	s.sets[0].Learners, s.sets[0].UpdatedAtMs = []uint64{4}, late.UnixMilli()
	alive := map[uint64]bool{1: true, 2: true, 3: true}
	s.now = late.Add(10 * time.Second)
	s.pass(alive)
	if st := s.recs[3].GetState(); st != storepb.NodeState_NODE_STATE_JOINING {
		t.Fatalf("node 4, an observer for 10s: %v, want JOINING", st)
	}
	s.now = late.Add(defaultMoveTimeout + time.Second)
	s.pass(alive)
	if st := s.recs[3].GetState(); st != storepb.NodeState_NODE_STATE_DRAINING {
		t.Fatalf("node 4, an observer never heard from for %v: %v, want DRAINING", defaultMoveTimeout+time.Second, st)
	}
}

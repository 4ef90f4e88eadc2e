package store

import (
	"errors"
	"slices"
	"testing"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

func memberCmd(op any) *storepb.Command {
	switch o := op.(type) {
	case *storepb.BootstrapMembership:
		return &storepb.Command{Op: &storepb.Command_BootstrapMembership{BootstrapMembership: o}}
	case *storepb.RegisterNode:
		return &storepb.Command{Op: &storepb.Command_RegisterNode{RegisterNode: o}}
	case *storepb.AdmitNode:
		return &storepb.Command{Op: &storepb.Command_AdmitNode{AdmitNode: o}}
	case *storepb.SetNodeState:
		return &storepb.Command{Op: &storepb.Command_SetNodeState{SetNodeState: o}}
	case *storepb.SetReplicaSet:
		return &storepb.Command{Op: &storepb.Command_SetReplicaSet{SetReplicaSet: o}}
	}
	panic("unknown membership op")
}

func nodeIDs(t *testing.T, s *Store) (ids []uint64, states []storepb.NodeState) {
	t.Helper()
	recs, err := s.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		ids, states = append(ids, r.Id), append(states, r.State)
	}
	return ids, states
}

// Bootstrap records the --peers nodes and every shard on every node, once;
// each node then registers its incarnation, and another incarnation of an
// id is refused.
func TestMembershipBootstrapAndRegister(t *testing.T) {
	h := newHarness(t)
	boot := &storepb.BootstrapMembership{Shards: 3, ReplicationFactor: 3, Nodes: []*storepb.NodeRecord{
		{Id: 2, PeerAddr: "h:2"}, {Id: 1, PeerAddr: "h:1"}, {Id: 3, PeerAddr: "h:3"},
	}}
	if r := h.apply(memberCmd(boot)); r.Err != nil {
		t.Fatal(r.Err)
	}
	// A second bootstrap (another node's) changes nothing.
	if r := h.apply(memberCmd(&storepb.BootstrapMembership{Shards: 1, Nodes: []*storepb.NodeRecord{{Id: 9}}})); r.Err != nil {
		t.Fatal(r.Err)
	}
	ids, _ := nodeIDs(t, h.s)
	if !slices.Equal(ids, []uint64{1, 2, 3}) {
		t.Fatalf("nodes %v", ids)
	}
	sets, err := h.s.ReplicaSets()
	if err != nil || len(sets) != 3 {
		t.Fatalf("replica sets %v, %v", sets, err)
	}
	for i, rs := range sets {
		if rs.Shard != uint64(i) || !slices.Equal(rs.Voters, []uint64{1, 2, 3}) || rs.ReplicationFactor != 3 {
			t.Fatalf("replica set %d: %v", i, rs)
		}
	}

	reg := func(id, inc uint64) *Result {
		return h.apply(memberCmd(&storepb.RegisterNode{Node: &storepb.NodeRecord{Id: id, PeerAddr: "new:1", ClientAddr: "c:1", Incarnation: inc}}))
	}
	if r := reg(1, 77); r.Err != nil || r.Node.Incarnation != 77 || r.Node.PeerAddr != "new:1" {
		t.Fatalf("register: %v %v", r.Node, r.Err)
	}
	if r := reg(1, 77); r.Err != nil { // a restart
		t.Fatal(r.Err)
	}
	if r := reg(1, 78); !errors.Is(r.Err, ErrIncarnationMismatch) || r.Node.Incarnation != 77 {
		t.Fatalf("another incarnation: %v %v", r.Node, r.Err)
	}
	if r := reg(7, 1); !errors.Is(r.Err, ErrNodeNotFound) {
		t.Fatalf("unknown node: %v", r.Err)
	}
}

// A joining node gets the next unused id (never a removed node's), a retry
// of the same incarnation gets the same record, and states move.
func TestMembershipAdmit(t *testing.T) {
	h := newHarness(t)
	// Before the bootstrap nodes are recorded, the next id is unknown.
	if r := h.apply(memberCmd(&storepb.AdmitNode{Node: &storepb.NodeRecord{PeerAddr: "p", Incarnation: 9}})); !errors.Is(r.Err, ErrNoMembership) {
		t.Fatalf("admit before bootstrap: %v", r.Err)
	}
	h.apply(memberCmd(&storepb.BootstrapMembership{Shards: 1, Nodes: []*storepb.NodeRecord{{Id: 1}, {Id: 2}, {Id: 3}}}))
	admit := func(id, inc uint64) *Result {
		return h.apply(memberCmd(&storepb.AdmitNode{Node: &storepb.NodeRecord{Id: id, PeerAddr: "p", Incarnation: inc}}))
	}
	r := admit(0, 500)
	if r.Err != nil || r.Node.Id != 4 || r.Node.State != storepb.NodeState_NODE_STATE_JOINING {
		t.Fatalf("admit: %v %v", r.Node, r.Err)
	}
	if r := admit(0, 500); r.Err != nil || r.Node.Id != 4 {
		t.Fatalf("retried admit: %v %v", r.Node, r.Err)
	}
	if r := admit(2, 501); !errors.Is(r.Err, ErrNodeExists) {
		t.Fatalf("admit of a used id: %v", r.Err)
	}
	if r := admit(0, 0); r.Err == nil {
		t.Fatal("admit without incarnation succeeded")
	}
	if r := h.apply(memberCmd(&storepb.SetNodeState{NodeId: 4, State: storepb.NodeState_NODE_STATE_REMOVED})); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := admit(0, 600); r.Err != nil || r.Node.Id != 5 {
		t.Fatalf("admit after a removal: %v %v", r.Node, r.Err)
	}
	if r := h.apply(memberCmd(&storepb.SetNodeState{NodeId: 4, State: storepb.NodeState_NODE_STATE_ACTIVE})); !errors.Is(r.Err, ErrNodeRemoved) {
		t.Fatalf("reviving a removed node: %v", r.Err)
	}
	ids, states := nodeIDs(t, h.s)
	if !slices.Equal(ids, []uint64{1, 2, 3, 4, 5}) || states[3] != storepb.NodeState_NODE_STATE_REMOVED {
		t.Fatalf("nodes %v %v", ids, states)
	}
	rs := &storepb.ReplicaSetRecord{Shard: 0, ReplicationFactor: 3, Voters: []uint64{1, 2, 3}, Learners: []uint64{5},
		Pending: &storepb.ReplicaChange{NodeId: 5, Add: true}}
	if r := h.apply(memberCmd(&storepb.SetReplicaSet{ReplicaSet: rs})); r.Err != nil {
		t.Fatal(r.Err)
	}
	sets, _ := h.s.ReplicaSets()
	if len(sets) != 1 || sets[0].GetPending().GetNodeId() != 5 || !slices.Equal(sets[0].Learners, []uint64{5}) {
		t.Fatalf("replica sets %v", sets)
	}
}

// A placed bootstrap puts each shard on rf nodes, consecutive shards
// starting on consecutive nodes, so every node holds its share.
func TestMembershipPlacedBootstrap(t *testing.T) {
	h := newHarness(t)
	var nodes []*storepb.NodeRecord
	for id := uint64(1); id <= 5; id++ {
		nodes = append(nodes, &storepb.NodeRecord{Id: id})
	}
	if r := h.apply(memberCmd(&storepb.BootstrapMembership{Shards: 10, ReplicationFactor: 3, Placed: true, Nodes: nodes})); r.Err != nil {
		t.Fatal(r.Err)
	}
	sets, err := h.s.ReplicaSets()
	if err != nil || len(sets) != 10 {
		t.Fatalf("replica sets %v, %v", sets, err)
	}
	load := map[uint64]int{}
	for _, rs := range sets {
		if len(rs.Voters) != 3 || !slices.IsSorted(rs.Voters) || !slices.Equal(rs.Voters, InitialPlacement([]uint64{5, 4, 3, 2, 1}, rs.Shard, 3)) {
			t.Fatalf("shard %d: voters %v", rs.Shard, rs.Voters)
		}
		for _, v := range rs.Voters {
			load[v]++
		}
	}
	for id := uint64(1); id <= 5; id++ {
		if load[id] != 6 {
			t.Fatalf("replicas per node %v", load)
		}
	}
	if got := InitialPlacement([]uint64{1, 2}, 7, 3); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("rf above the node count: %v", got)
	}
}

// A checked SetReplicaSet replaces the record only if its change under way
// is the one the writer read: a move recorded meanwhile is not lost.
func TestMembershipReplicaSetCompareAndSet(t *testing.T) {
	h := newHarness(t)
	h.apply(memberCmd(&storepb.BootstrapMembership{Shards: 2, ReplicationFactor: 3, Placed: true,
		Nodes: []*storepb.NodeRecord{{Id: 1}, {Id: 2}, {Id: 3}, {Id: 4}}}))
	set := func(rs *storepb.ReplicaSetRecord, expect *storepb.ReplicaChange) error {
		return h.apply(memberCmd(&storepb.SetReplicaSet{ReplicaSet: rs, CheckPending: true, ExpectPending: expect})).Err
	}
	move := &storepb.ReplicaChange{NodeId: 1, Add: true, RemoveNodeId: 4, StartedAtMs: 5}
	if err := set(&storepb.ReplicaSetRecord{Shard: 1, Voters: []uint64{2, 3, 4}, Pending: move}, nil); err != nil {
		t.Fatal(err)
	}
	// A writer that read no change under way loses.
	if err := set(&storepb.ReplicaSetRecord{Shard: 1, Voters: []uint64{2, 3, 4}}, nil); !errors.Is(err, ErrReplicaSetChanged) {
		t.Fatalf("stale write: %v", err)
	}
	if err := set(&storepb.ReplicaSetRecord{Shard: 1, Voters: []uint64{1, 2, 3}}, move); err != nil {
		t.Fatal(err)
	}
	sets, _ := h.s.ReplicaSets()
	if sets[1].GetPending() != nil || !slices.Equal(sets[1].Voters, []uint64{1, 2, 3}) {
		t.Fatalf("shard 1: %v", sets[1])
	}
	if err := set(&storepb.ReplicaSetRecord{Shard: 9}, nil); !errors.Is(err, ErrReplicaSetChanged) {
		t.Fatalf("unknown shard: %v", err)
	}
}

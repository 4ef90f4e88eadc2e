package store

import (
	"errors"
	"slices"
	"testing"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

func addShards(h *harness, op *storepb.AddShards) *Result {
	return h.apply(&storepb.Command{Op: &storepb.Command_AddShards{AddShards: op}})
}

func (h *harness) createTruth(name string, partitions int32) *Result {
	return h.apply(&storepb.Command{Op: &storepb.Command_CreateQueue{CreateQueue: &storepb.CreateQueue{
		Tenant: "t", Name: name, Attributes: partAttrs(partitions), HandleKey: make([]byte, 32)}}})
}

// AddShards: refused before the membership is recorded and for a count out
// of bounds; then it records the new replica sets (initial voters = voters,
// on the least loaded nodes, nodes to avoid last) and the layout, and with
// expect_shards refuses a count that moved on.
func TestAddShardsRecordsReplicaSetsAndLayout(t *testing.T) {
	h := newHarness(t)
	if r := addShards(h, &storepb.AddShards{Count: 1}); !errors.Is(r.Err, ErrNoMembership) {
		t.Fatalf("before bootstrap: %v", r.Err)
	}
	boot := &storepb.BootstrapMembership{Shards: 3, ReplicationFactor: 2, Placed: true, Nodes: []*storepb.NodeRecord{
		{Id: 1, PeerAddr: "h:1"}, {Id: 2, PeerAddr: "h:2"}, {Id: 3, PeerAddr: "h:3"}, {Id: 4, PeerAddr: "h:4"},
	}}
	if r := h.apply(memberCmd(boot)); r.Err != nil {
		t.Fatal(r.Err)
	}
	if l, err := h.s.ShardLayout(); err != nil || l != nil {
		t.Fatalf("layout before AddShards: %v %v", l, err)
	}
	for _, c := range []uint32{0, 254, 1 << 31} {
		var fe *FieldError
		if r := addShards(h, &storepb.AddShards{Count: c}); !errors.As(r.Err, &fe) {
			t.Fatalf("count %d: %v", c, r.Err)
		}
	}
	// Data shards 1 and 2 are on nodes 2,3 and 3,4: node 1 holds none, 2
	// and 4 one each, but node 1 is to be avoided.
	r := addShards(h, &storepb.AddShards{Count: 3, ExpectShards: 3, AvoidNodes: []uint64{1}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if r.Layout.GetShards() != 6 || r.Layout.GetBaseShards() != 3 {
		t.Fatalf("layout %v", r.Layout)
	}
	sets, err := h.s.ReplicaSets()
	if err != nil || len(sets) != 6 {
		t.Fatalf("replica sets %v %v", sets, err)
	}
	load := map[uint64]int{}
	for _, rs := range sets[1:] {
		for _, v := range rs.Voters {
			load[v]++
		}
	}
	for _, rs := range sets[3:] {
		if len(rs.Voters) != 2 || !slices.Equal(rs.Voters, rs.InitialVoters) || rs.ReplicationFactor != 2 {
			t.Fatalf("new replica set %v", rs)
		}
	}
	if !slices.Equal(sets[3].Voters, []uint64{2, 4}) { // the least loaded but node 1, though it holds nothing
		t.Fatalf("shard 3 on %v, want [2 4]", sets[3].Voters)
	}
	// 10 data-shard replicas: none on the avoided node, the others even.
	if load[1] != 0 || load[2] < 3 || load[2] > 4 || load[3] < 3 || load[3] > 4 || load[4] < 3 || load[4] > 4 {
		t.Fatalf("replicas per node %v", load)
	}
	if r := addShards(h, &storepb.AddShards{Count: 1, ExpectShards: 3}); !errors.Is(r.Err, ErrShardCountChanged) || r.Layout.GetShards() != 6 {
		t.Fatalf("a stale expect_shards: %v %v", r.Err, r.Layout)
	}
	if r := addShards(h, &storepb.AddShards{Count: 1}); r.Err != nil || r.Layout.GetShards() != 7 || r.Layout.GetBaseShards() != 3 {
		t.Fatalf("second AddShards: %v %v", r.Err, r.Layout)
	}
}

// A queue made before AddShards keeps no placement (the base one places
// it); one made after records its partitions' shards; the first grows:
// its old partitions keep the base placement, the new ones go to the added
// shards. Topics record the count they are placed over.
func TestPlacementRecordedAfterAddShards(t *testing.T) {
	h := newHarness(t)
	boot := &storepb.BootstrapMembership{Shards: 3, ReplicationFactor: 3, Placed: true, Nodes: []*storepb.NodeRecord{{Id: 1, PeerAddr: "h:1"}}}
	if r := h.apply(memberCmd(boot)); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := h.createTruth("old", 2); r.Err != nil || len(r.QueueInfo.Record.PartitionShards) != 0 {
		t.Fatalf("before: %v %v", r.Err, r.QueueInfo)
	}
	tr := h.apply(&storepb.Command{Op: &storepb.Command_CreateTopic{CreateTopic: &storepb.CreateTopic{Topic: &storepb.TopicRecord{
		Tenant: "t", Name: "tp0", Partitions: 2, RetentionMs: 60_000, MaxMessageSize: 1024}}}})
	if tr.Err != nil || tr.Topic.Topic.GetPlacementShards() != 0 {
		t.Fatalf("topic before: %v %v", tr.Err, tr.Topic)
	}
	if r := addShards(h, &storepb.AddShards{Count: 2}); r.Err != nil {
		t.Fatal(r.Err)
	}
	r := h.createTruth("new", 4)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if ps := r.QueueInfo.Record.PartitionShards; !slices.Equal(slices.Sorted(slices.Values(ps)), []uint64{1, 2, 3, 4}) {
		t.Fatalf("new queue on %v", ps)
	}
	for i, s := range r.QueueInfo.Record.PartitionShards {
		if s != ShardOf(5, "t", "new", i) {
			t.Fatalf("partition %d on %d, ShardOf says %d", i, s, ShardOf(5, "t", "new", i))
		}
	}
	r = h.apply(&storepb.Command{Op: &storepb.Command_UpdateQueue{UpdateQueue: &storepb.UpdateQueue{Tenant: "t", Name: "old", Attributes: partAttrs(4)}}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	ps := r.QueueInfo.Record.PartitionShards
	want := []uint64{ShardOf(3, "t", "old", 0), ShardOf(3, "t", "old", 1)}
	if len(ps) != 4 || !slices.Equal(ps[:2], want) || !slices.Equal(slices.Sorted(slices.Values(ps[2:])), []uint64{3, 4}) {
		t.Fatalf("grown queue on %v, want %v then the added shards 3 and 4", ps, want)
	}
	got, err := h.s.Queue("t", "old")
	if err != nil || !slices.Equal(got.Record.PartitionShards, ps) {
		t.Fatalf("stored placement %v %v", got, err)
	}
	tr = h.apply(&storepb.Command{Op: &storepb.Command_CreateTopic{CreateTopic: &storepb.CreateTopic{Topic: &storepb.TopicRecord{
		Tenant: "t", Name: "tp", Partitions: 2, RetentionMs: 60_000, MaxMessageSize: 1024}}}})
	if tr.Err != nil || tr.Topic.Topic.GetPlacementShards() != 5 {
		t.Fatalf("topic: %v %v", tr.Err, tr.Topic)
	}
}

// PlacePartitions: a new queue's partitions are ShardOf's (distinct while
// there are data shards enough); a growth takes unused shards, the added
// ones first.
func TestPlacePartitions(t *testing.T) {
	for n := 1; n <= 6; n++ {
		ps := PlacePartitions(7, "t", "q", nil, n, 0)
		for i, s := range ps {
			if s != ShardOf(7, "t", "q", i) {
				t.Fatalf("n=%d: %v", n, ps)
			}
		}
	}
	if ps := PlacePartitions(1, "t", "q", nil, 3, 0); !slices.Equal(ps, []uint64{0, 0, 0}) {
		t.Fatalf("one shard: %v", ps)
	}
	have := []uint64{1, 2}
	ps := PlacePartitions(6, "t", "q", have, 5, 4)
	if !slices.Equal(ps[:2], have) || !slices.Equal(slices.Sorted(slices.Values(ps[2:4])), []uint64{4, 5}) || ps[4] != 3 {
		t.Fatalf("growth: %v", ps)
	}
	if ps := PlacePartitions(3, "t", "q", []uint64{1, 2}, 3, 2); ps[2] < 1 || ps[2] > 2 {
		t.Fatalf("every shard used: %v", ps)
	}
}

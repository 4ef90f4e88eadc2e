package store

import (
	"errors"
	"hash/fnv"
	"slices"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// More shards online (issue 17). The shard count is replicated data of the
// metadata shard: absent a ShardLayout record (0x50) it is the count fixed
// at bootstrap (one replica set record per shard); AddShards writes the
// record and the new shards' replica sets in one command, so the count and
// the replica sets never disagree. The count only grows.
//
// Placement: a queue's record of truth keeps the shard of each partition
// (partition_shards), chosen when the partition is made, over the shard
// count of that moment; a topic keeps the count its partitions are placed
// over (placement_shards). Records made before the first AddShards have
// neither and are placed over the base count, which the layout records, so
// nothing stored moves when shards are added.

// MaxShards bounds the cluster's shard count (a node may host every shard).
const MaxShards = 256

// ErrShardCountChanged: an AddShards with expect_shards found another
// count (SHARD_COUNT_CHANGED).
var ErrShardCountChanged = errors.New("shard count changed meanwhile")

// ShardOf places partition i of a queue over shards shards: consecutive
// partitions on consecutive data shards from a start given by a hash of
// the queue, so queues spread evenly and a queue's partitions land on
// distinct shards while it has no more partitions than there are data
// shards. One shard: shard 0 holds everything.
func ShardOf(shards int, tenant, name string, i int) uint64 {
	if shards <= 1 {
		return 0
	}
	d := uint64(shards - 1)
	return 1 + (placementHash(tenant, name)+uint64(i))%d
}

func placementHash(tenant, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(tenant))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return h.Sum64()
}

// PlacePartitions returns the shards of partitions len(have) … n-1 of a
// queue placed over shards shards, appended to have (the shards of its
// existing partitions). A new queue's partitions go where ShardOf puts
// them. A partition added later goes to a data shard the queue has no
// partition on yet, the shards from added on first (those AddShards made),
// looking from the one ShardOf gives it, so queues that grow after shards
// were added spread onto them; once the queue uses every data shard, where
// ShardOf puts it. Pure: every replica computes the same.
func PlacePartitions(shards int, tenant, name string, have []uint64, n int, added uint64) []uint64 {
	out := slices.Clone(have)
	if shards <= 1 {
		for len(out) < n {
			out = append(out, 0)
		}
		return out
	}
	d := uint64(shards - 1)
	start := placementHash(tenant, name)
	for i := len(out); i < n; i++ {
		pick := 1 + (start+uint64(i))%d
		if len(have) > 0 {
		search:
			for _, from := range []uint64{max(added, 1), 1} {
				for k := range d {
					s := 1 + (start+uint64(i)+k)%d
					if s >= from && !slices.Contains(out, s) {
						pick = s
						break search
					}
				}
			}
		}
		out = append(out, pick)
	}
	return out
}

// layout reads the shard layout record; nil if the cluster never added
// shards.
func (t *txn) layout() (*storepb.ShardLayout, error) {
	l := &storepb.ShardLayout{}
	found, err := t.get(keys.ShardLayout(t.s.shard), l)
	if err != nil || !found {
		return nil, err
	}
	return l, nil
}

// ShardLayout returns this replica's shard layout record (metadata shard);
// nil if the cluster never added shards (its count is the bootstrap one).
func (s *Store) ShardLayout() (*storepb.ShardLayout, error) {
	t, done := s.snapshot(0)
	defer done()
	return t.layout()
}

// placeQueue records where the partitions of a record of truth live once
// the cluster has added shards: new partitions over the current count; a
// record without placement first gets its existing partitions' shards
// over the base count (where they are).
func (t *txn) placeQueue(q *storepb.QueueRecord, oldPartitions int32) error {
	if q.PartitionCopy {
		return nil
	}
	l, err := t.layout()
	if err != nil || l == nil {
		return err // the bootstrap count places every queue
	}
	have := q.PartitionShards
	if len(have) == 0 {
		for i := range int(oldPartitions) {
			have = append(have, ShardOf(int(l.BaseShards), q.Tenant, q.Name, i))
		}
	}
	q.PartitionShards = PlacePartitions(int(l.Shards), q.Tenant, q.Name, have, int(max(q.Attributes.GetPartitions(), 1)), uint64(l.BaseShards))
	return nil
}

// placeTopic records the count a new topic's partitions are placed over
// once the cluster has added shards.
func (t *txn) placeTopic(rec *storepb.TopicRecord) error {
	rec.PlacementShards = 0
	l, err := t.layout()
	if err != nil || l == nil {
		return err
	}
	rec.PlacementShards = l.Shards
	return nil
}

// addShards raises the shard count: new replica sets, each on
// replication-factor active nodes (fewest data-shard replicas first, the
// proposer's avoid_nodes last), and the layout.
func (t *txn) addShards(op *storepb.AddShards, res *Result) error {
	nodes, err := t.nodes()
	if err != nil {
		return err
	}
	if len(nodes) == 0 {
		res.Err = ErrNoMembership
		return nil
	}
	sets, err := readAll(t, keys.MemberReplicaSetPrefix(t.s.shard), func() *storepb.ReplicaSetRecord { return &storepb.ReplicaSetRecord{} })
	if err != nil {
		return err
	}
	l, err := t.layout()
	if err != nil {
		return err
	}
	cur := uint32(len(sets))
	if l == nil {
		l = &storepb.ShardLayout{BaseShards: cur}
	} else {
		cur = l.Shards
	}
	switch {
	case op.GetCount() == 0 || op.GetCount() > MaxShards || cur+op.GetCount() > MaxShards:
		res.Err = fieldErr("count", "1 to %d (the cluster has %d shards, at most %d in all)", MaxShards-int(cur), cur, MaxShards)
		return nil
	case op.GetExpectShards() != 0 && op.GetExpectShards() != cur:
		res.Err = ErrShardCountChanged
		res.Layout = &storepb.ShardLayout{Shards: cur, BaseShards: l.BaseShards}
		return nil
	}
	load := map[uint64]int{}
	var active []uint64
	for _, n := range nodes {
		if n.State == storepb.NodeState_NODE_STATE_ACTIVE {
			active = append(active, n.Id)
			load[n.Id] = 0
		}
	}
	if len(active) == 0 {
		res.Err = ErrNoMembership
		return nil
	}
	for _, rs := range sets {
		if rs.Shard == 0 && len(sets) > 1 {
			continue // the metadata shard is on every node anyway
		}
		for _, v := range rs.Voters {
			if _, ok := load[v]; ok {
				load[v]++
			}
		}
	}
	rf := len(active)
	if len(sets) > 0 && sets[0].ReplicationFactor > 0 {
		rf = min(int(sets[0].ReplicationFactor), rf)
	}
	avoid := func(id uint64) int {
		if slices.Contains(op.GetAvoidNodes(), id) {
			return 1
		}
		return 0
	}
	for i := range op.GetCount() {
		shard := uint64(cur + i)
		slices.SortStableFunc(active, func(a, b uint64) int {
			if c := avoid(a) - avoid(b); c != 0 {
				return c
			}
			if c := load[a] - load[b]; c != 0 {
				return c
			}
			return cmpUint64(a, b)
		})
		voters := slices.Sorted(slices.Values(active[:rf]))
		for _, v := range voters {
			load[v]++
		}
		rs := &storepb.ReplicaSetRecord{Shard: shard, ReplicationFactor: uint32(rf), Voters: voters,
			InitialVoters: voters, UpdatedAtMs: t.now}
		if len(sets) > 0 && sets[0].ReplicationFactor > 0 {
			rs.ReplicationFactor = sets[0].ReplicationFactor
		}
		if err := t.set(keys.MemberReplicaSet(t.s.shard, shard), rs); err != nil {
			return err
		}
	}
	l.Shards, l.UpdatedAtMs = cur+op.GetCount(), t.now
	res.Layout = l
	return t.set(keys.ShardLayout(t.s.shard), l)
}

func cmpUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

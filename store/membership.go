package store

import (
	"errors"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Membership lives in the metadata shard: one record per storage node
// (0x40 id) and one replica set per shard (0x41 shard). Apply only checks
// and stores; the coordinator (the metadata shard's leader, in server/)
// decides what changes and drives the raft configuration changes, recording
// each change before it starts so that a new coordinator finishes it.

var (
	// ErrNodeNotFound: no node record of that id (NODE_NOT_FOUND).
	ErrNodeNotFound = errors.New("node not found")
	// ErrNodeRemoved: the node was removed; its id is never used again.
	ErrNodeRemoved = errors.New("node removed")
	// ErrNodeExists: AdmitNode named an id that has a record (of another
	// incarnation).
	ErrNodeExists = errors.New("node id in use")
	// ErrIncarnationMismatch: a node registered under an id whose record
	// names another incarnation: its data directory is not the one the
	// cluster knows (a wiped disk). It must join again under a new id.
	ErrIncarnationMismatch = errors.New("node incarnation does not match its record")
	// ErrReplicaSetChanged: a checked SetReplicaSet found another change
	// under way than the one its writer saw (REPLICA_SET_CHANGED).
	ErrReplicaSetChanged = errors.New("replica set changed meanwhile")
	// ErrNoMembership: AdmitNode before the bootstrap nodes were recorded
	// (a new cluster's first seconds): the next id is not known yet.
	ErrNoMembership = errors.New("membership not recorded yet")
)

// Bounds the proposer checks first; apply checks again.
const (
	maxMemberAddr   = 256
	maxMemberNodes  = 1024
	maxMemberShards = 1024
)

func (t *txn) bootstrapMembership(op *storepb.BootstrapMembership, res *Result) error {
	if len(op.GetNodes()) == 0 || len(op.GetNodes()) > maxMemberNodes || op.GetShards() == 0 || op.GetShards() > maxMemberShards {
		res.Err = fieldErr("nodes", "1 to %d nodes and 1 to %d shards", maxMemberNodes, maxMemberShards)
		return nil
	}
	exists, err := t.anyNode()
	if err != nil || exists {
		return err // bootstrapped already: nothing to do
	}
	var ids []uint64
	for _, n := range op.GetNodes() {
		if err := checkNode(n); err != nil {
			res.Err = err
			return nil
		}
		ids = append(ids, n.GetId())
	}
	slices.Sort(ids)
	if len(slices.Compact(slices.Clone(ids))) != len(ids) {
		res.Err = fieldErr("nodes", "duplicate node id")
		return nil
	}
	for _, n := range op.GetNodes() {
		rec := proto.CloneOf(n)
		rec.State, rec.UpdatedAtMs = storepb.NodeState_NODE_STATE_ACTIVE, t.now
		if err := t.set(keys.MemberNode(t.s.shard, rec.Id), rec); err != nil {
			return err
		}
	}
	for shard := range uint64(op.GetShards()) {
		voters := ids
		if op.GetPlaced() {
			voters = InitialPlacement(ids, shard, int(op.GetReplicationFactor()))
		}
		rs := &storepb.ReplicaSetRecord{Shard: shard, ReplicationFactor: op.GetReplicationFactor(), Voters: voters, UpdatedAtMs: t.now}
		if err := t.set(keys.MemberReplicaSet(t.s.shard, shard), rs); err != nil {
			return err
		}
	}
	return nil
}

// InitialPlacement is the voters a new cluster gives shard: rf of the
// sorted bootstrap node ids, starting at the shard's position, so
// consecutive shards start on consecutive nodes and every node holds
// shards*rf/len(ids) replicas (± 1). rf <= 0 or beyond the node count: every
// node. Only the bootstrap uses it: afterwards the replica set records are
// the placement.
func InitialPlacement(ids []uint64, shard uint64, rf int) []uint64 {
	sorted := slices.Sorted(slices.Values(ids))
	sorted = slices.Compact(sorted)
	n := len(sorted)
	if rf <= 0 || rf >= n {
		return sorted
	}
	out := make([]uint64, 0, rf)
	for i := range rf {
		out = append(out, sorted[(int(shard%uint64(n))+i)%n])
	}
	slices.Sort(out)
	return out
}

func (t *txn) registerNode(op *storepb.RegisterNode, res *Result) error {
	n := op.GetNode()
	if err := checkNode(n); err != nil {
		res.Err = err
		return nil
	}
	rec := &storepb.NodeRecord{}
	found, err := t.get(keys.MemberNode(t.s.shard, n.GetId()), rec)
	switch {
	case err != nil:
		return err
	case !found:
		res.Err = ErrNodeNotFound
		return nil
	case rec.State == storepb.NodeState_NODE_STATE_REMOVED:
		res.Err = ErrNodeRemoved
		return nil
	case rec.Incarnation != 0 && rec.Incarnation != n.GetIncarnation():
		res.Err = ErrIncarnationMismatch
		res.Node = rec
		return nil
	}
	if n.GetPeerAddr() != "" {
		rec.PeerAddr = n.GetPeerAddr()
	}
	if n.GetClientAddr() != "" {
		rec.ClientAddr = n.GetClientAddr()
	}
	rec.Incarnation, rec.UpdatedAtMs = n.GetIncarnation(), t.now
	res.Node = rec
	return t.set(keys.MemberNode(t.s.shard, rec.Id), rec)
}

func (t *txn) admitNode(op *storepb.AdmitNode, res *Result) error {
	n := op.GetNode()
	if n.GetIncarnation() == 0 || n.GetPeerAddr() == "" {
		res.Err = fieldErr("node", "incarnation and peer address are required")
		return nil
	}
	if err := checkNode(n); err != nil && n.GetId() != 0 {
		res.Err = err
		return nil
	}
	nodes, err := t.nodes()
	if err != nil {
		return err
	}
	if len(nodes) == 0 {
		res.Err = ErrNoMembership
		return nil
	}
	var maxID uint64
	for _, rec := range nodes {
		if rec.Incarnation == n.GetIncarnation() {
			res.Node = rec // a retried admission
			return nil
		}
		maxID = max(maxID, rec.Id)
		if rec.Id == n.GetId() {
			res.Err = ErrNodeExists
			return nil
		}
	}
	if len(nodes) >= maxMemberNodes {
		res.Err = ErrQuotaExceeded
		return nil
	}
	rec := proto.CloneOf(n)
	if rec.Id == 0 {
		rec.Id = maxID + 1
	}
	rec.State, rec.UpdatedAtMs = storepb.NodeState_NODE_STATE_JOINING, t.now
	res.Node = rec
	return t.set(keys.MemberNode(t.s.shard, rec.Id), rec)
}

func (t *txn) setNodeState(op *storepb.SetNodeState, res *Result) error {
	rec := &storepb.NodeRecord{}
	found, err := t.get(keys.MemberNode(t.s.shard, op.GetNodeId()), rec)
	switch {
	case err != nil:
		return err
	case !found:
		res.Err = ErrNodeNotFound
		return nil
	case rec.State == storepb.NodeState_NODE_STATE_REMOVED:
		res.Err = ErrNodeRemoved
		return nil
	case op.GetState() == storepb.NodeState_NODE_STATE_UNSPECIFIED:
		res.Err = fieldErr("state", "required")
		return nil
	}
	rec.State, rec.UpdatedAtMs = op.GetState(), t.now
	res.Node = rec
	return t.set(keys.MemberNode(t.s.shard, rec.Id), rec)
}

func (t *txn) setReplicaSet(op *storepb.SetReplicaSet, res *Result) error {
	rs := op.GetReplicaSet()
	if rs == nil || rs.GetShard() >= maxMemberShards || len(rs.GetVoters())+len(rs.GetLearners()) > maxMemberNodes {
		res.Err = fieldErr("replica_set", "missing or out of bounds")
		return nil
	}
	if op.GetCheckPending() {
		cur := &storepb.ReplicaSetRecord{}
		found, err := t.get(keys.MemberReplicaSet(t.s.shard, rs.GetShard()), cur)
		if err != nil {
			return err
		}
		if !found || !proto.Equal(cur.GetPending(), op.GetExpectPending()) {
			res.Err = ErrReplicaSetChanged
			return nil
		}
	}
	rec := proto.CloneOf(rs)
	rec.UpdatedAtMs = t.now
	return t.set(keys.MemberReplicaSet(t.s.shard, rec.Shard), rec)
}

func checkNode(n *storepb.NodeRecord) error {
	switch {
	case n == nil:
		return fieldErr("node", "missing")
	case n.GetId() == 0:
		return fieldErr("node.id", "must be positive")
	case len(n.GetPeerAddr()) > maxMemberAddr || len(n.GetClientAddr()) > maxMemberAddr:
		return fieldErr("node", "addresses are at most %d bytes", maxMemberAddr)
	}
	return nil
}

func (t *txn) anyNode() (found bool, err error) {
	p := keys.MemberNodePrefix(t.s.shard)
	it, err := t.iter(p, keys.PrefixEnd(p))
	if err != nil {
		return false, err
	}
	defer closeInto(it, &err)
	return it.First(), nil
}

// nodes reads every node record, in id order (at most maxMemberNodes are
// ever written).
func (t *txn) nodes() ([]*storepb.NodeRecord, error) {
	return readAll(t, keys.MemberNodePrefix(t.s.shard), func() *storepb.NodeRecord { return &storepb.NodeRecord{} })
}

// Nodes returns every node record as this replica has it, in id order.
func (s *Store) Nodes() ([]*storepb.NodeRecord, error) {
	t, done := s.snapshot(0)
	defer done()
	return t.nodes()
}

// ReplicaSets returns every shard's replica set record, in shard order.
func (s *Store) ReplicaSets() ([]*storepb.ReplicaSetRecord, error) {
	t, done := s.snapshot(0)
	defer done()
	return readAll(t, keys.MemberReplicaSetPrefix(s.shard), func() *storepb.ReplicaSetRecord { return &storepb.ReplicaSetRecord{} })
}

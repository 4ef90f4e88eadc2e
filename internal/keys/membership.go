package keys

// Membership records, on the metadata shard (state kinds 0x40-0x4F):
//
//	0x40 id      node record -> NodeRecord
//	0x41 shard   the shard's replica set -> ReplicaSetRecord
//	0x50         the shard count once shards were added -> ShardLayout
//
// id and shard are 8-byte big-endian, so a scan lists nodes and shards in
// id order.
const (
	stateMemberNode       byte = 0x40
	stateMemberReplicaSet byte = 0x41
	stateShardLayout      byte = 0x50
)

// MemberNodePrefix is the prefix of every node record of the shard.
func MemberNodePrefix(shard uint64) []byte { return stateKey(shard, stateMemberNode) }

// MemberNode is the key of node id's record.
func MemberNode(shard, id uint64) []byte { return AppendUint64(MemberNodePrefix(shard), id) }

// MemberReplicaSetPrefix is the prefix of every replica set record.
func MemberReplicaSetPrefix(shard uint64) []byte { return stateKey(shard, stateMemberReplicaSet) }

// MemberReplicaSet is the key of the replica set of shard `of`.
func MemberReplicaSet(shard, of uint64) []byte {
	return AppendUint64(MemberReplicaSetPrefix(shard), of)
}

// ShardLayout is the key of the cluster's shard count record.
func ShardLayout(shard uint64) []byte { return stateKey(shard, stateShardLayout) }

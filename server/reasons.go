package server

// ReasonAccessKeyNotFound: the tenant has no access key of that id (404).
const ReasonAccessKeyNotFound = "ACCESS_KEY_NOT_FOUND"

// Membership reasons (ErrorInfo).
const (
	ReasonNodeNotFound = "NODE_NOT_FOUND"
	// ReasonNodeConflict: the node was removed, its id is taken by another
	// incarnation, or it is not the incarnation its record names.
	ReasonNodeConflict = "NODE_CONFLICT"
	// ReasonMembershipNotReady: the cluster has not recorded its bootstrap
	// nodes yet (its first seconds): retry.
	ReasonMembershipNotReady = "MEMBERSHIP_NOT_READY"
	// ReasonShardCountChanged: AddShards' expect_shards is not the
	// cluster's shard count.
	ReasonShardCountChanged = "SHARD_COUNT_CHANGED"
)

// ReasonSingleNode: the call needs a multi-node cluster.
const ReasonSingleNode = "SINGLE_NODE_CLUSTER"

// ReasonChangeInProgress: the shard has a membership change under way
// (one at a time per shard).
const ReasonChangeInProgress = "CHANGE_IN_PROGRESS"

// ReasonFIFOPartitionsFixed: an UpdateQueue asked a FIFO queue for more
// partitions (documented in api/quorumq/v1/queue.proto).
const ReasonFIFOPartitionsFixed = "FIFO_PARTITIONS_FIXED"

// ReasonMessageAlreadyReceived (FAILED_PRECONDITION): CancelMessage or
// RescheduleMessage of a message received at least once.
const ReasonMessageAlreadyReceived = "MESSAGE_ALREADY_RECEIVED"

// Reasons of membership outcomes (see api/quorumq/v1/topic.proto).
const (
	ReasonUnknownMember = "UNKNOWN_MEMBER"
	ReasonMemberFenced  = "MEMBER_FENCED"
)

// Reasons of topic outcomes (see api/quorumq/v1/topic.proto).
const (
	ReasonTopicNotFound      = "TOPIC_NOT_FOUND"
	ReasonTopicAlreadyExists = "TOPIC_ALREADY_EXISTS"
	ReasonGroupNotFound      = "GROUP_NOT_FOUND"
	ReasonOffsetOutOfRange   = "OFFSET_OUT_OF_RANGE"
)

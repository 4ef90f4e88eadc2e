package router_test

import "github.com/quorumq/quorumq/server/internal/servertest"

// The helpers shared by the tests of the API tier (server/router) and of
// the shard service (server/shardserver) live in servertest; these short
// names keep the tests readable.
type (
	nodeOpts = servertest.NodeOpts
)

const (
	partShards = servertest.PartShards
)

var (
	startNode           = servertest.StartNode
	tctx                = servertest.Ctx
	reasonOf            = servertest.ReasonOf
	wantReason          = servertest.WantReason
	checkFor            = servertest.CheckFor
	errNotYet           = servertest.ErrNotYet
	createQueue         = servertest.CreateQueue
	send                = servertest.Send
	fifoReceive         = servertest.FIFOReceive
	bodies              = servertest.Bodies
	wantField           = servertest.WantField
	startSharded        = servertest.StartSharded
	partitionDepth      = servertest.PartitionDepth
	handlePartition     = servertest.HandlePartition
	createPartitioned   = servertest.CreatePartitioned
	keyForPartition     = servertest.KeyForPartition
	startMemCluster     = servertest.StartMemCluster
	startShardedCluster = servertest.StartShardedCluster
	startAuthNode       = servertest.StartAuthNode
	token               = servertest.Token
	as                  = servertest.As
)

package shardserver_test

import "github.com/quorumq/quorumq/server/internal/servertest"

// The helpers shared by the tests of the API tier (server/router) and of
// the shard service (server/shardserver) live in servertest; these short
// names keep the tests readable.
type (
	fakeClock  = servertest.FakeClock
	testNode   = servertest.Node
	nodeOpts   = servertest.NodeOpts
	memCluster = servertest.MemCluster
	authNode   = servertest.AuthNode
)

const (
	partShards = servertest.PartShards
	allScopes  = servertest.AllScopes
)

var (
	newFakeClock        = servertest.NewFakeClock
	startNode           = servertest.StartNode
	tctx                = servertest.Ctx
	reasonOf            = servertest.ReasonOf
	wantReason          = servertest.WantReason
	checkFor            = servertest.CheckFor
	errNotYet           = servertest.ErrNotYet
	createQueue         = servertest.CreateQueue
	send                = servertest.Send
	receive             = servertest.Receive
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
	startNodeWithAuth   = servertest.StartNodeWithAuth
	token               = servertest.Token
	as                  = servertest.As
)

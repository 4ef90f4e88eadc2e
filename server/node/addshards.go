package node

import (
	"slices"

	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// More shards online (issue 17, `cluster add-shards`). The cluster's shard
// count is the metadata shard's ShardLayout record (store/shards.go), the
// bootstrap count until the first AddShards. Every storage node, on each
// membership pass, reads it from its own metadata replica and grows: a
// store and a queue server per new shard, registered with the router (so
// calls routed here reach them), the cluster view and the gauges; then
// hostNamed starts the replicas the new replica sets name (AddGroup with
// the recorded initial voters: every initial voter bootstraps the group
// alike, as the bootstrap nodes did). A node that was down, or joins later,
// grows the same way once its metadata replica has the record; a restart
// reads the record before it makes its shards (startStorage).

// shardParts are a node's per-shard objects, by shard; never changed once
// published (growShards publishes a longer copy).
type shardParts struct {
	stores []*store.Store
	srvs   []*shardserver.Server
}

// shardCount is the cluster's shard count as this node knows it.
func (n *Node) shardCount() int {
	if p := n.parts.Load(); p != nil {
		return len(p.srvs)
	}
	return n.cfg.Shards // an API-tier node
}

// srv is the queue server of shard g (nil: not known here).
func (n *Node) srv(g uint64) *shardserver.Server {
	if p := n.parts.Load(); p != nil && g < uint64(len(p.srvs)) {
		return p.srvs[g]
	}
	return nil
}

func (n *Node) shardStore(g uint64) *store.Store {
	if p := n.parts.Load(); p != nil && g < uint64(len(p.stores)) {
		return p.stores[g]
	}
	return nil
}

func (n *Node) metaStore() *store.Store { return n.shardStore(router.MetadataShard) }

// wire connects a shard server to the node's router and topic service.
func (n *Node) wire(srv *shardserver.Server) {
	srv.SetDeliverer(n.router.Deliver)
	srv.SetCatalog(n.router)
	srv.SetTopicUnsubscriber(n.topics.Unsubscribed)
}

// learnLayout grows this node to the shard count its metadata replica
// records.
func (n *Node) learnLayout(meta *store.Store) error {
	l, err := meta.ShardLayout()
	if err != nil || l == nil {
		return err
	}
	if int(l.GetShards()) > n.shardCount() {
		n.growShards(l)
	}
	return nil
}

// growShards makes the stores and servers of the shards l adds, then
// tells the router and the cluster view. The groups start in hostNamed,
// on the nodes the replica sets name.
func (n *Node) growShards(l *storepb.ShardLayout) {
	n.growMu.Lock()
	defer n.growMu.Unlock()
	old := n.parts.Load()
	want := min(int(l.GetShards()), maxShards)
	if len(old.srvs) >= want {
		return
	}
	next := &shardParts{stores: slices.Clone(old.stores), srvs: slices.Clone(old.srvs)}
	for g := uint64(len(old.srvs)); g < uint64(want); g++ {
		st := store.New(n.sdb, g)
		srv := shardserver.New(n.srvCfg, n.host, st, g)
		n.wire(srv)
		srv.Start()
		n.router.AddLocal(g, srv)
		next.stores = append(next.stores, st)
		next.srvs = append(next.srvs, srv)
	}
	n.parts.Store(next)
	if n.sdb != n.db {
		// The state without a WAL is durable at flushes: a node killed
		// before the next one would restart with the old layout and
		// refuse the --shards it was restarted with.
		if err := n.sdb.Flush(); err != nil {
			n.log.Error("flush the state after adding shards", "err", err)
		}
	}
	n.router.SetLayout(want, int(l.GetBaseShards()))
	if n.cluster != nil {
		n.cluster.SetShards(n.groups())
	}
	n.log.Info("shards added", "shards", want, "was", len(old.srvs), "base", l.GetBaseShards())
}

// bootstrapVoters returns the initial voters of a shard AddShards made if
// node id is one of them and still a voter (it starts the group with
// exactly them); nil otherwise: the node joins empty and the shard's
// leader sends it a snapshot.
func bootstrapVoters(rs *storepb.ReplicaSetRecord, id uint64) []uint64 {
	if slices.Contains(rs.GetInitialVoters(), id) && slices.Contains(rs.GetVoters(), id) {
		return rs.GetInitialVoters()
	}
	return nil
}

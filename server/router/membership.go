package router

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// ListNodes routes to the metadata shard's leader.
func (r *Router) ListNodes(ctx context.Context, req *qv1.ListNodesRequest) (*qv1.ListNodesResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	return call(ctx, r, target{shard: MetadataShard}, clusterMethod+"ListNodes", req, (*shardserver.Server).ListNodes)
}

// JoinCluster routes to the metadata shard's leader and adds the shard
// count.
func (r *Router) JoinCluster(ctx context.Context, req *qv1.JoinClusterRequest) (*qv1.JoinClusterResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	resp, err := call(ctx, r, target{shard: MetadataShard}, clusterMethod+"JoinCluster", req, (*shardserver.Server).JoinCluster)
	if err != nil {
		return nil, err
	}
	resp.Shards = uint32(r.baseShards()) // shards added since: from the metadata shard
	return resp, nil
}

// ListNodes implements ClusterService.
func (c *ClusterServer) ListNodes(ctx context.Context, req *qv1.ListNodesRequest) (*qv1.ListNodesResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*shardserver.Server).ListNodes)
	}
	return c.router.ListNodes(ctx, req)
}

// JoinCluster implements ClusterService.
func (c *ClusterServer) JoinCluster(ctx context.Context, req *qv1.JoinClusterRequest) (*qv1.JoinClusterResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*shardserver.Server).JoinCluster)
	}
	return c.router.JoinCluster(ctx, req)
}

// SetPeer adds node id's peer address, or moves it (membership records
// name nodes that joined after start). A connection to an old address is
// closed.
func (f *Forwarder) SetPeer(id uint64, addr string) {
	if id == f.self {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.peers[id] == addr {
		return
	}
	f.peers = maps.Clone(f.peers) // the map passed to NewForwarder is shared
	if f.peers == nil {
		f.peers = map[uint64]string{}
	}
	f.peers[id] = addr
	if c, ok := f.conns[id]; ok {
		_ = c.Close()
		delete(f.conns, id)
	}
}

// RemoveNode routes to the metadata shard's leader.
func (r *Router) RemoveNode(ctx context.Context, req *qv1.RemoveNodeRequest) (*qv1.RemoveNodeResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	return call(ctx, r, target{shard: MetadataShard}, clusterMethod+"RemoveNode", req, (*shardserver.Server).RemoveNode)
}

// RemoveNode implements ClusterService.
func (c *ClusterServer) RemoveNode(ctx context.Context, req *qv1.RemoveNodeRequest) (*qv1.RemoveNodeResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*shardserver.Server).RemoveNode)
	}
	return c.router.RemoveNode(ctx, req)
}

// addShardsWait bounds how long AddShards waits for the new shards'
// leaders (and the caller's deadline, less a second to answer in).
const addShardsWait = 20 * time.Second

// AddShards routes to the metadata shard's leader, then waits (bounded)
// until every new shard has a leader, so the next call can use them.
func (r *Router) AddShards(ctx context.Context, req *qv1.AddShardsRequest) (*qv1.AddShardsResponse, error) {
	if _, err := server.Require(ctx, server.ScopeClusterAdmin); err != nil {
		return nil, err
	}
	if r.cfg.Forwarder == nil {
		return nil, server.StatusError(codes.FailedPrecondition, server.ReasonSingleNode,
			"a single-node cluster keeps the shard count it was started with (--shards); add-shards needs a cluster started with --peers", nil)
	}
	var resp *qv1.AddShardsResponse
	for {
		var err error
		resp, err = call(ctx, r, target{shard: MetadataShard}, clusterMethod+"AddShards", req, (*shardserver.Server).AddShards)
		if err == nil {
			break
		}
		if server.ReasonOf(err) != server.ReasonMembershipNotReady {
			return nil, err
		}
		select { // a new cluster records its nodes within a second or so
		case <-ctx.Done():
			return nil, err
		case <-time.After(200 * time.Millisecond):
		}
	}
	wait := addShardsWait
	if d, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(d)-time.Second)
	}
	wctx, cancel := context.WithTimeout(ctx, max(wait, 0))
	defer cancel()
	for _, rs := range resp.GetReplicaSets() {
		if _, err := r.cfg.View.Leader(wctx, rs.GetShard()); err != nil {
			for wctx.Err() == nil { // the view waits a few seconds at a time
				if _, err = r.cfg.View.Leader(wctx, rs.GetShard()); err == nil {
					break
				}
			}
			if err != nil {
				r.log.Warn("add shards: a new shard has no leader yet", "shard", rs.GetShard(), "err", err)
				break
			}
		}
	}
	return resp, nil
}

// AddShards implements ClusterService.
func (c *ClusterServer) AddShards(ctx context.Context, req *qv1.AddShardsRequest) (*qv1.AddShardsResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*shardserver.Server).AddShards)
	}
	return c.router.AddShards(ctx, req)
}

// peerNodeAddressMethod records a storage node's client address in its
// node record (peer service, on the metadata shard's leader).
const peerNodeAddressMethod = "/" + server.PeerService + "/NodeAddress"

// RecordNodeAddress records node id's client (gRPC API) address in its
// node record, through the metadata shard's leader: a storage node calls
// it for itself whenever its record differs (the bootstrap records only
// the writer's; a node's address may change between runs). incarnation is
// the node's: a record of another one is refused (a wiped disk).
func (r *Router) RecordNodeAddress(ctx context.Context, id, incarnation uint64, clientAddr string) (*storepb.NodeRecord, error) {
	req := &storepb.RegisterNode{Node: &storepb.NodeRecord{Id: id, ClientAddr: clientAddr, Incarnation: incarnation}}
	leader, err := r.leaderOf(ctx, MetadataShard)
	if err != nil {
		return nil, err
	}
	if srv := r.localServer(MetadataShard); srv != nil && leader == r.cfg.Self {
		return recordAddress(ctx, srv, req)
	}
	if r.cfg.Forwarder == nil {
		return nil, server.StatusError(codes.Unavailable, server.ReasonNotLeader, "no route to the metadata shard", nil)
	}
	out := &storepb.NodeRecord{}
	if err := r.cfg.Forwarder.invoke(ctx, leader, peerNodeAddressMethod, req, out, server.ShardHeader, strconv.FormatUint(MetadataShard, 10)); err != nil {
		return nil, err
	}
	return out, nil
}

// recordAddress proposes a node's client address (and nothing else of
// req) on the metadata shard, which this node leads.
func recordAddress(ctx context.Context, srv *shardserver.Server, req *storepb.RegisterNode) (*storepb.NodeRecord, error) {
	n := req.GetNode()
	if n.GetId() == 0 || n.GetClientAddr() == "" {
		return nil, server.FieldError("node", "id and client address are required")
	}
	if len(n.GetClientAddr()) > maxNodeAddr {
		// Refused before it reaches the metadata log (apply refuses it too).
		return nil, server.FieldError("node.client_addr", fmt.Sprintf("must be at most %d bytes", maxNodeAddr))
	}
	rec := &storepb.NodeRecord{Id: n.GetId(), ClientAddr: n.GetClientAddr(), Incarnation: n.GetIncarnation()}
	res, err := srv.ProposeMembership(ctx, &storepb.Command{Op: &storepb.Command_RegisterNode{RegisterNode: &storepb.RegisterNode{Node: rec}}})
	if err != nil {
		return nil, server.ToStatus(err)
	}
	return res.Node, nil
}

// nodeAddress serves RecordNodeAddress on the metadata shard's leader. With
// peer mutual TLS a node records its own address only.
func (p *PeerServer) nodeAddress(ctx context.Context, req *storepb.RegisterNode) (*storepb.NodeRecord, error) {
	if id, err := server.PeerIdentityFrom(ctx); err == nil && (id.Role != server.PeerRoleNode || id.ID != req.GetNode().GetId()) {
		return nil, server.StatusError(codes.PermissionDenied, server.ReasonPermissionDenied,
			fmt.Sprintf("%v may record only its own address, not node %d's", id, req.GetNode().GetId()), nil)
	}
	srv, err := p.metadataAddressed(ctx, "node addresses live")
	if err != nil {
		return nil, err
	}
	return recordAddress(ctx, srv, req)
}

// metadataAddressed is addressed for a peer method whose records (what
// says "<what> on the metadata shard") only the metadata shard holds.
func (p *PeerServer) metadataAddressed(ctx context.Context, what string) (*shardserver.Server, error) {
	if shard, ok := direct(ctx); ok && shard != MetadataShard {
		return nil, server.StatusError(codes.InvalidArgument, server.ReasonInvalidArgument,
			fmt.Sprintf("%s on the metadata shard, not shard %d", what, shard), nil)
	}
	return p.addressed(ctx)
}

// maxNodeAddr bounds a recorded client address (as the store's apply does).
const maxNodeAddr = 256

package router

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// StripInternalHeaders is the client-facing listener's first interceptor:
// a client cannot address one shard or partition directly (that would skip
// the router's checks, e.g. create a partition outside the queue quota).
func StripInternalHeaders() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			for _, h := range server.InternalHeaders {
				if len(md.Get(h)) > 0 {
					md = md.Copy()
					for _, h := range server.InternalHeaders {
						delete(md, h)
					}
					ctx = metadata.NewIncomingContext(ctx, md)
					break
				}
			}
		}
		return handler(ctx, req)
	}
}

// PeerServer implements the peer service.
type PeerServer struct {
	router  *Router
	cluster *ClusterServer
}

// NewPeerServer returns the peer service of a node.
func NewPeerServer(r *Router, c *ClusterServer) *PeerServer {
	return &PeerServer{router: r, cluster: c}
}

// Register adds the peer service to the peer listener's gRPC server.
func (p *PeerServer) Register(s *grpc.Server) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: server.PeerService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "DeliverOutbox", Handler: peerHandler(server.PeerDeliverMethod, p.deliverOutbox)},
			{MethodName: "Cluster", Handler: peerHandler(server.PeerClusterMethod, p.clusterView)},
			{MethodName: "NodeAddress", Handler: peerHandler(peerNodeAddressMethod, p.nodeAddress)},
			{MethodName: "ShardLayout", Handler: peerHandler(peerShardLayoutMethod, p.shardLayout)},
			{MethodName: "Quota", Handler: peerHandler(peerQuotaMethod, p.quota)},
			{MethodName: "QueueRecord", Handler: peerHandler(shardserver.PeerRecordMethod, p.queueRecord)},
			{MethodName: "AccessKeyGrant", Handler: peerHandler(peerAccessKeyMethod, p.accessKeyGrant)},
			{MethodName: "TopicPropose", Handler: peerHandler(peerTopicProposeMethod, p.topicPropose)},
			{MethodName: "TopicRead", Handler: peerHandler(peerTopicReadMethod, p.topicRead)},
			{MethodName: "TopicCatalog", Handler: peerHandler(peerTopicCatalogMethod, p.topicCatalog)},
			{MethodName: "TopicGroupMember", Handler: peerHandler(peerTopicMemberMethod, p.topicGroupMember)},
		},
		Metadata: "server/router/peer.go",
	}, p)
}

func peerHandler[Req any, PReq interface {
	*Req
	any
}, Resp any](method string, f func(context.Context, PReq) (Resp, error)) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	return func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
		in := PReq(new(Req))
		if err := dec(in); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, req any) (any, error) { return f(ctx, req.(PReq)) }
		if icpt == nil {
			return h(ctx, in)
		}
		return icpt(ctx, in, &grpc.UnaryServerInfo{Server: nil, FullMethod: method}, h)
	}
}

// addressed is the local server of the shard a peer call names in its
// header; this node must lead it.
func (p *PeerServer) addressed(ctx context.Context) (*shardserver.Server, error) {
	shard, ok := direct(ctx)
	if !ok {
		return nil, server.StatusError(codes.InvalidArgument, server.ReasonInvalidArgument, "no shard header", nil)
	}
	return p.router.serving(ctx, shard)
}

// deliverOutbox delivers entries to the shard in the call's header, which
// this node must lead; the answer lists the ids delivered.
func (p *PeerServer) deliverOutbox(ctx context.Context, req *storepb.DeliverOutbox) (*storepb.AckOutbox, error) {
	srv, err := p.addressed(ctx)
	if err != nil {
		return nil, err
	}
	ack, err := srv.DeliverOutbox(ctx, req.GetEntries())
	if err != nil {
		return nil, server.ToStatus(err)
	}
	return ack, nil
}

// clusterView answers with this node's view of nodes and shards.
func (p *PeerServer) clusterView(ctx context.Context, _ *qv1.GetClusterRequest) (*qv1.GetClusterResponse, error) {
	return p.cluster.view(ctx)
}

// deliveryShard is the shard of partition 0 of a target queue (its record
// of truth names it, or it has the base placement); a queue that is gone
// goes to its base placement, whose shard answers for it as for any
// missing queue.
func (r *Router) deliveryShard(ctx context.Context, tenant, name string) (uint64, error) {
	rec, err := r.QueueRecord(ctx, tenant, name)
	switch {
	case err == nil && len(rec.GetPartitionShards()) > 0:
		return rec.GetPartitionShards()[0], nil
	case err == nil, errors.Is(err, store.ErrQueueNotFound):
		return r.shardOf(tenant, name, 0), nil
	}
	return 0, err
}

// Deliver is the outbox relay of every shard: entries go to the shard that
// holds partition 0 of their target queue (always the same one, so a
// retried delivery meets its delivered marker), on whichever node leads it.
func (r *Router) Deliver(ctx context.Context, entries []*storepb.OutboxEntry) (*storepb.AckOutbox, error) {
	groups := map[uint64][]*storepb.OutboxEntry{}
	var shards []uint64
	for _, e := range entries {
		sh, err := r.deliveryShard(ctx, e.GetTargetTenant(), e.GetTargetQueue())
		if err != nil {
			return nil, err // the relay tries again later
		}
		if groups[sh] == nil {
			shards = append(shards, sh)
		}
		groups[sh] = append(groups[sh], e)
	}
	// The target shards in parallel: a fan-out page names several queues,
	// and each delivery is a proposal on another group.
	type result struct {
		ack *storepb.AckOutbox
		err error
	}
	results, _ := parallel(len(shards), func(i int) (result, error) {
		ack, err := r.deliverTo(ctx, shards[i], groups[shards[i]])
		return result{ack, err}, nil
	})
	out := &storepb.AckOutbox{}
	var firstErr error
	for i, res := range results {
		out.Ids = append(out.Ids, res.ack.GetIds()...)
		out.ReturnIds = append(out.ReturnIds, res.ack.GetReturnIds()...)
		if res.err != nil && firstErr == nil {
			firstErr = fmt.Errorf("deliver to shard %d: %w", shards[i], res.err)
		}
	}
	return out, firstErr
}

func (r *Router) deliverTo(ctx context.Context, shard uint64, entries []*storepb.OutboxEntry) (*storepb.AckOutbox, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	leader, err := r.cfg.View.Leader(ctx, shard)
	if err != nil {
		return nil, err
	}
	if srv := r.localServer(shard); srv != nil && leader == r.cfg.Self {
		return srv.DeliverOutbox(ctx, entries)
	}
	if r.cfg.Forwarder == nil {
		return nil, fmt.Errorf("no route to shard %d", shard)
	}
	out := &storepb.AckOutbox{}
	if err := r.cfg.Forwarder.invoke(ctx, leader, server.PeerDeliverMethod, &storepb.DeliverOutbox{Entries: entries}, out,
		server.ShardHeader, fmt.Sprint(shard)); err != nil {
		if hint, ok := retryable(err); ok {
			r.cfg.View.Hint(shard, hint)
		}
		return nil, err
	}
	return out, nil
}

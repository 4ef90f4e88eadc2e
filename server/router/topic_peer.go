package router

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Topic calls between nodes: the router authorizes and validates a client
// call, then asks the leader of one shard — here, or on its node through
// these peer methods — to propose a topic command or read. The messages
// are internal (storepb); the peer listener's mutual TLS protects them
// like the outbox deliveries.
const (
	peerTopicProposeMethod = "/" + server.PeerService + "/TopicPropose"
	peerTopicReadMethod    = "/" + server.PeerService + "/TopicRead"
	peerTopicCatalogMethod = "/" + server.PeerService + "/TopicCatalog"
	peerTopicMemberMethod  = "/" + server.PeerService + "/TopicGroupMember"
)

func (p *PeerServer) topicPropose(ctx context.Context, req *storepb.Command) (*storepb.TopicCommandReply, error) {
	srv, err := p.addressed(ctx)
	if err != nil {
		return nil, err
	}
	return srv.TopicPropose(ctx, req)
}

func (p *PeerServer) topicRead(ctx context.Context, req *storepb.TopicReadRequest) (*storepb.TopicReadReply, error) {
	srv, err := p.addressed(ctx)
	if err != nil {
		return nil, err
	}
	return srv.TopicRead(ctx, req)
}

func (p *PeerServer) topicCatalog(ctx context.Context, req *storepb.TopicCatalogRequest) (*storepb.TopicCatalogReply, error) {
	srv, err := p.addressed(ctx)
	if err != nil {
		return nil, err
	}
	return srv.TopicCatalog(ctx, req)
}

func (p *PeerServer) topicGroupMember(ctx context.Context, req *storepb.TopicGroupMemberRequest) (*storepb.TopicGroupMemberReply, error) {
	srv, err := p.addressed(ctx)
	if err != nil {
		return nil, err
	}
	return srv.TopicGroupMember(ctx, req)
}

// leaderCall runs a method on the leader of shard (topic methods, the
// shard layout read): the local server when this node leads it, else the
// leader's node. A NOT_LEADER answer or a
// node that cannot be dialled (nothing was sent) is retried on the new
// leader until the deadline, like call.
func leaderCall[Req proto.Message, Resp proto.Message](ctx context.Context, r *Router, shard uint64, method string, req Req,
	newResp func() Resp, local func(*shardserver.Server, context.Context, Req) (Resp, error)) (Resp, error) {
	var zero Resp
	if r.shardCount() == 0 {
		return zero, server.StatusError(codes.Unavailable, server.ReasonNoQuorum, "no storage node has answered this API node yet", nil)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.cfg.Timeout)
		defer cancel()
	}
	backoff := 10 * time.Millisecond
	var hinted uint64
	for {
		leader := hinted
		if leader == 0 {
			var err error
			if leader, err = r.leaderOf(ctx, shard); err != nil {
				return zero, err
			}
		}
		var resp Resp
		var err error
		if srv := r.localServer(shard); srv != nil && leader == r.cfg.Self {
			resp, err = local(srv, ctx, req)
			err = shardserver.TopicStatus(err)
		} else if r.cfg.Forwarder == nil {
			return zero, server.StatusError(codes.Unavailable, server.ReasonNotLeader, fmt.Sprintf("no route to shard %d", shard), nil)
		} else {
			fctx, span := r.tracer.Start(ctx, server.SpanForward, trace.WithAttributes(attribute.String("rpc.method", method),
				attribute.Int64("quorumq.shard", int64(shard)), attribute.Int64("quorumq.leader", int64(leader))))
			resp = newResp()
			err = r.cfg.Forwarder.invoke(fctx, leader, method, req, resp, server.ShardHeader, strconv.FormatUint(shard, 10))
			shardserver.EndSpan(span, err)
		}
		if err == nil {
			return resp, nil
		}
		var again bool
		if hinted, again = r.afterFailure(ctx, shard, leader, err, &backoff); !again {
			return zero, err
		}
	}
}

// ProposePartitions proposes cmd(p) on the shard of each partition p at
// once (the group coordinator's fences, see TopicProposer).
func (r *Router) ProposePartitions(ctx context.Context, tenant, topic string, placement uint32, ps []int32, cmd func(p int32) *storepb.Command, done func(p int32)) error {
	shards := r.topicPlacement(placement)
	_, err := parallel(len(ps), func(i int) (struct{}, error) {
		p := ps[i]
		_, err := r.proposeTopic(ctx, TopicShardOf(shards, tenant, topic, p), cmd(p))
		if err == nil {
			done(p)
		}
		return struct{}{}, err
	})
	return err
}

// proposeTopic proposes a topic command on shard's leader.
func (r *Router) proposeTopic(ctx context.Context, shard uint64, cmd *storepb.Command) (*storepb.TopicCommandReply, error) {
	return leaderCall(ctx, r, shard, peerTopicProposeMethod, cmd,
		func() *storepb.TopicCommandReply { return &storepb.TopicCommandReply{} }, (*shardserver.Server).TopicPropose)
}

// readTopicShard reads a partition log on shard's leader.
func (r *Router) readTopicShard(ctx context.Context, shard uint64, req *storepb.TopicReadRequest) (*storepb.TopicReadReply, error) {
	return leaderCall(ctx, r, shard, peerTopicReadMethod, req,
		func() *storepb.TopicReadReply { return &storepb.TopicReadReply{} }, (*shardserver.Server).TopicRead)
}

// topicCatalog reads topic records on the metadata shard's leader.
func (r *Router) topicCatalog(ctx context.Context, req *storepb.TopicCatalogRequest) (*storepb.TopicCatalogReply, error) {
	return leaderCall(ctx, r, MetadataShard, peerTopicCatalogMethod, req,
		func() *storepb.TopicCatalogReply { return &storepb.TopicCatalogReply{} }, (*shardserver.Server).TopicCatalog)
}

// topicGroupMember runs a member call on the group's coordinator: the
// leader of shard.
func (r *Router) topicGroupMember(ctx context.Context, shard uint64, req *storepb.TopicGroupMemberRequest) (*storepb.TopicGroupMemberReply, error) {
	return leaderCall(ctx, r, shard, peerTopicMemberMethod, req,
		func() *storepb.TopicGroupMemberReply { return &storepb.TopicGroupMemberReply{} }, (*shardserver.Server).TopicGroupMember)
}

package router

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/store"
)

// CancelMessage implements QueueService on the partition holding the id.
func (r *Router) CancelMessage(ctx context.Context, req *qv1.CancelMessageRequest) (*qv1.CancelMessageResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).CancelMessage)
	}
	return byMessageID(ctx, r, req, func(name string) { req.Queue = name }, "CancelMessage", (*shardserver.Server).CancelMessage)
}

// RescheduleMessage implements QueueService on the partition holding the id.
func (r *Router) RescheduleMessage(ctx context.Context, req *qv1.RescheduleMessageRequest) (*qv1.RescheduleMessageResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).RescheduleMessage)
	}
	if _, err := shardserver.RescheduleOp(req); err != nil {
		return nil, err
	}
	return byMessageID(ctx, r, req, func(name string) { req.Queue = name }, "RescheduleMessage", (*shardserver.Server).RescheduleMessage)
}

// byMessageID routes a call on one message to the partition its id names.
// An id carries the shard (and queue id), not the partition: the
// partitions of the queue on that shard are asked in turn until one has
// the message (several partitions can share a shard; queue ids tell them
// apart, so at most one finds it).
func byMessageID[Req interface {
	proto.Message
	GetQueue() string
	GetMessageId() string
}, Resp proto.Message](ctx context.Context, r *Router, req Req, setQueue func(string), method string,
	local func(*shardserver.Server, context.Context, Req) (Resp, error)) (Resp, error) {
	var zero Resp
	tenant, q, err := r.resolve(ctx, "queue", req.GetQueue(), server.ScopeMessagesSend)
	if err != nil {
		return zero, err
	}
	ref, err := shardserver.CheckMessageID("message_id", req.GetMessageId())
	if err != nil {
		return zero, err
	}
	name := req.GetQueue()
	lastErr := fmt.Errorf("%w: %s in %s", store.ErrMessageNotFound, req.GetMessageId(), name)
	for i := range partitions(q) {
		if r.partitionShard(tenant, q, i) != ref.Shard {
			continue
		}
		setQueue(store.PartitionName(name, i))
		resp, err := onPartition(ctx, r, tenant, q, i, method, req, local)
		if err == nil || server.ReasonOf(err) != server.ReasonMessageNotFound {
			return resp, err
		}
		lastErr = err
	}
	return zero, lastErr
}

package router

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/store"
)

// Queue calls: the metadata shard decides (names, quotas, dead-letter
// checks), then the partitions follow. A fan-out that stops half way is
// repaired: creates and updates are idempotent and re-run by the next
// call that finds a partition missing (withPartition); a partition left by
// a delete is replaced when a queue of that name is created again (its
// incarnation differs) and otherwise ages out by retention.

// CreateQueue implements QueueService.
func (r *Router) CreateQueue(ctx context.Context, req *qv1.CreateQueueRequest) (*qv1.CreateQueueResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).CreateQueue)
	}
	return recordThenPartitions(ctx, r, req.GetName(), queueMethod+"CreateQueue", req, (*shardserver.Server).CreateQueue)
}

// recordThenPartitions writes a queue's record of truth on the metadata
// shard, then brings every partition in line with the new record.
func recordThenPartitions[Req proto.Message, Resp interface {
	proto.Message
	GetQueue() *qv1.Queue
}](ctx context.Context, r *Router, name, method string, req Req, local func(*shardserver.Server, context.Context, Req) (Resp, error)) (Resp, error) {
	var zero Resp
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin)
	if err != nil {
		return zero, err
	}
	if err := checkName("name", name); err != nil {
		return zero, err
	}
	resp, err := call(ctx, r, target{shard: MetadataShard}, method, req, local)
	if err != nil {
		return zero, err
	}
	r.remember(tenant, resp.GetQueue())
	if err := r.ensurePartitions(ctx, tenant, resp.GetQueue()); err != nil {
		return zero, err
	}
	return resp, nil
}

// GetQueue implements QueueService: the record of truth with the stats of
// every partition added up.
func (r *Router) GetQueue(ctx context.Context, req *qv1.GetQueueRequest) (*qv1.GetQueueResponse, error) {
	if sh, ok := direct(ctx); ok {
		if _, recordOnly := server.HeaderInt(ctx, server.RecordHeader); recordOnly {
			return onShard(ctx, r, sh, req, (*shardserver.Server).GetQueueRecord)
		}
		return onShard(ctx, r, sh, req, (*shardserver.Server).GetQueue)
	}
	tenant, err := server.Require(ctx, shardserver.ReadScopes...)
	if err != nil {
		return nil, err
	}
	if err := checkName("name", req.GetName()); err != nil {
		return nil, err
	}
	r.forget(tenant, req.GetName())
	q, err := r.queue(ctx, tenant, req.GetName())
	if err != nil {
		return nil, err
	}
	parts, err := fanOut(q, func(i int) (*qv1.GetQueueResponse, error) {
		return onPartition(ctx, r, tenant, q, i, "GetQueue", &qv1.GetQueueRequest{Name: store.PartitionName(q.GetName(), i)}, (*shardserver.Server).GetQueue)
	})
	if err != nil {
		return nil, err
	}
	out := &qv1.Queue{Name: q.GetName(), Attributes: q.GetAttributes(), Tags: q.GetTags(), CreatedAt: q.GetCreatedAt(), UpdatedAt: q.GetUpdatedAt(), Stats: &qv1.QueueStats{}}
	for i := range parts {
		out.PartitionShards = append(out.PartitionShards, r.partitionShard(tenant, q, i))
	}
	for _, p := range parts {
		st := p.GetQueue().GetStats()
		out.Stats.Visible += st.GetVisible()
		out.Stats.InFlight += st.GetInFlight()
		out.Stats.Delayed += st.GetDelayed()
	}
	return &qv1.GetQueueResponse{Queue: out}, nil
}

// ListQueues implements QueueService from the metadata shard.
func (r *Router) ListQueues(ctx context.Context, req *qv1.ListQueuesRequest) (*qv1.ListQueuesResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).ListQueues)
	}
	if _, err := server.Require(ctx, shardserver.ReadScopes...); err != nil {
		return nil, err
	}
	if strings.Contains(req.GetPrefix(), "#") {
		return nil, server.FieldError("prefix", "a queue name has no '#'")
	}
	// On a one-shard cluster the metadata shard also stores the partitions
	// (name#i) beside the records: they are not queues, so skip them, and
	// read on while they thinned a page.
	want := int(req.GetPageSize())
	if want == 0 {
		want = shardserver.DefaultPageSize
	}
	sub := proto.Clone(req).(*qv1.ListQueuesRequest)
	out := &qv1.ListQueuesResponse{}
	for {
		resp, err := call(ctx, r, target{shard: MetadataShard}, queueMethod+"ListQueues", sub, (*shardserver.Server).ListQueues)
		if err != nil {
			return nil, err
		}
		for _, q := range resp.GetQueues() {
			if !strings.Contains(q.GetName(), "#") {
				out.Queues = append(out.Queues, q)
			}
		}
		out.NextPageToken = resp.GetNextPageToken()
		if out.NextPageToken == "" || len(out.Queues) >= want {
			return out, nil
		}
		sub.PageSize, sub.PageToken = int32(want-len(out.Queues)), out.NextPageToken
	}
}

// UpdateQueue implements QueueService: the record of truth first, then
// every partition (new ones are created: partitions may grow).
func (r *Router) UpdateQueue(ctx context.Context, req *qv1.UpdateQueueRequest) (*qv1.UpdateQueueResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).UpdateQueue)
	}
	if err := r.checkGrowth(ctx, req); err != nil {
		return nil, err
	}
	return recordThenPartitions(ctx, r, req.GetName(), queueMethod+"UpdateQueue", req, (*shardserver.Server).UpdateQueue)
}

// checkGrowth refuses more partitions for a FIFO queue. A group's partition
// is a hash of the group modulo the partition count, so growing moves most
// groups to another partition while their earlier messages still wait on
// the old one: order and deduplication within the group would break.
func (r *Router) checkGrowth(ctx context.Context, req *qv1.UpdateQueueRequest) error {
	grows := false
	for _, p := range req.GetUpdateMask().GetPaths() {
		grows = grows || strings.TrimPrefix(p, "attributes.") == "partitions"
	}
	if !grows {
		return nil // without the path in the mask the partitions stay as they are
	}
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin)
	if err != nil {
		return err
	}
	if err := checkName("name", req.GetName()); err != nil {
		return err
	}
	r.forget(tenant, req.GetName())
	q, err := r.queue(ctx, tenant, req.GetName())
	if err != nil {
		return err
	}
	if q.GetAttributes().GetFifo() && int(req.GetAttributes().GetPartitions()) > partitions(q) {
		return server.StatusError(codes.FailedPrecondition, server.ReasonFIFOPartitionsFixed,
			fmt.Sprintf("the partitions of FIFO queue %s cannot grow: its message groups would move to other partitions and lose their order", q.GetName()),
			map[string]string{"field": "attributes.partitions"})
	}
	return nil
}

// DeleteQueue implements QueueService: the record of truth first (it
// refuses a queue that is another's dead-letter queue), then the
// partitions.
func (r *Router) DeleteQueue(ctx context.Context, req *qv1.DeleteQueueRequest) (*qv1.DeleteQueueResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).DeleteQueue)
	}
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	if err := checkName("name", req.GetName()); err != nil {
		return nil, err
	}
	r.forget(tenant, req.GetName())
	q, err := r.queue(ctx, tenant, req.GetName())
	if err != nil {
		return nil, err
	}
	resp, err := call(ctx, r, target{shard: MetadataShard}, queueMethod+"DeleteQueue", req, (*shardserver.Server).DeleteQueue)
	if err != nil {
		return nil, err
	}
	r.forget(tenant, req.GetName())
	r.rr.Delete(cacheKey(tenant, req.GetName()))
	_, err = fanOut(q, func(i int) (*qv1.DeleteQueueResponse, error) {
		if r.isRecord(tenant, q, i) {
			return nil, nil
		}
		resp, err := call(ctx, r, r.partitionTarget(tenant, q, i), "DeleteQueue",
			&qv1.DeleteQueueRequest{Name: store.PartitionName(q.GetName(), i)}, (*shardserver.Server).DeleteQueue)
		if server.ReasonOf(err) == server.ReasonQueueNotFound {
			err = nil
		}
		return resp, err
	})
	if err != nil {
		// The queue is gone; a partition left behind holds no name a
		// client can reach and is replaced if the name is used again.
		r.log.Warn("delete queue: a partition was not deleted", "tenant", tenant, "queue", q.GetName(), "err", err)
	}
	return resp, nil
}

// PurgeQueue implements QueueService on every partition.
func (r *Router) PurgeQueue(ctx context.Context, req *qv1.PurgeQueueRequest) (*qv1.PurgeQueueResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).PurgeQueue)
	}
	tenant, q, err := r.resolve(ctx, "name", req.GetName(), server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	_, err = fanOut(q, func(i int) (*qv1.PurgeQueueResponse, error) {
		return onPartition(ctx, r, tenant, q, i, "PurgeQueue", &qv1.PurgeQueueRequest{Name: store.PartitionName(q.GetName(), i)}, (*shardserver.Server).PurgeQueue)
	})
	if err != nil {
		return nil, err
	}
	return &qv1.PurgeQueueResponse{}, nil
}

// RedriveMessages implements QueueService: each partition of the
// dead-letter queue moves its share through its outbox.
func (r *Router) RedriveMessages(ctx context.Context, req *qv1.RedriveMessagesRequest) (*qv1.RedriveMessagesResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).RedriveMessages)
	}
	tenant, q, err := r.resolve(ctx, "dead_letter_queue", req.GetDeadLetterQueue(), server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	if t := req.GetTargetQueue(); t != "" {
		// Partition copies cannot see the target: check it here.
		if err := checkName("target_queue", t); err != nil {
			return nil, err
		}
		if t == q.GetName() {
			return nil, server.FieldError("target_queue", "must differ from the queue redriven")
		}
		tq, err := r.queue(ctx, tenant, t)
		if err != nil {
			return nil, err
		}
		if tq.GetAttributes().GetFifo() && !q.GetAttributes().GetFifo() {
			return nil, server.FieldError("target_queue", "a FIFO queue takes redriven messages only from a FIFO queue (they need a group_id)")
		}
	}
	max := req.GetMaxMessages()
	if max < 0 || max > shardserver.MaxRedriveMessages {
		return nil, server.FieldError("max_messages", fmt.Sprintf("must be 0 to %d", shardserver.MaxRedriveMessages))
	}
	if max == 0 {
		max = shardserver.DefaultRedriveBatch
	}
	var moved int64
	for i := range partitions(q) {
		if int64(max)-moved <= 0 {
			break
		}
		sub := &qv1.RedriveMessagesRequest{DeadLetterQueue: store.PartitionName(q.GetName(), i), TargetQueue: req.GetTargetQueue(),
			MaxMessages: int32(int64(max) - moved)}
		resp, err := onPartition(ctx, r, tenant, q, i, "RedriveMessages", sub, (*shardserver.Server).RedriveMessages)
		if err != nil {
			return nil, err
		}
		moved += resp.GetMoved()
	}
	return &qv1.RedriveMessagesResponse{Moved: moved}, nil
}

// onShard serves a call routed to one shard of this node.
func onShard[Req, Resp any](ctx context.Context, r *Router, shard uint64, req Req, f func(*shardserver.Server, context.Context, Req) (Resp, error)) (Resp, error) {
	srv, err := r.serving(ctx, shard)
	if err != nil {
		var zero Resp
		return zero, err
	}
	return f(srv, ctx, req)
}

// checkName validates a queue name a client gave (no partition suffix).
func checkName(field, name string) error {
	return server.AsFieldError(field, store.ValidateQueueName(name))
}

package router

import (
	"context"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server/shardserver"
)

// NackMessage implements QueueService on the partition named by the handle.
func (r *Router) NackMessage(ctx context.Context, req *qv1.NackMessageRequest) (*qv1.NackMessageResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).NackMessage)
	}
	return byHandle(ctx, r, req, func(name string) { req.Queue = name }, "NackMessage", (*shardserver.Server).NackMessage)
}

// NackMessageBatch implements QueueService: one call per partition.
func (r *Router) NackMessageBatch(ctx context.Context, req *qv1.NackMessageBatchRequest) (*qv1.NackMessageBatchResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).NackMessageBatch)
	}
	ok, failed, err := handleBatch(ctx, r, req.GetQueue(), req.GetEntries(),
		func(queue string, part []*qv1.NackMessageBatchEntry) *qv1.NackMessageBatchRequest {
			return &qv1.NackMessageBatchRequest{Queue: queue, Entries: part}
		}, queueMethod+"NackMessageBatch", (*shardserver.Server).NackMessageBatch)
	if err != nil {
		return nil, err
	}
	return &qv1.NackMessageBatchResponse{Successful: ok, Failed: failed}, nil
}

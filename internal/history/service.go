package history

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
)

// maxPerQueuePoints bounds a per-queue answer: MaxQueues series of 30
// buckets stay well under the reply limit.
const maxPerQueuePoints = 30

// readScopes are the scopes that may read a tenant's queues (as GetQueue).
var readScopes = []string{server.ScopeQueuesAdmin, server.ScopeMessagesSend, server.ScopeMessagesReceive, server.ScopeMessagesPeek}

// Interceptor counts what the client API's calls did, by their answers:
// messages stored, received and deleted. It must run inside the
// authenticating interceptor (it reads the caller's tenant) and only on the
// client listener, so a call forwarded between nodes counts once.
func Interceptor(r *Ring, now func() time.Time) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			return resp, err
		}
		p := server.PrincipalFrom(ctx)
		if p == nil {
			return resp, nil
		}
		count := func(queue string, k Kind, n int) { r.Add(now(), p.Tenant, queue, k, n) }
		switch rq := req.(type) {
		case *qv1.SendMessageRequest:
			count(rq.GetQueue(), Sent, 1)
		case *qv1.SendMessageBatchRequest:
			if rs, ok := resp.(*qv1.SendMessageBatchResponse); ok {
				count(rq.GetQueue(), Sent, len(rs.GetSuccessful()))
			}
		case *qv1.ReceiveMessagesRequest:
			if rs, ok := resp.(*qv1.ReceiveMessagesResponse); ok {
				count(rq.GetQueue(), Received, len(rs.GetMessages()))
			}
		case *qv1.DeleteMessageRequest:
			count(rq.GetQueue(), Deleted, 1)
		case *qv1.DeleteMessageBatchRequest:
			if rs, ok := resp.(*qv1.DeleteMessageBatchResponse); ok {
				count(rq.GetQueue(), Deleted, len(rs.GetSuccessful()))
			}
		}
		return resp, nil
	}
}

// Service is the node's ClusterService with GetMessageHistory answered from
// its Ring; the other methods go to the embedded service.
type Service struct {
	qv1.ClusterServiceServer
	Ring *Ring
	Node uint64
	Now  func() time.Time
}

// GetMessageHistory implements ClusterService.
func (s Service) GetMessageHistory(ctx context.Context, req *qv1.GetMessageHistoryRequest) (*qv1.GetMessageHistoryResponse, error) {
	p := server.PrincipalFrom(ctx)
	if p == nil {
		return nil, fmt.Errorf("no credentials: %w", server.ErrUnauthenticated)
	}
	allowed := false
	for _, sc := range readScopes {
		allowed = allowed || p.Scopes[sc]
	}
	if !allowed {
		return nil, fmt.Errorf("token lacks scope %v: %w", readScopes, server.ErrPermissionDenied)
	}
	points := int(req.GetPoints())
	switch {
	case len(req.GetQueue()) > 256:
		return nil, &store.FieldError{Field: "queue", Reason: "too long"}
	case points < 0 || points > Buckets:
		return nil, &store.FieldError{Field: "points", Reason: fmt.Sprintf("must be 1 to %d", Buckets)}
	case req.GetPerQueue() && points > maxPerQueuePoints:
		return nil, &store.FieldError{Field: "points", Reason: fmt.Sprintf("must be 1 to %d with per_queue", maxPerQueuePoints)}
	case points == 0 && req.GetPerQueue():
		points = maxPerQueuePoints
	}
	total, queues := s.Ring.Query(s.Now(), p.Tenant, req.GetQueue(), points, req.GetPerQueue())
	resp := &qv1.GetMessageHistoryResponse{NodeId: s.Node, Interval: durationpb.New(Interval), Total: buckets(total)}
	for _, q := range queues {
		resp.Queues = append(resp.Queues, &qv1.QueueHistory{Queue: q.Queue, Buckets: buckets(q.Buckets)})
	}
	return resp, nil
}

func buckets(bs []Bucket) []*qv1.HistoryBucket {
	out := make([]*qv1.HistoryBucket, len(bs))
	for i, b := range bs {
		out[i] = &qv1.HistoryBucket{Start: timestamppb.New(b.Start), Length: durationpb.New(b.Length),
			Sent: b.Counts[Sent], Received: b.Counts[Received], Deleted: b.Counts[Deleted]}
	}
	return out
}

package router

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// TopicServer serves TopicService on every node. A topic's record of
// truth (settings, subscriptions) lives on the metadata shard; its
// partitions are partition copies spread over the data shards like a
// partitioned queue's (placed by ShardOf on "topic:" + name). Every change
// of the record is pushed to each partition copy (PutTopicPartition, which
// ignores older revisions), and a call that finds a copy missing makes it
// from the record and retries, so a fan-out cut short heals on first use.
type TopicServer struct {
	qv1.UnimplementedTopicServiceServer
	r     *Router
	cache sync.Map // tenant "\x00" name -> *topicEntry
	rr    atomic.Uint64
}

type topicEntry struct {
	rec     *storepb.TopicRecord
	fetched time.Time
}

// NewTopicServer returns the TopicService of a node.
func NewTopicServer(r *Router) *TopicServer { return &TopicServer{r: r} }

// Topic calls read or write no more than these.
const (
	maxTopicRead     = 1000
	defaultTopicRead = 100
)

// TopicShardOf places partition p of a topic (see ShardOf).
func TopicShardOf(shards int, tenant, name string, p int32) uint64 {
	return ShardOf(shards, tenant, "topic:"+name, int(p))
}

func (ts *TopicServer) shardOf(rec *storepb.TopicRecord, p int32) uint64 {
	return TopicShardOf(ts.r.topicPlacement(rec.GetPlacementShards()), rec.GetTenant(), rec.GetName(), p)
}

// topicPlacement is the shard count a topic's partitions are placed over:
// its recorded one, else (a topic made before shards were added) the base.
func (r *Router) topicPlacement(recorded uint32) int {
	if recorded > 0 {
		return int(recorded)
	}
	return r.baseShards()
}

// topic returns the record of truth, from the cache when it is fresh
// enough and fresh is false.
func (ts *TopicServer) topic(ctx context.Context, tenant, name string, fresh bool) (*storepb.TopicRecord, error) {
	if err := store.ValidateTopicName("topic", name); err != nil {
		return nil, err
	}
	k := cacheKey(tenant, name)
	if v, ok := ts.cache.Load(k); ok && !fresh {
		if e := v.(*topicEntry); time.Since(e.fetched) < ts.r.cfg.CacheTTL {
			return e.rec, nil
		}
	}
	reply, err := ts.r.topicCatalog(ctx, &storepb.TopicCatalogRequest{Tenant: tenant, Name: name})
	if err != nil {
		if server.ReasonOf(err) == server.ReasonTopicNotFound {
			ts.cache.Delete(k)
		}
		return nil, err
	}
	if len(reply.GetTopics()) != 1 {
		return nil, server.StatusError(codes.Internal, server.ReasonInternal, "topic catalog answered without the topic", nil)
	}
	rec := reply.GetTopics()[0]
	ts.remember(rec)
	return rec, nil
}

func (ts *TopicServer) remember(rec *storepb.TopicRecord) {
	if rec != nil {
		ts.cache.Store(cacheKey(rec.GetTenant(), rec.GetName()), &topicEntry{rec: rec, fetched: time.Now()})
	}
}

// change proposes a ChangeTopic on the metadata shard and pushes the new
// record to every partition copy.
func (ts *TopicServer) change(ctx context.Context, op *storepb.ChangeTopic) (*storepb.TopicRecord, error) {
	reply, err := ts.r.proposeTopic(ctx, MetadataShard, &storepb.Command{Op: &storepb.Command_ChangeTopic{ChangeTopic: op}})
	if err != nil {
		return nil, err
	}
	rec := reply.GetTopic()
	if op.Delete {
		ts.cache.Delete(cacheKey(op.Tenant, op.Name))
		_, err := parallel(int(rec.GetPartitions()), func(i int) (struct{}, error) {
			_, err := ts.r.proposeTopic(ctx, ts.shardOf(rec, int32(i)), &storepb.Command{Op: &storepb.Command_DeleteTopicPartition{
				DeleteTopicPartition: &storepb.DeleteTopicPartition{Tenant: rec.Tenant, Topic: rec.Name, Partition: int32(i), Incarnation: rec.CreatedAtMs}}})
			return struct{}{}, err
		})
		return rec, err
	}
	ts.remember(rec)
	return rec, ts.putPartitions(ctx, rec)
}

// putPartitions brings every partition copy in line with rec, in parallel.
func (ts *TopicServer) putPartitions(ctx context.Context, rec *storepb.TopicRecord) error {
	_, err := parallel(int(rec.GetPartitions()), func(i int) (struct{}, error) {
		return struct{}{}, ts.putPartition(ctx, rec, int32(i))
	})
	return err
}

func (ts *TopicServer) putPartition(ctx context.Context, rec *storepb.TopicRecord, p int32) error {
	_, err := ts.r.proposeTopic(ctx, ts.shardOf(rec, p), &storepb.Command{Op: &storepb.Command_PutTopicPartition{
		PutTopicPartition: &storepb.PutTopicPartition{Topic: rec, Partition: p}}})
	if err != nil {
		return fmt.Errorf("put partition %d of topic %s: %w", p, rec.GetName(), err)
	}
	return nil
}

// onPartition runs f with the topic's record for partition p; when the
// partition copy is missing (TOPIC_NOT_FOUND: a fan-out cut short, a stale
// cached record of an earlier incarnation) it reads the record again,
// makes the copy and runs f once more.
func onTopicPartition[T any](ctx context.Context, ts *TopicServer, rec *storepb.TopicRecord, p int32, f func(*storepb.TopicRecord) (T, error)) (T, error) {
	out, err := f(rec)
	if err == nil || server.ReasonOf(err) != server.ReasonTopicNotFound {
		return out, err
	}
	fresh, ferr := ts.topic(ctx, rec.GetTenant(), rec.GetName(), true)
	if ferr != nil {
		return out, ferr
	}
	if p >= fresh.GetPartitions() {
		return out, err
	}
	if perr := ts.putPartition(ctx, fresh, p); perr != nil {
		return out, perr
	}
	return f(fresh)
}

// CreateTopic implements TopicService.
func (ts *TopicServer) CreateTopic(ctx context.Context, req *qv1.CreateTopicRequest) (*qv1.CreateTopicResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	rec, err := shardserver.TopicSettings(tenant, req.GetName(), req.GetAttributes())
	if err != nil {
		return nil, err
	}
	reply, err := ts.r.proposeTopic(ctx, MetadataShard, &storepb.Command{Op: &storepb.Command_CreateTopic{CreateTopic: &storepb.CreateTopic{Topic: rec}}})
	if err != nil {
		return nil, err
	}
	ts.remember(reply.GetTopic())
	if err := ts.putPartitions(ctx, reply.GetTopic()); err != nil {
		return nil, err
	}
	return &qv1.CreateTopicResponse{Topic: shardserver.TopicToAPI(reply.GetTopic())}, nil
}

// GetTopic implements TopicService.
func (ts *TopicServer) GetTopic(ctx context.Context, req *qv1.GetTopicRequest) (*qv1.GetTopicResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin, server.ScopeMessagesSend, server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	rec, err := ts.topic(ctx, tenant, req.GetName(), true)
	if err != nil {
		return nil, err
	}
	parts, err := parallel(int(rec.GetPartitions()), func(i int) (*storepb.TopicReadReply, error) {
		return onTopicPartition(ctx, ts, rec, int32(i), func(rec *storepb.TopicRecord) (*storepb.TopicReadReply, error) {
			return ts.r.readTopicShard(ctx, ts.shardOf(rec, int32(i)), &storepb.TopicReadRequest{Tenant: tenant, Topic: rec.Name,
				Partition: int32(i), Incarnation: rec.CreatedAtMs})
		})
	})
	if err != nil {
		return nil, err
	}
	t := shardserver.TopicToAPI(rec)
	for i, p := range parts {
		t.Partitions = append(t.Partitions, &qv1.TopicPartition{Partition: int32(i), StartOffset: p.GetStartOffset(),
			EndOffset: p.GetEndOffset(), Messages: p.GetMessagesRetained(), Bytes: p.GetBytes()})
		t.Bytes += p.GetBytes()
	}
	return &qv1.GetTopicResponse{Topic: t}, nil
}

// ListTopics implements TopicService. The page token is the last name of
// the page before.
func (ts *TopicServer) ListTopics(ctx context.Context, req *qv1.ListTopicsRequest) (*qv1.ListTopicsResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin, server.ScopeMessagesSend, server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = shardserver.DefaultPageSize
	case size < 0 || size > shardserver.MaxPageSize:
		return nil, server.FieldError("page_size", fmt.Sprintf("must be 1 to %d", shardserver.MaxPageSize))
	}
	if err := shardserver.CheckText("prefix", req.GetPrefix(), 0, store.MaxQueueNameLen); err != nil {
		return nil, err
	}
	if err := shardserver.CheckText("page_token", req.GetPageToken(), 0, store.MaxQueueNameLen); err != nil {
		return nil, err
	}
	reply, err := ts.r.topicCatalog(ctx, &storepb.TopicCatalogRequest{Tenant: tenant, Prefix: req.GetPrefix(),
		After: req.GetPageToken(), Limit: int32(size + 1)})
	if err != nil {
		return nil, err
	}
	out := &qv1.ListTopicsResponse{}
	recs := reply.GetTopics()
	if len(recs) > size {
		recs = recs[:size]
		out.NextPageToken = recs[size-1].GetName()
	}
	for _, r := range recs {
		out.Topics = append(out.Topics, shardserver.TopicToAPI(r))
	}
	return out, nil
}

// UpdateTopic implements TopicService.
func (ts *TopicServer) UpdateTopic(ctx context.Context, req *qv1.UpdateTopicRequest) (*qv1.UpdateTopicResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	s, err := shardserver.TopicSettings(tenant, req.GetName(), req.GetAttributes())
	if err != nil {
		return nil, err
	}
	if req.GetAttributes().GetPartitions() == 0 {
		s.Partitions = 0 // unchanged
	}
	rec, err := ts.change(ctx, &storepb.ChangeTopic{Tenant: tenant, Name: req.GetName(), Settings: s})
	if err != nil {
		return nil, err
	}
	return &qv1.UpdateTopicResponse{Topic: shardserver.TopicToAPI(rec)}, nil
}

// DeleteTopic implements TopicService.
func (ts *TopicServer) DeleteTopic(ctx context.Context, req *qv1.DeleteTopicRequest) (*qv1.DeleteTopicResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	if err := store.ValidateTopicName("name", req.GetName()); err != nil {
		return nil, err
	}
	if _, err := ts.change(ctx, &storepb.ChangeTopic{Tenant: tenant, Name: req.GetName(), Delete: true}); err != nil {
		return nil, err
	}
	return &qv1.DeleteTopicResponse{}, nil
}

// Subscribe implements TopicService.
func (ts *TopicServer) Subscribe(ctx context.Context, req *qv1.SubscribeRequest) (*qv1.SubscribeResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	if err := store.ValidateTopicName("topic", req.GetTopic()); err != nil {
		return nil, err
	}
	if err := checkName("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	if err := shardserver.ValidateFilter(req.GetTagFilter()); err != nil {
		return nil, err
	}
	if _, err := ts.r.queue(ctx, tenant, req.GetQueue()); err != nil {
		return nil, err
	}
	sub := &storepb.TopicSubscription{Queue: req.GetQueue(), Filter: shardserver.FilterFromAPI(req.GetTagFilter())}
	if _, err := ts.change(ctx, &storepb.ChangeTopic{Tenant: tenant, Name: req.GetTopic(), Subscribe: sub}); err != nil {
		return nil, err
	}
	return &qv1.SubscribeResponse{Subscription: shardserver.SubscriptionToAPI(sub)}, nil
}

// Unsubscribe implements TopicService.
func (ts *TopicServer) Unsubscribe(ctx context.Context, req *qv1.UnsubscribeRequest) (*qv1.UnsubscribeResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	if err := store.ValidateTopicName("topic", req.GetTopic()); err != nil {
		return nil, err
	}
	if err := checkName("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	if _, err := ts.change(ctx, &storepb.ChangeTopic{Tenant: tenant, Name: req.GetTopic(), Unsubscribe: req.GetQueue()}); err != nil {
		return nil, err
	}
	return &qv1.UnsubscribeResponse{}, nil
}

// errNoGroup answers a group missing on every partition.
func errNoGroup(group string) error {
	return server.StatusError(codes.NotFound, server.ReasonGroupNotFound, fmt.Sprintf("consumer group not found: %s", group), nil)
}

// Unsubscribed removes a deleted queue's subscription (a TopicUnsubscriber
// for the shards' outbox relays).
func (ts *TopicServer) Unsubscribed(ctx context.Context, tenant, topic, queue string) error {
	_, err := ts.change(ctx, &storepb.ChangeTopic{Tenant: tenant, Name: topic, Unsubscribe: queue, UnsubscribeIfQueueMissing: true})
	return err
}

package router

import (
	"context"
	"errors"
	"fmt"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// publishPartition picks a message's partition: by its partition key
// (order per key), else by its idempotency key (a retry lands where the
// first try did, to meet its idempotency record), else round robin.
func (ts *TopicServer) publishPartition(rec *storepb.TopicRecord, key, idem string) int32 {
	n := int(rec.GetPartitions())
	switch {
	case n <= 1:
		return 0
	case key != "":
		return int32(PartitionOfKey(key, n))
	case idem != "":
		return int32(PartitionOfKey(idem, n))
	}
	return int32(ts.rr.Add(1) % uint64(n))
}

// publishTo appends entries to partition p (making its copy if missing).
func (ts *TopicServer) publishTo(ctx context.Context, rec *storepb.TopicRecord, p int32, entries []*storepb.PublishEntry) ([]*storepb.TopicPublishOutcome, error) {
	reply, err := onTopicPartition(ctx, ts, rec, p, func(rec *storepb.TopicRecord) (*storepb.TopicCommandReply, error) {
		return ts.r.proposeTopic(ctx, ts.shardOf(rec, p), &storepb.Command{Op: &storepb.Command_Publish{Publish: &storepb.Publish{
			Tenant: rec.Tenant, Topic: rec.Name, Partition: p, Incarnation: rec.CreatedAtMs, Entries: entries}}})
	})
	if err != nil {
		return nil, err
	}
	if len(reply.GetPublished()) != len(entries) {
		return nil, fmt.Errorf("publish answered %d outcomes for %d entries", len(reply.GetPublished()), len(entries))
	}
	return reply.GetPublished(), nil
}

func checkPublish(prefix, body string, attrs map[string]string, tags []string, key, idem string) error {
	return shardserver.ValidateMessage(prefix, shardserver.MessageInput{Body: body, Attributes: attrs, Tags: tags, GroupID: key, IdempotencyKey: idem})
}

// Publish implements TopicService.
func (ts *TopicServer) Publish(ctx context.Context, req *qv1.PublishRequest) (*qv1.PublishResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeMessagesSend)
	if err != nil {
		return nil, err
	}
	if err := checkPublish("", req.GetBody(), req.GetAttributes(), req.GetTags(), req.GetPartitionKey(), req.GetIdempotencyKey()); err != nil {
		return nil, renameKeyField(err, "", "partition_key")
	}
	rec, err := ts.topic(ctx, tenant, req.GetTopic(), false)
	if err != nil {
		return nil, err
	}
	p := ts.publishPartition(rec, req.GetPartitionKey(), req.GetIdempotencyKey())
	out, err := ts.publishTo(ctx, rec, p, []*storepb.PublishEntry{{Body: req.GetBody(), Attributes: req.GetAttributes(),
		Tags: req.GetTags(), PartitionKey: req.GetPartitionKey(), IdempotencyKey: req.GetIdempotencyKey()}})
	if err != nil {
		return nil, err
	}
	o := out[0]
	if o.GetErrorCode() != "" {
		return nil, shardserver.OutcomeStatus(o)
	}
	return &qv1.PublishResponse{MessageId: o.GetMessageId(), Partition: p, Offset: o.GetOffset()}, nil
}

// renameKeyField names partition_key where validateMessage, which checks
// it as a group id, says group_id.
func renameKeyField(err error, prefix, field string) error {
	var fe *store.FieldError
	if errors.As(err, &fe) && fe.Field == prefix+"group_id" {
		return server.FieldError(prefix+field, fe.Reason)
	}
	return err
}

// PublishBatch implements TopicService: the entries of each partition go
// in one command, the partitions in parallel.
func (ts *TopicServer) PublishBatch(ctx context.Context, req *qv1.PublishBatchRequest) (*qv1.PublishBatchResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeMessagesSend)
	if err != nil {
		return nil, err
	}
	es := req.GetEntries()
	if err := shardserver.ValidateBatch(len(es), func(i int) string { return es[i].GetId() }); err != nil {
		return nil, err
	}
	total := 0
	for i, e := range es {
		prefix := fmt.Sprintf("entries[%d].", i)
		if err := checkPublish(prefix, e.GetBody(), e.GetAttributes(), e.GetTags(), e.GetPartitionKey(), e.GetIdempotencyKey()); err != nil {
			return nil, renameKeyField(err, prefix, "partition_key")
		}
		total += len(e.GetBody())
	}
	if total > shardserver.MaxBatchBytes {
		return nil, server.FieldError("entries", fmt.Sprintf("bodies must be at most %d bytes in all", shardserver.MaxBatchBytes))
	}
	rec, err := ts.topic(ctx, tenant, req.GetTopic(), false)
	if err != nil {
		return nil, err
	}
	type slot struct {
		p       int32
		idx     []int
		entries []*storepb.PublishEntry
	}
	var slots []*slot
	byPart := map[int32]*slot{}
	for i, e := range es {
		p := ts.publishPartition(rec, e.GetPartitionKey(), e.GetIdempotencyKey())
		s := byPart[p]
		if s == nil {
			s = &slot{p: p}
			byPart[p] = s
			slots = append(slots, s)
		}
		s.idx = append(s.idx, i)
		s.entries = append(s.entries, &storepb.PublishEntry{Body: e.GetBody(), Attributes: e.GetAttributes(), Tags: e.GetTags(),
			PartitionKey: e.GetPartitionKey(), IdempotencyKey: e.GetIdempotencyKey()})
	}
	type result struct {
		outs []*storepb.TopicPublishOutcome
		err  error
	}
	results, _ := parallel(len(slots), func(i int) (result, error) {
		outs, err := ts.publishTo(ctx, rec, slots[i].p, slots[i].entries)
		return result{outs, err}, nil
	})
	resp := &qv1.PublishBatchResponse{}
	for i, s := range slots {
		for j, idx := range s.idx {
			id := es[idx].GetId()
			if err := results[i].err; err != nil {
				code, reason, msg := server.BatchError(err)
				resp.Failed = append(resp.Failed, &qv1.PublishBatchErrorEntry{Id: id, Code: code, Reason: reason, Message: msg})
				continue
			}
			o := results[i].outs[j]
			if o.GetErrorCode() != "" {
				resp.Failed = append(resp.Failed, &qv1.PublishBatchErrorEntry{Id: id, Code: o.GetErrorCode(), Reason: o.GetErrorReason(), Message: o.GetErrorMessage()})
				continue
			}
			resp.Successful = append(resp.Successful, &qv1.PublishBatchResultEntry{Id: id, MessageId: o.GetMessageId(), Partition: s.p, Offset: o.GetOffset()})
		}
	}
	return resp, nil
}

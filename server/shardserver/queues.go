package shardserver

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

var ReadScopes = []string{server.ScopeQueuesAdmin, server.ScopeMessagesSend, server.ScopeMessagesReceive, server.ScopeMessagesPeek}

// CreateQueue implements QueueService.
func (s *Server) CreateQueue(ctx context.Context, req *qv1.CreateQueueRequest) (*qv1.CreateQueueResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	if err := store.ValidateQueueName(req.GetName()); err != nil {
		return nil, err
	}
	if err := validateQueueTags(req.GetTags()); err != nil {
		return nil, err
	}
	attrs, err := attributesFromAPI(req.GetAttributes(), store.DefaultAttributes(), nil)
	if err != nil {
		return nil, err
	}
	if attrs.Fifo != strings.HasSuffix(req.GetName(), ".fifo") {
		return nil, server.FieldError("name", "a FIFO queue's name ends in \".fifo\", and only a FIFO queue's")
	}
	key, err := newHandleKey()
	if err != nil {
		return nil, err
	}
	create := &storepb.CreateQueue{Tenant: tenant, Name: req.GetName(), Attributes: attrs, Tags: req.GetTags(), HandleKey: key}
	if inc, ok := server.HeaderInt(ctx, server.IncarnationHeader); ok {
		// The router makes a partition of a queue whose record of truth
		// the metadata shard already holds.
		p, _ := server.HeaderInt(ctx, server.PartitionHeader)
		create.PartitionCopy, create.Partition, create.Incarnation = true, int32(p), inc
	}
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_CreateQueue{CreateQueue: create}})
	if err != nil {
		return nil, err
	}
	return &qv1.CreateQueueResponse{Queue: queueToAPI(res.QueueInfo, false)}, nil
}

// GetQueue implements QueueService. The read is linearizable: it follows a
// read-index barrier on the leader.
func (s *Server) GetQueue(ctx context.Context, req *qv1.GetQueueRequest) (*qv1.GetQueueResponse, error) {
	tenant, err := server.Require(ctx, ReadScopes...)
	if err != nil {
		return nil, err
	}
	if err := store.ValidatePartitionName(req.GetName()); err != nil {
		return nil, err
	}
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	info, err := s.store.GetQueue(tenant, req.GetName(), s.cfg.Now().UnixMilli())
	if err != nil {
		return nil, withQueue(err, req.GetName())
	}
	return &qv1.GetQueueResponse{Queue: queueToAPI(info, true)}, nil
}

// GetQueueRecord answers GetQueue without stats, after a read barrier: what
// the router caches.
func (s *Server) GetQueueRecord(ctx context.Context, req *qv1.GetQueueRequest) (*qv1.GetQueueResponse, error) {
	tenant, err := server.Require(ctx, ReadScopes...)
	if err != nil {
		return nil, err
	}
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	info, err := s.store.Queue(tenant, req.GetName())
	if err != nil {
		return nil, withQueue(err, req.GetName())
	}
	return &qv1.GetQueueResponse{Queue: queueToAPI(info, false)}, nil
}

// ListQueues implements QueueService. Page tokens are the last name seen,
// base64url-encoded: stable across inserts and deletes.
func (s *Server) ListQueues(ctx context.Context, req *qv1.ListQueuesRequest) (*qv1.ListQueuesResponse, error) {
	tenant, err := server.Require(ctx, ReadScopes...)
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > MaxPageSize:
		return nil, server.FieldError("page_size", fmt.Sprintf("must be 0 to %d", MaxPageSize))
	case size == 0:
		size = DefaultPageSize
	}
	if len(req.GetPrefix()) > 80 {
		return nil, server.FieldError("prefix", "must be at most 80 bytes")
	}
	after := ""
	if t := req.GetPageToken(); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		if err != nil || len(b) > 80 {
			return nil, server.FieldError("page_token", "not a token from a previous response")
		}
		after = string(b)
	}
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	infos, err := s.store.ListQueues(tenant, req.GetPrefix(), after, size+1)
	if err != nil {
		return nil, err
	}
	resp := &qv1.ListQueuesResponse{}
	for i, info := range infos {
		if i == size {
			resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(infos[i-1].Record.GetName()))
			break
		}
		resp.Queues = append(resp.Queues, queueToAPI(info, false))
	}
	return resp, nil
}

// UpdateQueue implements QueueService. It reads the current attributes and
// proposes the whole new set: concurrent updates of one queue are last
// writer wins.
func (s *Server) UpdateQueue(ctx context.Context, req *qv1.UpdateQueueRequest) (*qv1.UpdateQueueResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	if err := store.ValidatePartitionName(req.GetName()); err != nil {
		return nil, err
	}
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	cur, err := s.store.GetQueue(tenant, req.GetName(), s.cfg.Now().UnixMilli())
	if err != nil {
		return nil, withQueue(err, req.GetName())
	}
	var mask map[string]bool
	base := cloneAttrs(cur.Record.GetAttributes())
	if paths := req.GetUpdateMask().GetPaths(); len(paths) > 0 {
		mask = map[string]bool{}
		for _, p := range paths {
			p = strings.TrimPrefix(p, "attributes.")
			switch p {
			case "visibility_timeout", "message_retention", "delivery_delay", "receive_wait",
				"max_message_size", "dead_letter", "fifo", "content_based_deduplication", "partitions", "tags",
				"retry_policy", "message_ttl", "max_length", "max_bytes", "overflow",
				"priority_mode", "priority_weight", "fairness":
				mask[p] = true
			default:
				return nil, server.FieldError("update_mask", fmt.Sprintf("unknown attribute %q", p))
			}
		}
	} else {
		// No mask: every mutable attribute is replaced; unset ones go back
		// to their defaults. Fixed ones keep their values.
		def := store.DefaultAttributes()
		def.Fifo, def.ContentBasedDeduplication, def.Partitions = base.Fifo, base.ContentBasedDeduplication, base.Partitions
		def.Fairness = base.Fairness
		base = def
	}
	attrs, err := attributesFromAPI(req.GetAttributes(), base, mask)
	if err != nil {
		return nil, err
	}
	if mask["tags"] {
		if err := validateTagEdits(req.GetTags(), req.GetRemoveTags()); err != nil {
			return nil, err
		}
		attrs.SetTags, attrs.RemoveTags = req.GetTags(), req.GetRemoveTags()
	} else if len(req.GetTags()) > 0 || len(req.GetRemoveTags()) > 0 {
		return nil, server.FieldError("update_mask", `tags and remove_tags need "tags" in update_mask`)
	}
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_UpdateQueue{UpdateQueue: &storepb.UpdateQueue{
		Tenant: tenant, Name: req.GetName(), Attributes: attrs,
	}}})
	if err != nil {
		return nil, err
	}
	return &qv1.UpdateQueueResponse{Queue: queueToAPI(res.QueueInfo, false)}, nil
}

// DeleteQueue implements QueueService.
func (s *Server) DeleteQueue(ctx context.Context, req *qv1.DeleteQueueRequest) (*qv1.DeleteQueueResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	if err := store.ValidatePartitionName(req.GetName()); err != nil {
		return nil, err
	}
	if _, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_DeleteQueue{DeleteQueue: &storepb.DeleteQueue{
		Tenant: tenant, Name: req.GetName(),
	}}}); err != nil {
		return nil, err
	}
	s.polls.wake(tenant, req.GetName()) // long polls on it answer at once
	return &qv1.DeleteQueueResponse{}, nil
}

// PurgeQueue implements QueueService.
func (s *Server) PurgeQueue(ctx context.Context, req *qv1.PurgeQueueRequest) (*qv1.PurgeQueueResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	if err := store.ValidatePartitionName(req.GetName()); err != nil {
		return nil, err
	}
	if _, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_PurgeQueue{PurgeQueue: &storepb.PurgeQueue{
		Tenant: tenant, Name: req.GetName(),
	}}}); err != nil {
		return nil, err
	}
	return &qv1.PurgeQueueResponse{}, nil
}

// RedriveMessages implements QueueService: it moves messages of a
// dead-letter queue to the outbox; the relay delivers them to their source
// queues exactly once.
func (s *Server) RedriveMessages(ctx context.Context, req *qv1.RedriveMessagesRequest) (*qv1.RedriveMessagesResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	if err := store.ValidatePartitionName(req.GetDeadLetterQueue()); err != nil {
		return nil, server.FieldError("dead_letter_queue", "not a valid queue name")
	}
	if t := req.GetTargetQueue(); t != "" {
		if err := checkQueue("target_queue", t); err != nil {
			return nil, err
		}
	}
	max := req.GetMaxMessages()
	switch {
	case max < 0 || max > MaxRedriveMessages:
		return nil, server.FieldError("max_messages", fmt.Sprintf("must be 0 to %d", MaxRedriveMessages))
	case max == 0:
		max = DefaultRedriveBatch
	}
	var missing []string
	if req.GetTargetQueue() == "" {
		if missing, err = s.missingSources(ctx, tenant, req.GetDeadLetterQueue(), int(max)); err != nil {
			return nil, err
		}
	}
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_Redrive{Redrive: &storepb.Redrive{
		Tenant: tenant, Queue: req.GetDeadLetterQueue(), MaxMessages: max, TargetQueue: req.GetTargetQueue(),
		MissingSources: missing,
	}}})
	if err != nil {
		return nil, err
	}
	return &qv1.RedriveMessagesResponse{Moved: res.Moved}, nil
}

// maxRedriveSources bounds the source queues one redrive checks; messages
// of further sources move unchecked, and come back to the dead-letter
// queue if their source is gone.
const maxRedriveSources = 32

// missingSources checks, before a redrive to each message's source, the
// sources of the messages it would move, and returns those that no longer
// exist: the store leaves their messages in the dead-letter queue, and a
// redrive left with only those answers QUEUE_NOT_FOUND naming one.
func (s *Server) missingSources(ctx context.Context, tenant, dlq string, limit int) ([]string, error) {
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	sources, err := s.store.RedriveSources(tenant, dlq, limit, maxRedriveSources, s.cfg.Now().UnixMilli())
	if err != nil {
		return nil, err
	}
	c, _ := s.catalog()
	var missing []string
	for _, src := range sources {
		var err error
		if c != nil {
			_, err = c.QueueRecord(ctx, tenant, src)
		} else { // no cluster view: this shard holds the records
			_, err = s.store.Queue(tenant, src)
		}
		switch {
		case errors.Is(err, store.ErrQueueNotFound):
			missing = append(missing, src)
		case err != nil:
			return nil, fmt.Errorf("check redrive source %s: %w", src, err)
		}
	}
	return missing, nil
}

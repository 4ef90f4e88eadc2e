package shardserver

import (
	"context"
	"fmt"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// checkQueue validates a queue name given in request field `field` of a
// call to one shard, where a partition's catalog name (name#i) is valid.
func checkQueue(field, name string) error {
	return server.AsFieldError(field, store.ValidatePartitionName(name))
}

// SendMessage implements QueueService.
func (s *Server) SendMessage(ctx context.Context, req *qv1.SendMessageRequest) (*qv1.SendMessageResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeMessagesSend)
	if err != nil {
		return nil, err
	}
	if err := checkQueue("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	m := MessageInput{
		Body: req.GetBody(), Attributes: req.GetAttributes(), Tags: req.GetTags(),
		delay: req.GetDelay(), deliverAt: req.GetDeliverAt(), GroupID: req.GetGroupId(),
		dedupID: req.GetDeduplicationId(), IdempotencyKey: req.GetIdempotencyKey(), ttl: req.GetTtl(),
		priority: req.Priority,
	}
	if err := ValidateMessage("", m); err != nil {
		return nil, err
	}
	if _, _, err := s.admitSend(tenant, 1); err != nil {
		return nil, err
	}
	sent, err := s.sendEntries(ctx, tenant, req.GetQueue(), []*storepb.SendEntry{sendEntryFromAPI(m)})
	if err != nil {
		return nil, err
	}
	if err := sent[0].Err; err != nil {
		return nil, err
	}
	s.metrics.add(ctx, s.metrics.sent, tenant, req.GetQueue(), 1)
	return &qv1.SendMessageResponse{MessageId: sent[0].MessageID, Sequence: sent[0].Seq}, nil
}

// SendMessageBatch implements QueueService. Entries that fail validation are
// reported as failed and the rest are sent in one command.
func (s *Server) SendMessageBatch(ctx context.Context, req *qv1.SendMessageBatchRequest) (*qv1.SendMessageBatchResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeMessagesSend)
	if err != nil {
		return nil, err
	}
	if err := checkQueue("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	entries := req.GetEntries()
	if err := ValidateBatch(len(entries), func(i int) string { return entries[i].GetId() }); err != nil {
		return nil, err
	}
	total := 0
	for _, e := range entries {
		total += len(e.GetBody())
		for k, v := range e.GetAttributes() {
			total += len(k) + len(v)
		}
	}
	if total > MaxBatchBytes {
		return nil, server.FieldError("entries", fmt.Sprintf("a batch must be at most %d bytes", MaxBatchBytes))
	}
	resp := &qv1.SendMessageBatchResponse{}
	var ids []string
	cmd := &storepb.Send{Tenant: tenant, Queue: req.GetQueue()}
	for i, e := range entries {
		m := MessageInput{
			Body: e.GetBody(), Attributes: e.GetAttributes(), Tags: e.GetTags(),
			delay: e.GetDelay(), deliverAt: e.GetDeliverAt(), GroupID: e.GetGroupId(),
			dedupID: e.GetDeduplicationId(), IdempotencyKey: e.GetIdempotencyKey(), ttl: e.GetTtl(),
			priority: e.Priority,
		}
		if _, err := InEntry(i, func(p string) (struct{}, error) { return struct{}{}, ValidateMessage(p, m) }); err != nil {
			resp.Failed = append(resp.Failed, FailedEntry(e.GetId(), err))
			continue
		}
		ids = append(ids, e.GetId())
		cmd.Entries = append(cmd.Entries, sendEntryFromAPI(m))
	}
	if len(cmd.Entries) == 0 {
		return resp, nil
	}
	// Past the send rate: the first entries that fit are sent, the rest
	// fail with a retry delay; none fits: the call fails (with RetryInfo).
	k, retry, err := s.admitSend(tenant, len(cmd.Entries))
	if k == 0 && err != nil {
		return nil, err
	}
	for _, id := range ids[k:] {
		resp.Failed = append(resp.Failed, RefusedEntry(id, err, retry))
	}
	ids, cmd.Entries = ids[:k], cmd.Entries[:k]
	sent, err := s.sendEntries(ctx, tenant, req.GetQueue(), cmd.Entries)
	if err != nil {
		return nil, err
	}
	for i, o := range sent {
		if o.Err != nil {
			resp.Failed = append(resp.Failed, FailedEntry(ids[i], o.Err))
			continue
		}
		resp.Successful = append(resp.Successful, &qv1.SendMessageBatchResult{Id: ids[i], MessageId: o.MessageID, Sequence: o.Seq})
	}
	s.metrics.add(ctx, s.metrics.sent, tenant, req.GetQueue(), len(resp.Successful))
	return resp, nil
}

// handleOutcomes pairs a by-handle batch command's per-entry outcomes (nil:
// done) with the ids of the entries proposed, after the entries that
// failed before the proposal (failed).
func handleOutcomes(what string, ids []string, outcomes []error, failed []*qv1.BatchResultError) ([]*qv1.BatchResultOk, []*qv1.BatchResultError, error) {
	if len(outcomes) != len(ids) {
		return nil, nil, fmt.Errorf("%s: %d outcomes for %d handles", what, len(outcomes), len(ids))
	}
	var ok []*qv1.BatchResultOk
	for i, e := range outcomes {
		if e != nil {
			failed = append(failed, FailedEntry(ids[i], e))
			continue
		}
		ok = append(ok, &qv1.BatchResultOk{Id: ids[i]})
	}
	return ok, failed, nil
}

func FailedEntry(id string, err error) *qv1.BatchResultError {
	code, reason, msg := server.BatchError(err)
	return &qv1.BatchResultError{Id: id, Code: code, Reason: reason, Message: msg}
}

// ReceiveMessages implements QueueService, with long polling: when nothing
// is visible it waits on this node, without proposing, until a send (or a
// lease ending) makes a matching message visible or the wait ends. A call
// routed with waitOnlyHeader only waits: it leases nothing and answers
// empty, early when a matching message is visible, else when the wait ends.
func (s *Server) ReceiveMessages(ctx context.Context, req *qv1.ReceiveMessagesRequest) (*qv1.ReceiveMessagesResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	if err := checkQueue("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	max := req.GetMaxMessages()
	switch {
	case max < 0 || max > MaxReceiveMessages:
		return nil, server.FieldError("max_messages", fmt.Sprintf("must be 1 to %d", MaxReceiveMessages))
	case max == 0:
		max = 1
	}
	vis, err := DurationMs("visibility_timeout", req.GetVisibilityTimeout(), -1, MaxVisibility)
	if err != nil {
		return nil, err
	}
	wait, err := DurationMs("wait_time", req.GetWaitTime(), -1, MaxWaitTime)
	if err != nil {
		return nil, err
	}
	if err := ValidateFilter(req.GetTagFilter()); err != nil {
		return nil, err
	}
	if id := req.GetReceiveAttemptId(); id != "" {
		if err := CheckText("receive_attempt_id", id, 1, maxIDBytes); err != nil {
			return nil, err
		}
	}
	filter := FilterFromAPI(req.GetTagFilter())
	_, waitOnly := server.HeaderInt(ctx, server.WaitOnlyHeader)
	// Both read local state: the barrier makes sure it is not that of a
	// leader deposed without knowing it.
	if wait < 0 || waitOnly {
		if err := s.readBarrier(ctx); err != nil {
			return nil, err
		}
	}
	if wait < 0 { // unset: the queue's receive_wait
		info, err := s.store.Queue(tenant, req.GetQueue())
		if err != nil {
			return nil, withQueue(err, req.GetQueue())
		}
		wait = info.Record.GetAttributes().GetReceiveWaitMs()
	}
	// The reply must fit every hop back to the client: the store leases
	// no message beyond the byte budget (a router sweeping partitions
	// passes what is left of it).
	budget := int64(server.ReceiveBudget)
	if b, ok := server.HeaderInt(ctx, server.MaxBytesHeader); ok && b > 0 && b < budget {
		budget = b
	}
	cmd := &storepb.Receive{Tenant: tenant, Queue: req.GetQueue(), MaxMessages: max, VisibilityTimeoutMs: vis, Filter: filter,
		ReceiveAttemptId: req.GetReceiveAttemptId(), MaxBytes: budget}
	if waitOnly {
		if err := s.waitOnly(ctx, cmd, wait); err != nil {
			return nil, err
		}
		return &qv1.ReceiveMessagesResponse{}, nil
	}
	msgs, replayed, err := s.receive(ctx, cmd, wait)
	if err != nil {
		return nil, err
	}
	if !replayed { // a retried attempt returns what was already counted
		s.metrics.add(ctx, s.metrics.received, tenant, req.GetQueue(), len(msgs))
	}
	resp := &qv1.ReceiveMessagesResponse{Messages: make([]*qv1.ReceivedMessage, 0, len(msgs))}
	for _, m := range msgs {
		rec, err := m.Whole()
		if err != nil {
			return nil, err
		}
		resp.Messages = append(resp.Messages, messageToAPI(rec, m.ReceiptHandle))
	}
	return resp, nil
}

// DeleteMessage implements QueueService.
func (s *Server) DeleteMessage(ctx context.Context, req *qv1.DeleteMessageRequest) (*qv1.DeleteMessageResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	if err := checkQueue("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	h, err := DecodeHandle("receipt_handle", req.GetReceiptHandle())
	if err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_Delete{Delete: &storepb.Delete{
		Tenant: tenant, Queue: req.GetQueue(), ReceiptHandles: [][]byte{h},
	}}})
	if err != nil {
		return nil, err
	}
	if len(res.Entries) != 1 {
		return nil, fmt.Errorf("delete: %d outcomes for 1 handle", len(res.Entries))
	}
	if res.Entries[0] != nil {
		return nil, res.Entries[0]
	}
	s.metrics.add(ctx, s.metrics.deleted, tenant, req.GetQueue(), 1)
	return &qv1.DeleteMessageResponse{}, nil
}

// DeleteMessageBatch implements QueueService.
func (s *Server) DeleteMessageBatch(ctx context.Context, req *qv1.DeleteMessageBatchRequest) (*qv1.DeleteMessageBatchResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	if err := checkQueue("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	entries := req.GetEntries()
	if err := ValidateBatch(len(entries), func(i int) string { return entries[i].GetId() }); err != nil {
		return nil, err
	}
	resp := &qv1.DeleteMessageBatchResponse{}
	cmd := &storepb.Delete{Tenant: tenant, Queue: req.GetQueue()}
	var ids []string
	for i, e := range entries {
		h, err := InEntry(i, func(p string) ([]byte, error) { return DecodeHandle(p+"receipt_handle", e.GetReceiptHandle()) })
		if err != nil {
			resp.Failed = append(resp.Failed, FailedEntry(e.GetId(), err))
			continue
		}
		ids = append(ids, e.GetId())
		cmd.ReceiptHandles = append(cmd.ReceiptHandles, h)
	}
	if len(ids) == 0 {
		return resp, nil
	}
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_Delete{Delete: cmd}})
	if err != nil {
		return nil, err
	}
	if resp.Successful, resp.Failed, err = handleOutcomes("delete", ids, res.Entries, resp.Failed); err != nil {
		return nil, err
	}
	s.metrics.add(ctx, s.metrics.deleted, tenant, req.GetQueue(), len(resp.Successful))
	return resp, nil
}

// ChangeMessageVisibility implements QueueService.
func (s *Server) ChangeMessageVisibility(ctx context.Context, req *qv1.ChangeMessageVisibilityRequest) (*qv1.ChangeMessageVisibilityResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	if err := checkQueue("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	h, err := DecodeHandle("receipt_handle", req.GetReceiptHandle())
	if err != nil {
		return nil, err
	}
	if req.GetVisibilityTimeout() == nil {
		return nil, server.FieldError("visibility_timeout", "is required")
	}
	vis, err := DurationMs("visibility_timeout", req.GetVisibilityTimeout(), 0, MaxVisibility)
	if err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_ChangeVisibility{ChangeVisibility: &storepb.ChangeVisibility{
		Tenant: tenant, Queue: req.GetQueue(), Changes: []*storepb.VisibilityChange{{ReceiptHandle: h, VisibilityTimeoutMs: vis}},
	}}})
	if err != nil {
		return nil, err
	}
	if len(res.Entries) != 1 {
		return nil, fmt.Errorf("change visibility: %d outcomes for 1 handle", len(res.Entries))
	}
	if res.Entries[0] != nil {
		return nil, res.Entries[0]
	}
	return &qv1.ChangeMessageVisibilityResponse{}, nil
}

// ChangeMessageVisibilityBatch implements QueueService.
func (s *Server) ChangeMessageVisibilityBatch(ctx context.Context, req *qv1.ChangeMessageVisibilityBatchRequest) (*qv1.ChangeMessageVisibilityBatchResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	if err := checkQueue("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	entries := req.GetEntries()
	if err := ValidateBatch(len(entries), func(i int) string { return entries[i].GetId() }); err != nil {
		return nil, err
	}
	resp := &qv1.ChangeMessageVisibilityBatchResponse{}
	cmd := &storepb.ChangeVisibility{Tenant: tenant, Queue: req.GetQueue()}
	var ids []string
	for i, e := range entries {
		h, err := DecodeHandle(fmt.Sprintf("entries[%d].receipt_handle", i), e.GetReceiptHandle())
		if err == nil && e.GetVisibilityTimeout() == nil {
			err = server.FieldError(fmt.Sprintf("entries[%d].visibility_timeout", i), "is required")
		}
		var vis int64
		if err == nil {
			vis, err = DurationMs(fmt.Sprintf("entries[%d].visibility_timeout", i), e.GetVisibilityTimeout(), 0, MaxVisibility)
		}
		if err != nil {
			resp.Failed = append(resp.Failed, FailedEntry(e.GetId(), err))
			continue
		}
		ids = append(ids, e.GetId())
		cmd.Changes = append(cmd.Changes, &storepb.VisibilityChange{ReceiptHandle: h, VisibilityTimeoutMs: vis})
	}
	if len(ids) == 0 {
		return resp, nil
	}
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_ChangeVisibility{ChangeVisibility: cmd}})
	if err != nil {
		return nil, err
	}
	if resp.Successful, resp.Failed, err = handleOutcomes("change visibility", ids, res.Entries, resp.Failed); err != nil {
		return nil, err
	}
	return resp, nil
}

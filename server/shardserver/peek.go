package shardserver

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// PeekScopes may browse messages. Peek reveals bodies, so it needs a scope
// that may already read them: messages:peek (read-only, for operators and
// DLQ tooling) or messages:receive. queues:admin alone does not suffice.
var PeekScopes = []string{server.ScopeMessagesPeek, server.ScopeMessagesReceive}

const (
	maxPeekPageSize     = 100
	DefaultPeekPageSize = 10
	maxPeekMinAge       = 14 * 24 * time.Hour // the longest retention
	maxMessageIDLen     = 128
)

// PeekFilter validates a peek request's filters.
func PeekFilter(req *qv1.PeekMessagesRequest) (store.BrowseFilter, int, error) {
	var f store.BrowseFilter
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > maxPeekPageSize:
		return f, 0, server.FieldError("page_size", fmt.Sprintf("must be 1 to %d", maxPeekPageSize))
	case size == 0:
		size = DefaultPeekPageSize
	}
	for _, s := range req.GetStates() {
		switch s {
		case qv1.MessageState_MESSAGE_STATE_VISIBLE, qv1.MessageState_MESSAGE_STATE_IN_FLIGHT, qv1.MessageState_MESSAGE_STATE_DELAYED:
			f.States = append(f.States, store.MessageState(s))
		default:
			return f, 0, server.FieldError("states", fmt.Sprintf("unknown state %v", s))
		}
	}
	if err := ValidateFilter(req.GetTagFilter()); err != nil {
		return f, 0, err
	}
	if tf := req.GetTagFilter(); tf != nil {
		f.Tags = FilterFromAPI(tf)
	}
	if a := req.GetAttribute(); a != "" {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" || len(a) > 1024 {
			return f, 0, server.FieldError("attribute", "must be key=value, at most 1024 bytes")
		}
		f.AttrKey, f.AttrValue = k, v
	}
	age, err := DurationMs("min_age", req.GetMinAge(), 0, maxPeekMinAge)
	if err != nil {
		return f, 0, err
	}
	f.MinAgeMs = age
	return f, size, nil
}

// PeekMessages implements QueueService on one partition: the page token is
// the seq to resume from (the router's token wraps it with the partition).
// The read follows a read-index barrier, as GetQueue's stats do, and
// proposes nothing.
func (s *Server) PeekMessages(ctx context.Context, req *qv1.PeekMessagesRequest) (*qv1.PeekMessagesResponse, error) {
	tenant, err := server.Require(ctx, PeekScopes...)
	if err != nil {
		return nil, err
	}
	if err := checkQueue("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	f, size, err := PeekFilter(req)
	if err != nil {
		return nil, err
	}
	var from uint64
	if tok := req.GetPageToken(); tok != "" {
		if from, err = strconv.ParseUint(tok, 10, 64); err != nil {
			return nil, server.FieldError("page_token", "not a token from a previous response")
		}
	}
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	now := s.cfg.Now().UnixMilli()
	msgs, next, err := s.store.Browse(tenant, req.GetQueue(), f, from, size, 0, now)
	if err != nil {
		return nil, withQueue(err, req.GetQueue())
	}
	out := &qv1.PeekMessagesResponse{}
	for _, m := range msgs {
		out.Messages = append(out.Messages, peekedToAPI(m, now))
	}
	if next != 0 {
		out.NextPageToken = strconv.FormatUint(next, 10)
	}
	return out, nil
}

// GetMessage implements QueueService on one partition.
func (s *Server) GetMessage(ctx context.Context, req *qv1.GetMessageRequest) (*qv1.GetMessageResponse, error) {
	tenant, err := server.Require(ctx, PeekScopes...)
	if err != nil {
		return nil, err
	}
	if err := checkQueue("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	if err := CheckMessageIDLength(req.GetMessageId()); err != nil {
		return nil, err
	}
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	now := s.cfg.Now().UnixMilli()
	m, err := s.store.GetMessage(tenant, req.GetQueue(), req.GetMessageId(), now)
	if err != nil {
		return nil, withQueue(err, req.GetQueue())
	}
	if m == nil {
		return nil, MessageNotFound(req.GetMessageId())
	}
	return &qv1.GetMessageResponse{Message: peekedToAPI(m, now)}, nil
}

// CheckMessageIDLength bounds an id a read looks up (an unknown id is NOT_FOUND).
func CheckMessageIDLength(id string) error {
	if id == "" || len(id) > maxMessageIDLen {
		return server.FieldError("message_id", fmt.Sprintf("must be 1 to %d characters", maxMessageIDLen))
	}
	return nil
}

func MessageNotFound(id string) error {
	return server.StatusError(codes.NotFound, server.ReasonMessageNotFound, fmt.Sprintf("message %q not found", id), nil)
}

func peekedToAPI(m *storepb.MessageRecord, nowMs int64) *qv1.PeekedMessage {
	return &qv1.PeekedMessage{
		Priority:         store.PriorityOf(m),
		MessageId:        m.GetId(),
		Body:             m.GetBody(),
		Attributes:       m.GetAttributes(),
		Tags:             m.GetTags(),
		SentAt:           msTime(m.GetSentAtMs()),
		ReceiveCount:     m.GetReceiveCount(),
		FirstReceivedAt:  msTime(m.GetFirstReceivedAtMs()),
		VisibleAt:        msTime(m.GetVisibleAtMs()),
		State:            qv1.MessageState(store.StateOf(m, nowMs)),
		GroupId:          m.GetGroupId(),
		Sequence:         m.GetSeq(),
		DeadLetterSource: m.GetDeadLetterSource(),
		FailedCount:      m.GetFailedCount(),
		ReleasedCount:    m.GetReleasedCount(),
		DeadLetterReason: qv1.DeadLetterReason(m.GetDeadLetterReason()),
		ExpireTime:       msTime(m.GetExpiresAtMs()),
	}
}

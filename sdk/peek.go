package quorumq

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// MessageState is where a stored message is in its lifecycle.
type MessageState string

// Message states as Peek reports and filters them.
const (
	StateVisible  MessageState = "VISIBLE"   // receivable now
	StateInFlight MessageState = "IN_FLIGHT" // received, lease not ended
	StateDelayed  MessageState = "DELAYED"   // never received, not yet due
)

var stateToAPI = map[MessageState]qv1.MessageState{
	StateVisible:  qv1.MessageState_MESSAGE_STATE_VISIBLE,
	StateInFlight: qv1.MessageState_MESSAGE_STATE_IN_FLIGHT,
	StateDelayed:  qv1.MessageState_MESSAGE_STATE_DELAYED,
}

func stateFromAPI(s qv1.MessageState) MessageState {
	for k, v := range stateToAPI {
		if v == s {
			return k
		}
	}
	return ""
}

// PeekedMessage is a stored message as a Peek or GetMessage saw it. It has
// no receipt handle: peeking leases nothing.
type PeekedMessage struct {
	ID               string
	Body             string
	Attributes       map[string]string
	Tags             []string
	SentAt           time.Time
	ReceiveCount     int
	FirstReceivedAt  time.Time // zero: never received
	VisibleAt        time.Time // end of its lease or delay
	State            MessageState
	GroupID          string
	Sequence         uint64
	DeadLetterSource string
	Partition        int
	// Priority is the priority given at send (4 when none was).
	Priority int
}

// PeekPage is one page of a Peek.
type PeekPage struct {
	Messages []PeekedMessage
	// NextPageToken continues the walk (PageToken); empty at the end. A
	// page may be short, even empty, while it is set.
	NextPageToken string
}

// PeekOption tunes a Peek.
type PeekOption func(*qv1.PeekMessagesRequest)

// PeekStates keeps messages in one of the states (default: all).
func PeekStates(states ...MessageState) PeekOption {
	return func(r *qv1.PeekMessagesRequest) {
		for _, s := range states {
			v, ok := stateToAPI[s]
			if !ok {
				v = qv1.MessageState(-1) // the server refuses it with INVALID_ARGUMENT
			}
			r.States = append(r.States, v)
		}
	}
}

// PeekFilter keeps messages whose tags match f.
func PeekFilter(f TagFilter) PeekOption {
	return func(r *qv1.PeekMessagesRequest) {
		r.TagFilter = &qv1.TagFilter{All: f.All, Any: f.Any, None: f.None}
	}
}

// PeekAttribute keeps messages with attribute key = value.
func PeekAttribute(key, value string) PeekOption {
	return func(r *qv1.PeekMessagesRequest) { r.Attribute = key + "=" + value }
}

// PeekMinAge keeps messages sent at least d ago.
func PeekMinAge(d time.Duration) PeekOption {
	return func(r *qv1.PeekMessagesRequest) { r.MinAge = durationpb.New(d) }
}

// PageSize asks for up to n messages (1 – 100, default 10).
func PageSize(n int) PeekOption {
	return func(r *qv1.PeekMessagesRequest) { r.PageSize = int32(n) }
}

// PageToken continues from a previous page's NextPageToken.
func PageToken(tok string) PeekOption {
	return func(r *qv1.PeekMessagesRequest) { r.PageToken = tok }
}

// Peek browses the queue's messages without receiving them: no lease and
// no count changes. Needs scope messages:peek or messages:receive.
func (q *Queue) Peek(ctx context.Context, opts ...PeekOption) (*PeekPage, error) {
	req := &qv1.PeekMessagesRequest{Queue: q.name}
	for _, o := range opts {
		o(req)
	}
	resp, err := call(q.routed(ctx), q.c, "peek", 0, func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.PeekMessagesResponse, error) {
		return api.PeekMessages(ctx, req)
	})
	if err != nil {
		return nil, err
	}
	page := &PeekPage{NextPageToken: resp.GetNextPageToken()}
	for _, m := range resp.GetMessages() {
		page.Messages = append(page.Messages, peeked(m))
	}
	return page, nil
}

// GetMessage returns one stored message by id without receiving it; a
// message the queue does not hold fails with a NotFound status (reason
// MESSAGE_NOT_FOUND).
func (q *Queue) GetMessage(ctx context.Context, id string) (*PeekedMessage, error) {
	resp, err := call(q.routed(ctx), q.c, "get message", 0, func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.GetMessageResponse, error) {
		return api.GetMessage(ctx, &qv1.GetMessageRequest{Queue: q.name, MessageId: id})
	})
	if err != nil {
		return nil, err
	}
	m := peeked(resp.GetMessage())
	return &m, nil
}

func peeked(m *qv1.PeekedMessage) PeekedMessage {
	out := PeekedMessage{
		ID: m.GetMessageId(), Body: m.GetBody(), Attributes: m.GetAttributes(), Tags: m.GetTags(),
		ReceiveCount: int(m.GetReceiveCount()), State: stateFromAPI(m.GetState()), GroupID: m.GetGroupId(),
		Sequence: m.GetSequence(), DeadLetterSource: m.GetDeadLetterSource(), Partition: int(m.GetPartition()),
		Priority: int(m.GetPriority()),
	}
	if m.GetSentAt() != nil {
		out.SentAt = m.GetSentAt().AsTime()
	}
	if m.GetFirstReceivedAt() != nil {
		out.FirstReceivedAt = m.GetFirstReceivedAt().AsTime()
	}
	if m.GetVisibleAt() != nil {
		out.VisibleAt = m.GetVisibleAt().AsTime()
	}
	return out
}

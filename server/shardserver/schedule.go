package shardserver

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// CheckMessageID validates a message id given in request field `field`.
func CheckMessageID(field, id string) (store.MessageRef, error) {
	ref, ok := store.ParseMessageID(id)
	if !ok {
		return ref, server.FieldError(field, "not a message id")
	}
	return ref, nil
}

// CancelMessage implements QueueService on one shard: it removes a message
// never received (see store.ErrMessageAlreadyReceived).
func (s *Server) CancelMessage(ctx context.Context, req *qv1.CancelMessageRequest) (*qv1.CancelMessageResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeMessagesSend)
	if err != nil {
		return nil, err
	}
	if err := checkQueue("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	if _, err := CheckMessageID("message_id", req.GetMessageId()); err != nil {
		return nil, err
	}
	_, err = s.propose(ctx, &storepb.Command{Op: &storepb.Command_CancelMessage{CancelMessage: &storepb.CancelMessage{
		Tenant: tenant, Queue: req.GetQueue(), MessageId: req.GetMessageId(),
	}}})
	if err != nil {
		return nil, err
	}
	return &qv1.CancelMessageResponse{}, nil
}

// RescheduleMessage implements QueueService on one shard: a message never
// received becomes visible after delay or at deliver_at (exactly one).
func (s *Server) RescheduleMessage(ctx context.Context, req *qv1.RescheduleMessageRequest) (*qv1.RescheduleMessageResponse, error) {
	tenant, err := server.Require(ctx, server.ScopeMessagesSend)
	if err != nil {
		return nil, err
	}
	if err := checkQueue("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	if _, err := CheckMessageID("message_id", req.GetMessageId()); err != nil {
		return nil, err
	}
	op, err := RescheduleOp(req)
	if err != nil {
		return nil, err
	}
	op.Tenant = tenant
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_RescheduleMessage{RescheduleMessage: op}})
	if err != nil {
		return nil, err
	}
	return &qv1.RescheduleMessageResponse{VisibleAt: timestamppb.New(time.UnixMilli(res.VisibleAtMs))}, nil
}

// RescheduleOp checks the new time of a RescheduleMessageRequest; the
// store bounds it by the message's retention.
func RescheduleOp(req *qv1.RescheduleMessageRequest) (*storepb.RescheduleMessage, error) {
	op := &storepb.RescheduleMessage{Queue: req.GetQueue(), MessageId: req.GetMessageId()}
	switch {
	case req.GetDelay() != nil && req.GetDeliverAt() != nil:
		return nil, server.FieldError("delay", "give one of delay and deliver_at, not both")
	case req.GetDeliverAt() != nil:
		if err := req.GetDeliverAt().CheckValid(); err != nil {
			return nil, server.FieldError("deliver_at", "not a valid timestamp")
		}
		// The epoch or before: due at once (delay 0).
		op.DeliverAtMs = max(req.GetDeliverAt().AsTime().UnixMilli(), 0)
	case req.GetDelay() != nil:
		ms, err := DurationMs("delay", req.GetDelay(), 0, maxDelay)
		if err != nil {
			return nil, err
		}
		op.DelayMs = ms
	default:
		return nil, server.FieldError("delay", "give delay or deliver_at")
	}
	return op, nil
}

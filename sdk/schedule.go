package quorumq

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// Cancel deletes a message that has not been received yet (delayed or
// waiting to be received), by the id Send returned. A message received at
// least once gives ErrMessageAlreadyReceived; an unknown id, or one already
// cancelled, ErrMessageNotFound. The call is retried on transient errors,
// so a cancel whose first attempt was applied but not answered reports
// ErrMessageNotFound: either way the message is no longer pending.
func (q *Queue) Cancel(ctx context.Context, messageID string) error {
	_, err := call(q.routed(ctx), q.c, "cancel", 0, func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.CancelMessageResponse, error) {
		return api.CancelMessage(ctx, &qv1.CancelMessageRequest{Queue: q.name, MessageId: messageID})
	})
	return err
}

// Reschedule makes a message that has not been received yet visible at
// `at` (a past time: at once), at most the queue's retention after it was
// sent, and returns the time the server set. Not on FIFO queues (they have
// no per-message delay). Errors as Cancel.
func (q *Queue) Reschedule(ctx context.Context, messageID string, at time.Time) (time.Time, error) {
	resp, err := call(q.routed(ctx), q.c, "reschedule", 0, func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.RescheduleMessageResponse, error) {
		return api.RescheduleMessage(ctx, &qv1.RescheduleMessageRequest{Queue: q.name, MessageId: messageID, DeliverAt: timestamppb.New(at)})
	})
	if err != nil {
		return time.Time{}, err
	}
	return resp.GetVisibleAt().AsTime(), nil
}

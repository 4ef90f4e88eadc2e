package store

import (
	"encoding/binary"
	"errors"
	"strings"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// ErrMessageAlreadyReceived: CancelMessage / RescheduleMessage of a message
// that has been received at least once (MESSAGE_ALREADY_RECEIVED). Only a
// message that was never delivered is still a schedule the sender may change.
var ErrMessageAlreadyReceived = errors.New("message already received")

// MessageRef is what a message id names (see messageID): the shard, the
// queue id within that shard and the message's seq.
type MessageRef struct {
	SentAtMs          int64
	Shard, Queue, Seq uint64
}

// ParseMessageID decodes a message id; ok is false for anything that is
// not one.
func ParseMessageID(id string) (ref MessageRef, ok bool) {
	if len(id) == 0 || len(id) > 64 {
		return MessageRef{}, false
	}
	b, err := idEncoding.DecodeString(strings.ToUpper(id))
	if err != nil || len(b) != 32 {
		return MessageRef{}, false
	}
	return MessageRef{
		SentAtMs: int64(binary.BigEndian.Uint64(b)),
		Shard:    binary.BigEndian.Uint64(b[8:]),
		Queue:    binary.BigEndian.Uint64(b[16:]),
		Seq:      binary.BigEndian.Uint64(b[24:]),
	}, true
}

// scheduled finds the never-received message id of queue q; a nil message
// comes with the outcome to answer (not found, already received).
func (t *txn) scheduled(q *storepb.QueueRecord, id string) (*storepb.MessageRecord, error, error) {
	ref, ok := ParseMessageID(id)
	if !ok || ref.Shard != t.s.shard || ref.Queue != q.Id {
		return nil, ErrMessageNotFound, nil
	}
	m, err := t.message(q.Id, ref.Seq)
	if err != nil {
		return nil, nil, err
	}
	// The id's send time must match too: the id names this message, not
	// merely its slot.
	if m == nil || m.Id != id {
		return nil, ErrMessageNotFound, nil
	}
	if m.ReceiveCount > 0 {
		return nil, ErrMessageAlreadyReceived, nil
	}
	return m, nil, nil
}

// cancelMessage deletes a never-received message by id. A second cancel
// finds nothing (ErrMessageNotFound).
func (t *txn) cancelMessage(op *storepb.CancelMessage, res *Result) error {
	q, err := t.lookup(op.Tenant, op.Queue, res)
	if q == nil || err != nil {
		return err
	}
	m, outcome, err := t.scheduled(q, op.MessageId)
	if m == nil || err != nil {
		res.Err = outcome
		return err
	}
	meta, err := t.queueMeta(q.Id)
	if err != nil {
		return err
	}
	if err := t.remove(q, meta, m); err != nil {
		return err
	}
	// Cancelling a FIFO group's head can make its next message deliverable.
	res.Woken = t.unblocked
	return t.putQueueMeta(q.Id, meta)
}

// rescheduleMessage moves a never-received message of a standard queue to
// a new visible time, at most the queue's retention after the message
// arrived in the queue (retention removes it then anyway).
func (t *txn) rescheduleMessage(op *storepb.RescheduleMessage, res *Result) error {
	q, err := t.lookup(op.Tenant, op.Queue, res)
	if q == nil || err != nil {
		return err
	}
	if isFifo(q) {
		res.Err = fieldErr("delay", "per-message delay is not supported on FIFO queues")
		return nil
	}
	field, visibleAt := "delay", t.now+op.DelayMs
	if op.DeliverAtMs > 0 {
		field, visibleAt = "deliver_at", max(op.DeliverAtMs, t.now)
	} else if op.DelayMs < 0 {
		res.Err = fieldErr(field, "must not be negative")
		return nil
	}
	m, outcome, err := t.scheduled(q, op.MessageId)
	if m == nil || err != nil {
		res.Err = outcome
		return err
	}
	if limit := m.EnqueuedAtMs + q.Attributes.GetMessageRetentionMs(); visibleAt > limit {
		res.Err = fieldErr(field, "later than the message's retention ends (%v after it was sent)",
			msDur(q.Attributes.GetMessageRetentionMs()))
		return nil
	}
	if err := t.reschedule(q, m, visibleAt, nil); err != nil {
		return err
	}
	res.VisibleAtMs = visibleAt
	res.Woken = visibleAt <= t.now
	return nil
}

package store

import (
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// defaultRedriveMax applies when a Redrive gives no max: one apply moves at
// most this many; the caller repeats while Moved > 0.
const defaultRedriveMax = 1000

// toOutbox removes m from queue q and queues it in the outbox for
// (tenant, target). Dead-letter moves and redrives go through the outbox even
// when the target is on this shard: one path, exactly-once by the delivered
// marker on the target side. The caller writes meta.
func (t *txn) toOutbox(q *storepb.QueueRecord, meta *storepb.QueueMeta, m *storepb.MessageRecord, tenant, target string, redrive bool) error {
	id := max(t.sm.NextOutboxId, 1)
	t.sm.NextOutboxId, t.smDirty = id+1, true
	msg := proto.Clone(m).(*storepb.MessageRecord)
	if !redrive {
		msg.DeadLetterSource = BaseName(q.Name)
	}
	e := &storepb.OutboxEntry{
		Id: id, SourceShard: t.s.shard, TargetTenant: tenant, TargetQueue: target,
		Message: msg, Redrive: redrive,
	}
	if err := t.set(keys.Outbox(t.s.shard, id), e); err != nil {
		return err
	}
	return t.remove(q, meta, m)
}

// deliverOutbox inserts each entry into its target queue once per
// (source shard, outbox id): a delivered marker answers repeats (the relay
// retries until it sees the ack). A missing target leaves the entry
// undelivered with ErrQueueNotFound.
func (t *txn) deliverOutbox(op *storepb.DeliverOutbox, res *Result) error {
	res.Entries = make([]error, len(op.Entries))
	for i, e := range op.Entries {
		if e.GetMessage() == nil {
			res.Entries[i] = fieldErr("entries.message", "missing")
			continue
		}
		marker := keys.Delivered(t.s.shard, e.SourceShard, e.Id)
		done, err := t.get(marker, nil)
		if err != nil {
			return err
		}
		if done {
			continue
		}
		q, err := t.queue(e.TargetTenant, e.TargetQueue)
		if err != nil {
			return err
		}
		if q == nil {
			res.Entries[i] = ErrQueueNotFound
			continue
		}
		meta, err := t.queueMeta(q.Id)
		if err != nil {
			return err
		}
		m := proto.Clone(e.Message).(*storepb.MessageRecord)
		m.EnqueuedAtMs, m.VisibleAtMs = t.now, t.now
		if e.Redrive {
			m.ReceiveCount, m.FirstReceivedAtMs, m.DeadLetterSource = 0, 0, ""
		}
		if err := t.insert(q, meta, m); err != nil {
			return err
		}
		if err := t.putQueueMeta(q.Id, meta); err != nil {
			return err
		}
		if err := t.setRaw(marker, nil); err != nil {
			return err
		}
		if err := t.setRaw(keys.DeliveredOrder(t.s.shard, t.now, e.SourceShard, e.Id), nil); err != nil {
			return err
		}
		res.Woken = true
		ref := QueueRef{Tenant: q.Tenant, Name: q.Name}
		if !containsRef(res.Touched, ref) {
			res.Touched = append(res.Touched, ref)
		}
	}
	return nil
}

func containsRef(refs []QueueRef, r QueueRef) bool {
	for _, x := range refs {
		if x == r {
			return true
		}
	}
	return false
}

// ackOutbox deletes delivered entries; unknown ids are ignored (acks repeat).
func (t *txn) ackOutbox(op *storepb.AckOutbox) error {
	for _, id := range op.Ids {
		if err := t.del(keys.Outbox(t.s.shard, id)); err != nil {
			return err
		}
	}
	return nil
}

// redrive moves up to max messages that are not in flight from dead-letter
// queue q to the outbox, oldest (lowest seq) first, each addressed to its
// dead_letter_source in the same tenant (messages without one stay), or all
// of them to op.TargetQueue. A call moves what is left, so calling again
// until Moved is 0 resumes a redrive; the outbox and the target's delivered
// markers make each move exactly-once. On a FIFO queue a message in flight
// holds back the rest of its group, so a group arrives in order; the
// message keeps its group_id.
func (t *txn) redrive(op *storepb.Redrive, res *Result) error {
	q, err := t.lookup(op.Tenant, op.Queue, res)
	if q == nil || err != nil {
		return err
	}
	if target := op.TargetQueue; target != "" && !q.PartitionCopy {
		// (A partition copy's target lives on other shards: the router
		// checked it against the metadata shard.)
		if target == q.Name {
			res.Err = fieldErr("target_queue", "must differ from the queue redriven")
			return nil
		}
		tq, err := t.queue(q.Tenant, target)
		if err != nil {
			return err
		}
		switch {
		case tq == nil:
			res.Err = ErrQueueNotFound
			return nil
		case isFifo(tq) && !isFifo(q):
			res.Err = fieldErr("target_queue", "a FIFO queue takes redriven messages only from a FIFO queue (they need a group_id)")
			return nil
		}
	}
	limit := int(op.MaxMessages)
	if limit <= 0 {
		limit = defaultRedriveMax
	}
	var move []*storepb.MessageRecord
	held := map[string]bool{} // FIFO groups with a message in flight; lookups only
	err = t.scanBySeq(q.Id, func(m *storepb.MessageRecord) bool {
		switch {
		case isFifo(q) && held[m.GroupId]:
		case m.ReceiveCount > 0 && m.VisibleAtMs > t.now: // in flight
			held[m.GroupId] = true
		case op.TargetQueue != "" || m.DeadLetterSource != "":
			move = append(move, m)
		}
		return len(move) >= limit
	})
	if err != nil {
		return err
	}
	if len(move) == 0 {
		return nil
	}
	meta, err := t.queueMeta(q.Id)
	if err != nil {
		return err
	}
	for _, m := range move {
		target := m.DeadLetterSource
		if op.TargetQueue != "" {
			target = op.TargetQueue
		}
		if err := t.toOutbox(q, meta, m, q.Tenant, target, true); err != nil {
			return err
		}
	}
	res.Moved, res.OutboxAdded = int64(len(move)), true
	return t.putQueueMeta(q.Id, meta)
}

// scanBySeq visits a queue's messages in seq order from its low-water mark
// until visit returns true.
func (t *txn) scanBySeq(qid uint64, visit func(*storepb.MessageRecord) bool) (err error) {
	meta, err := t.queueMeta(qid)
	if err != nil {
		return err
	}
	p := keys.MessagePrefix(t.s.shard, qid)
	it, err := t.iter(p, keys.PrefixEnd(p))
	if err != nil {
		return err
	}
	defer closeInto(it, &err)
	for ok := it.SeekGE(keys.Message(t.s.shard, qid, meta.LowSeq)); ok; ok = it.Next() {
		v, err := it.Value()
		if err != nil {
			return err
		}
		m := &storepb.MessageRecord{}
		if err := proto.Unmarshal(v, m); err != nil {
			return fmt.Errorf("store: decode %s: %w", keys.Pretty(it.Key()), err)
		}
		if visit(m) {
			return nil
		}
	}
	return nil
}

// PendingOutbox returns up to limit outbox entries of this shard in id
// order, for the relay to deliver and then ack.
func (s *Store) PendingOutbox(limit int) (_ []*storepb.OutboxEntry, err error) {
	t := s.reader(math.MaxInt64)
	p := keys.OutboxPrefix(s.shard)
	it, err := t.iter(p, keys.PrefixEnd(p))
	if err != nil {
		return nil, err
	}
	defer closeInto(it, &err)
	var out []*storepb.OutboxEntry
	for ok := it.First(); ok && (limit <= 0 || len(out) < limit); ok = it.Next() {
		v, err := it.Value()
		if err != nil {
			return nil, err
		}
		e := &storepb.OutboxEntry{}
		if err := proto.Unmarshal(v, e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

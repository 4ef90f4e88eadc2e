package store

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
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
	if err := whole(m); err != nil { // a receive's scan may have left them encoded
		return err
	}
	msg := proto.Clone(m).(*storepb.MessageRecord)
	if !redrive {
		msg.DeadLetterSource = BaseName(q.Name)
	}
	e := &storepb.OutboxEntry{
		SourceShard: t.s.shard, TargetTenant: tenant, TargetQueue: target,
		Message: msg, Redrive: redrive, SourceQueue: BaseName(q.Name),
	}
	if err := t.putOutbox(e); err != nil {
		return err
	}
	return t.remove(q, meta, m)
}

// putOutbox writes e under the shard's next outbox id.
func (t *txn) putOutbox(e *storepb.OutboxEntry) error {
	id := max(t.sm.NextOutboxId, 1)
	t.sm.NextOutboxId, t.smDirty = id+1, true
	e.Id = id
	return t.set(keys.Outbox(t.s.shard, id), e)
}

// markerRefused is the value of a delivered marker whose entry was refused
// (its target queue did not exist): a repeat of that delivery is refused
// again, so an entry the source has sent elsewhere can never also arrive
// here, even if a queue of the target's name is created meanwhile.
var markerRefused = []byte{1}

// getRaw returns the value at key (copied), and whether it exists.
func (t *txn) getRaw(key []byte) ([]byte, bool, error) {
	t.s.keysRead.Add(1)
	v, closer, err := t.r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: get %s: %w", keys.Pretty(key), err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), true, nil
}

// deliverOutbox inserts each entry into its target queue once per
// (source shard, outbox id): a delivered marker answers repeats (the relay
// retries until it sees the ack). A missing target leaves the entry
// undelivered with ErrQueueNotFound.
func (t *txn) deliverOutbox(op *storepb.DeliverOutbox, res *Result) error {
	res.Entries = make([]error, len(op.Entries))
	// A page of the relay mostly names a few queues (a fan-out's
	// subscriptions): each catalog record is read once per command
	// (nothing here changes the catalog).
	queues := map[[2]string]*storepb.QueueRecord{}
	for i, e := range op.Entries {
		if e.GetMessage() == nil {
			res.Entries[i] = fieldErr("entries.message", "missing")
			continue
		}
		marker := keys.Delivered(t.s.shard, e.SourceShard, e.Id)
		v, done, err := t.getRaw(marker)
		if err != nil {
			return err
		}
		if done {
			if bytes.Equal(v, markerRefused) {
				res.Entries[i] = ErrQueueNotFound
			}
			continue
		}
		qk := [2]string{e.TargetTenant, e.TargetQueue}
		q, seen := queues[qk]
		if !seen {
			if q, err = t.queue(e.TargetTenant, e.TargetQueue); err != nil {
				return err
			}
			queues[qk] = q
		}
		if q == nil {
			res.Entries[i] = ErrQueueNotFound
			if err := t.markDelivered(marker, markerRefused, e); err != nil {
				return err
			}
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
			m.FailedCount, m.ReleasedCount, m.DeadLetterReason = 0, 0, storepb.DeadLetterReason_DEAD_LETTER_REASON_UNSPECIFIED
		}
		// A message arriving with its count holds no lease here (its
		// becoming visible is no lease running out), and lives by the
		// target's time to live, from its arrival.
		m.LeaseClosed = m.ReceiveCount > 0
		m.ExpiresAtMs = t.expiresAt(q, 0)
		if err := t.insert(q, meta, m); err != nil {
			return err
		}
		if err := t.putQueueMeta(q.Id, meta); err != nil {
			return err
		}
		if err := t.markDelivered(marker, nil, e); err != nil {
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

// markDelivered writes a delivered (or refused) marker and its place in time order,
// by which Tick drops it after DeliveredRetentionMs.
func (t *txn) markDelivered(marker, v []byte, e *storepb.OutboxEntry) error {
	if err := t.setRaw(marker, v); err != nil {
		return err
	}
	return t.setRaw(keys.DeliveredOrder(t.s.shard, t.now, e.SourceShard, e.Id), nil)
}

// ackOutbox deletes delivered entries; unknown ids are ignored (acks
// repeat). Each entry of return_ids (its target queue did not exist) is
// replaced by an entry back to the queue it left: a redrive returns to its
// dead-letter queue keeping dead_letter_source and receive count, a
// dead-letter move returns to its source queue. An entry that was already
// on its way back, or does not know its source, is discarded: both queues
// were deleted.
func (t *txn) ackOutbox(op *storepb.AckOutbox, res *Result) error {
	for _, id := range op.Ids {
		if err := t.del(keys.Outbox(t.s.shard, id)); err != nil {
			return err
		}
	}
	for _, id := range op.ReturnIds {
		e := &storepb.OutboxEntry{}
		ok, err := t.get(keys.Outbox(t.s.shard, id), e)
		if err != nil {
			return err
		}
		if !ok {
			continue // acked or returned by an earlier ack
		}
		if err := t.del(keys.Outbox(t.s.shard, id)); err != nil {
			return err
		}
		back := returnTarget(e)
		if e.Returned || back == "" || e.GetMessage() == nil {
			continue
		}
		msg := e.Message
		if !e.Redrive {
			msg.DeadLetterSource, msg.DeadLetterReason = "", storepb.DeadLetterReason_DEAD_LETTER_REASON_UNSPECIFIED // home again
		}
		r := &storepb.OutboxEntry{
			SourceShard: t.s.shard, TargetTenant: e.TargetTenant, TargetQueue: back,
			Message: msg, SourceQueue: e.TargetQueue, Returned: true,
		}
		if err := t.putOutbox(r); err != nil {
			return err
		}
		res.OutboxAdded = true
	}
	return nil
}

// returnTarget is where an undeliverable entry goes back to: the queue it
// left (entries written before source_queue existed: a dead-letter move's
// dead_letter_source).
func returnTarget(e *storepb.OutboxEntry) string {
	if e.SourceQueue != "" {
		return e.SourceQueue
	}
	if !e.Redrive {
		return e.GetMessage().GetDeadLetterSource()
	}
	return ""
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
	var orphans int64         // messages whose source queue is gone: they stay
	orphanOf := ""
	err = t.scanBySeq(q.Id, func(m *storepb.MessageRecord) bool {
		switch {
		case isFifo(q) && held[m.GroupId]:
		case inFlight(m) && m.VisibleAtMs > t.now:
			held[m.GroupId] = true
		case op.TargetQueue == "" && slices.Contains(op.MissingSources, m.DeadLetterSource):
			// A missing source holds back the rest of its FIFO group:
			// the group must not arrive out of order once redriven.
			held[m.GroupId] = true
			orphans++
			orphanOf = m.DeadLetterSource
		case op.TargetQueue != "" || m.DeadLetterSource != "":
			move = append(move, m)
		}
		return len(move) >= limit
	})
	if err != nil {
		return err
	}
	if len(move) == 0 {
		if orphans > 0 {
			res.Err = &RedriveSourceError{Source: orphanOf, Messages: orphans}
		}
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

// RedriveSourceError answers a redrive that moved nothing because the
// source queues of the messages left no longer exist. errors.Is(err,
// ErrQueueNotFound) holds.
type RedriveSourceError struct {
	Source   string // one of the missing sources
	Messages int64  // messages held back by missing sources
}

func (e *RedriveSourceError) Error() string {
	return fmt.Sprintf("queue not found: source queue %q of %d dead-lettered message(s) no longer exists; "+
		"redrive them with target_queue", e.Source, e.Messages)
}

// Is makes errors.Is(err, ErrQueueNotFound) true.
func (e *RedriveSourceError) Is(target error) bool { return target == ErrQueueNotFound }

// RedriveSources returns the distinct dead_letter_source names (at most
// maxSources) of the first `limit` messages a redrive of the queue would
// move at nowMs, so that the proposer can check them before redriving.
func (s *Store) RedriveSources(tenant, name string, limit, maxSources int, nowMs int64) ([]string, error) {
	t := s.reader(nowMs)
	q, err := t.queue(tenant, name)
	if err != nil || q == nil {
		return nil, err
	}
	var out []string
	seen := 0
	err = t.scanBySeq(q.Id, func(m *storepb.MessageRecord) bool {
		if m.DeadLetterSource == "" || (inFlight(m) && m.VisibleAtMs > t.now) {
			return false
		}
		seen++
		if !slices.Contains(out, m.DeadLetterSource) {
			out = append(out, m.DeadLetterSource)
		}
		return seen >= limit || len(out) >= maxSources
	})
	return out, err
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
		m, err := t.decodeMessage(qid, it.Key(), v)
		if err != nil {
			return err
		}
		if visit(m) {
			return nil
		}
	}
	return nil
}

// PendingOutbox returns up to limit outbox entries of this shard in id
// order (limit 0: all).
func (s *Store) PendingOutbox(limit int) ([]*storepb.OutboxEntry, error) {
	return s.PendingOutboxAfter(0, limit)
}

// PendingOutboxAfter returns up to limit outbox entries of this shard with
// ids above `after`, in id order, for the relay to deliver and then ack.
func (s *Store) PendingOutboxAfter(after uint64, limit int) (_ []*storepb.OutboxEntry, err error) {
	t := s.reader(math.MaxInt64)
	p := keys.OutboxPrefix(s.shard)
	lo := p
	if after > 0 {
		lo = keys.Outbox(s.shard, after+1)
	}
	it, err := t.iter(lo, keys.PrefixEnd(p))
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

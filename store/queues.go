package store

import (
	"maps"
	"math"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// minHandleKeyLen: handle keys are chosen by the proposer; shorter ones would
// make forged receipt handles feasible.
const minHandleKeyLen = 16

// queue returns the catalog record of (tenant, name), or nil.
func (t *txn) queue(tenant, name string) (*storepb.QueueRecord, error) {
	rec := &storepb.QueueRecord{}
	ok, err := t.get(keys.Catalog(t.s.shard, tenant, name), rec)
	if !ok || err != nil {
		return nil, err
	}
	return rec, nil
}

// lookup resolves a command's queue; a missing one sets res.Err.
func (t *txn) lookup(tenant, name string, res *Result) (*storepb.QueueRecord, error) {
	res.Tenant, res.Queue = tenant, name
	q, err := t.queue(tenant, name)
	if err == nil && q == nil {
		res.Err = ErrQueueNotFound
	}
	return q, err
}

// queueMeta returns the queue's meta, loaded once per command: every path
// of the command changes the same record (counters, low_seq, due time),
// and it is written once at the command's end if changed.
func (t *txn) queueMeta(qid uint64) (*storepb.QueueMeta, error) {
	if m, ok := t.metas[qid]; ok {
		return m, nil
	}
	m := &storepb.QueueMeta{}
	if _, err := t.get(keys.QueueMeta(t.s.shard, qid), m); err != nil {
		return nil, err
	}
	if t.metas == nil {
		t.metas = map[uint64]*storepb.QueueMeta{}
	}
	t.metas[qid] = m
	return m, nil
}

// putQueueMeta makes m the queue's meta and writes it at the command's end.
func (t *txn) putQueueMeta(qid uint64, m *storepb.QueueMeta) error {
	if t.metas == nil {
		t.metas = map[uint64]*storepb.QueueMeta{}
	}
	if t.metasDirty == nil {
		t.metasDirty = map[uint64]bool{}
	}
	t.metas[qid] = m
	t.metasDirty[qid] = true
	return nil
}

// forgetMeta drops a deleted queue's meta so that it is not written back.
func (t *txn) forgetMeta(qid uint64) {
	delete(t.metas, qid)
	delete(t.metasDirty, qid)
}

// flushMetas writes the metas the command changed, in queue id order.
func (t *txn) flushMetas() error {
	ids := make([]uint64, 0, len(t.metasDirty))
	for id := range t.metasDirty {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if m := t.metas[id]; m.SetOnceSeq == 0 {
			// A queue from before the set-once rule: the messages it
			// stores from now on follow it (DESIGN.md, "Single deletes").
			m.SetOnceSeq = max(m.NextSeq, 1)
		}
		if t.lowStale[id] {
			if err := t.raiseLowSeq(id, t.metas[id]); err != nil {
				return err
			}
		}
		if err := t.set(keys.QueueMeta(t.s.shard, id), t.metas[id]); err != nil {
			return err
		}
	}
	return nil
}

// checkDeadLetter enforces: the dead-letter queue exists in the same tenant,
// is not the queue itself and has the same fifo-ness.
func (t *txn) checkDeadLetter(tenant, name string, a *storepb.QueueAttributes) (outcome, err error) {
	if a.DeadLetterQueue == "" {
		return nil, nil
	}
	if a.DeadLetterQueue == name {
		return ErrDeadLetterInvalid, nil
	}
	dlq, err := t.queue(tenant, a.DeadLetterQueue)
	if err != nil {
		return nil, err
	}
	if dlq == nil || dlq.Attributes.GetFifo() != a.Fifo {
		return ErrDeadLetterInvalid, nil
	}
	return nil, nil
}

func (t *txn) createQueue(op *storepb.CreateQueue, res *Result) error {
	name := op.Name
	if op.PartitionCopy {
		name = PartitionName(op.Name, int(op.Partition))
	}
	res.Tenant, res.Queue = op.Tenant, name
	a := op.Attributes
	if op.Tenant == "" {
		res.Err = fieldErr("tenant", "empty")
		return nil
	}
	if err := ValidateQueue(op.Name, a); err != nil {
		res.Err = err
		return nil
	}
	if op.Partition < 0 || op.Partition >= a.GetPartitions() || (op.Partition > 0 && !op.PartitionCopy) {
		res.Err = fieldErr("partition", "must be below attributes.partitions, and nonzero only for a partition copy")
		return nil
	}
	if len(op.HandleKey) < minHandleKeyLen {
		res.Err = fieldErr("handle_key", "shorter than %d bytes", minHandleKeyLen)
		return nil
	}
	existing, err := t.queue(op.Tenant, name)
	if err != nil {
		return err
	}
	if existing != nil && op.PartitionCopy && op.Incarnation < existing.Incarnation {
		// Incarnations only move forward: a delayed create of an older
		// queue of this name (a fan-out racing a delete + re-create) must
		// not wipe the newer queue's messages.
		res.Err = ErrOlderIncarnation
		return nil
	}
	if existing != nil && op.PartitionCopy && existing.Incarnation != op.Incarnation {
		if err := t.dropQueue(existing); err != nil {
			return err
		}
		existing = nil
	}
	if existing != nil && op.PartitionCopy && existing.Attributes.GetFairness() != a.Fairness {
		// Fairness is fixed at creation (the group indexes follow it);
		// UpdateQueue refuses to change it, so no fan-out carries this.
		res.Err = fieldErr("attributes.fairness", "fixed at creation")
		return nil
	}
	if existing != nil && op.PartitionCopy && (!proto.Equal(existing.Attributes, a) || !maps.Equal(existing.Tags, op.Tags)) {
		// A partition copy follows its record of truth: a retried create
		// after an update, or after a delete whose fan-out did not finish,
		// takes the new attributes and tags.
		existing.Attributes, existing.Tags = a, op.Tags
		if err := t.set(keys.Catalog(t.s.shard, op.Tenant, name), existing); err != nil {
			return err
		}
		if err := t.scheduleNow(existing); err != nil {
			return err
		}
	}
	if existing != nil {
		// Creating the same queue again is a no-op, so a retried CreateQueue
		// succeeds; anything else is a conflict.
		if !proto.Equal(existing.Attributes, a) || !maps.Equal(existing.Tags, op.Tags) {
			res.Err = ErrQueueExists
			return nil
		}
		res.QueueInfo, err = t.info(existing)
		return err
	}
	if !op.PartitionCopy {
		if outcome, err := t.checkDeadLetter(op.Tenant, op.Name, a); err != nil || outcome != nil {
			res.Err = outcome
			return err
		}
		if ok, err := t.roomForQueue(op.Tenant); err != nil || !ok {
			res.Err = ErrQuotaExceeded
			return err
		}
		if err := t.addUsage(op.Tenant, 1, 0); err != nil {
			return err
		}
	}
	id := max(t.sm.NextQueueId, 1)
	t.sm.NextQueueId, t.smDirty = id+1, true
	rec := &storepb.QueueRecord{
		Id: id, Tenant: op.Tenant, Name: name, Attributes: a, Tags: op.Tags,
		CreatedAtMs: t.now, HandleKey: op.HandleKey,
		PartitionCopy: op.PartitionCopy, Partition: op.Partition, Incarnation: op.Incarnation,
	}
	if err := t.placeQueue(rec, 0); err != nil {
		return err
	}
	if err := t.set(keys.Catalog(t.s.shard, op.Tenant, name), rec); err != nil {
		return err
	}
	if err := t.putQueueMeta(id, &storepb.QueueMeta{NextSeq: 1, LowSeq: 1, SettledMs: t.now, Counted: true, SetOnceSeq: 1}); err != nil {
		return err
	}
	if a.DeadLetterQueue != "" && !op.PartitionCopy {
		if err := t.setRaw(keys.DeadLetterRef(t.s.shard, op.Tenant, a.DeadLetterQueue, op.Name), nil); err != nil {
			return err
		}
	}
	res.QueueInfo = &QueueInfo{Record: publicRecord(rec)}
	return nil
}

func (t *txn) updateQueue(op *storepb.UpdateQueue, res *Result) error {
	q, err := t.lookup(op.Tenant, op.Name, res)
	if q == nil || err != nil {
		return err
	}
	a, old := op.Attributes, q.Attributes
	switch {
	case a == nil:
		res.Err = fieldErr("attributes", "missing")
	case a.Fifo != old.Fifo:
		res.Err = fieldErr("attributes.fifo", "fixed at creation")
	case a.ContentBasedDeduplication != old.ContentBasedDeduplication:
		res.Err = fieldErr("attributes.content_based_deduplication", "fixed at creation")
	case a.Partitions < old.Partitions:
		res.Err = fieldErr("attributes.partitions", "may grow, never shrink (now %d)", old.Partitions)
	case a.Fairness != old.Fairness:
		res.Err = fieldErr("attributes.fairness", "fixed at creation")
	default:
		res.Err = ValidateQueue(BaseName(q.Name), a)
	}
	if res.Err != nil {
		return nil
	}
	if !q.PartitionCopy {
		if outcome, err := t.checkDeadLetter(q.Tenant, q.Name, a); err != nil || outcome != nil {
			res.Err = outcome
			return err
		}
	}
	if old.DeadLetterQueue != a.DeadLetterQueue && !q.PartitionCopy {
		if old.DeadLetterQueue != "" {
			if err := t.del(keys.DeadLetterRef(t.s.shard, q.Tenant, old.DeadLetterQueue, q.Name)); err != nil {
				return err
			}
		}
		if a.DeadLetterQueue != "" {
			if err := t.setRaw(keys.DeadLetterRef(t.s.shard, q.Tenant, a.DeadLetterQueue, q.Name), nil); err != nil {
				return err
			}
		}
	}
	tags, ferr := editTags(q.Tags, a)
	if ferr != nil {
		res.Err = ferr
		return nil
	}
	q.Tags = tags
	q.Attributes = a
	q.UpdatedAtMs = t.now
	if a.GetPartitions() > old.GetPartitions() {
		if err := t.placeQueue(q, max(old.GetPartitions(), 1)); err != nil {
			return err
		}
	}
	if err := t.set(keys.Catalog(t.s.shard, q.Tenant, q.Name), q); err != nil {
		return err
	}
	// The retention may have shrunk: let the next Tick look at the queue.
	if err := t.scheduleNow(q); err != nil {
		return err
	}
	res.QueueInfo, err = t.info(q)
	return err
}

// editTags applies an UpdateQueue's tag edits (removals, then sets) and
// clears them from a: they are part of the command, never stored.
func editTags(tags map[string]string, a *storepb.QueueAttributes) (map[string]string, error) {
	remove, set := a.RemoveTags, a.SetTags
	a.RemoveTags, a.SetTags = nil, nil
	if len(remove) == 0 && len(set) == 0 {
		return tags, nil
	}
	out := maps.Clone(tags)
	if out == nil {
		out = map[string]string{}
	}
	for _, k := range remove {
		delete(out, k)
	}
	maps.Copy(out, set)
	if len(out) > MaxQueueTags {
		return nil, fieldErr("tags", "at most %d tags per queue", MaxQueueTags)
	}
	return out, nil
}

func (t *txn) deleteQueue(op *storepb.DeleteQueue, res *Result) error {
	q, err := t.lookup(op.Tenant, op.Name, res)
	if q == nil || err != nil {
		return err
	}
	if op.Incarnation != 0 && (!q.PartitionCopy || q.Incarnation != op.Incarnation) {
		return nil // a conditional delete of an orphan copy that was replaced since
	}
	// A queue that is another queue's DLQ stays: deleting it would leave the
	// source with dead letters and nowhere to put them.
	refs := keys.DeadLetterRefPrefix(t.s.shard, q.Tenant, q.Name)
	it, err := t.iter(refs, keys.PrefixEnd(refs))
	if err != nil {
		return err
	}
	inUse := it.First()
	if err := it.Close(); err != nil {
		return err
	}
	if inUse {
		res.Err = ErrQueueInUse
		return nil
	}
	return t.dropQueue(q)
}

// dropQueue removes queue q with every message and index of it.
func (t *txn) dropQueue(q *storepb.QueueRecord) error {
	meta, err := t.queueMeta(q.Id)
	if err != nil {
		return err
	}
	queues := int64(-1)
	if q.PartitionCopy {
		queues = 0 // counted once, on the metadata shard
	}
	if err := t.addUsage(q.Tenant, queues, -meta.Bytes); err != nil {
		return err
	}
	if err := t.del(keys.Catalog(t.s.shard, q.Tenant, q.Name)); err != nil {
		return err
	}
	if d := q.Attributes.GetDeadLetterQueue(); d != "" {
		if err := t.del(keys.DeadLetterRef(t.s.shard, q.Tenant, d, q.Name)); err != nil {
			return err
		}
	}
	if meta.DueAtMs != 0 {
		if err := t.del(keys.Due(t.s.shard, meta.DueAtMs, q.Id)); err != nil {
			return err
		}
	}
	t.forgetMarks(q.Id)
	t.forgetMeta(q.Id)
	t.forgetOrder(q.Id)
	t.dedupDropped(q.Id)
	// Every key of the queue in one range tombstone: O(1) however deep.
	return t.delRange(keys.QueuePrefix(t.s.shard, q.Id), keys.QueueEnd(t.s.shard, q.Id))
}

func (t *txn) purgeQueue(op *storepb.PurgeQueue, res *Result) error {
	q, err := t.lookup(op.Tenant, op.Name, res)
	if q == nil || err != nil {
		return err
	}
	sh := t.s.shard
	// Messages and their indexes (FIFO group order and heads too) go;
	// idempotency, deduplication and receive attempt records stay so that a
	// retried send after a purge is still answered, not stored twice.
	t.forgetMarks(q.Id)
	t.forgetOrder(q.Id)
	if err := t.del(keys.VisibleLow(sh, q.Id)); err != nil {
		return err
	}
	if err := t.delRange(keys.TagLowPrefix(sh, q.Id), keys.PrefixEnd(keys.TagLowPrefix(sh, q.Id))); err != nil {
		return err
	}
	// Priority and fair group indexes, their marks and the group states
	// too ('w': QueueOrder starts again empty).
	for _, p := range [][]byte{keys.GroupsPrefix(sh, q.Id), keys.GroupHeadPrefix(sh, q.Id),
		keys.MessagePrefix(sh, q.Id), keys.LeasePrefix(sh, q.Id), keys.TagsPrefix(sh, q.Id), keys.VisiblePrefix(sh, q.Id),
		keys.ExpiryPrefix(sh, q.Id), keys.PrioritiesPrefix(sh, q.Id), keys.FairsPrefix(sh, q.Id), keys.OrderPrefix(sh, q.Id)} {
		if err := t.delRange(p, keys.PrefixEnd(p)); err != nil {
			return err
		}
	}
	meta, err := t.queueMeta(q.Id)
	if err != nil {
		return err
	}
	if err := t.addUsage(q.Tenant, 0, -meta.Bytes); err != nil {
		return err
	}
	meta.Messages, meta.Bytes, meta.LowSeq = 0, 0, meta.NextSeq
	meta.InFlight, meta.Delayed, meta.SettledMs, meta.Counted = 0, 0, t.now, true
	return t.putQueueMeta(q.Id, meta)
}

// info returns a queue's public record and stats as of t.now.
func (t *txn) info(q *storepb.QueueRecord) (*QueueInfo, error) {
	st, err := t.stats(q.Id)
	if err != nil {
		return nil, err
	}
	return &QueueInfo{Record: publicRecord(q), Stats: st}, nil
}

// stats are the queue's depth at t.now: the in-flight and delayed
// counters of its meta (exact at settled_ms), corrected by the visibility
// entries between settled_ms and t.now, which came due (or, for a time
// before settled_ms, were still ahead) in between. Visible is derived from
// the message counter. The cost is O(entries that changed sides since the
// queue's last command or tick), never the backlog.
func (t *txn) stats(qid uint64) (st Stats, err error) {
	meta, err := t.queueMeta(qid)
	if err != nil {
		return st, err
	}
	st.Messages, st.Bytes = meta.Messages, meta.Bytes
	st.InFlight, st.Delayed = meta.InFlight, meta.Delayed
	lo, hi, sign := meta.SettledMs, t.now, int64(-1)
	if !meta.Counted {
		// A queue from before the counters: count.
		st.InFlight, st.Delayed = 0, 0
		lo, hi, sign = t.now, math.MaxInt64, 1
	} else if t.now < meta.SettledMs {
		lo, hi, sign = t.now, meta.SettledMs, 1
	}
	if lo < hi {
		err = t.walkVisible(qid, lo, hi, func(flag byte) {
			if flag == flagReceived {
				st.InFlight += sign
			} else {
				st.Delayed += sign
			}
		})
		if err != nil {
			return st, err
		}
	}
	st.Visible = max(meta.Messages-st.InFlight-st.Delayed, 0)
	return st, nil
}

// publicRecord strips the handle key: it must never leave the replica.
func publicRecord(q *storepb.QueueRecord) *storepb.QueueRecord {
	c := proto.Clone(q).(*storepb.QueueRecord)
	c.HandleKey = nil
	return c
}

// GetQueue returns a queue of this replica with its stats at nowMs, or
// ErrQueueNotFound.
func (s *Store) GetQueue(tenant, name string, nowMs int64) (*QueueInfo, error) {
	t, done := s.snapshot(nowMs)
	defer done()
	q, err := t.queue(tenant, name)
	if err != nil {
		return nil, err
	}
	if q == nil {
		return nil, ErrQueueNotFound
	}
	return t.info(q)
}

// Queue returns a queue of this replica without stats (cheap: one read),
// or ErrQueueNotFound.
func (s *Store) Queue(tenant, name string) (*QueueInfo, error) {
	q, err := s.reader(0).queue(tenant, name)
	if err != nil {
		return nil, err
	}
	if q == nil {
		return nil, ErrQueueNotFound
	}
	return &QueueInfo{Record: publicRecord(q)}, nil
}

// ListQueues returns up to limit queues of tenant whose names start with
// prefix and sort after `after`, in name order. Stats are left zero (they
// cost a scan per queue); call GetQueue for them.
func (s *Store) ListQueues(tenant, prefix, after string, limit int) (_ []*QueueInfo, err error) {
	t := s.reader(0)
	tp := keys.CatalogTenantPrefix(s.shard, tenant)
	// Escape-and-terminate keeps byte prefixes: names with prefix p have keys
	// starting with tp + p (names never contain 0x00).
	lo := append(append([]byte(nil), tp...), prefix...)
	hi := keys.PrefixEnd(lo)
	if strings.ContainsRune(prefix, 0) {
		return nil, nil
	}
	if after != "" {
		if a := append(keys.Catalog(s.shard, tenant, after), 0); string(a) > string(lo) {
			lo = a
		}
	}
	it, err := t.iter(lo, hi)
	if err != nil {
		return nil, err
	}
	defer closeInto(it, &err)
	var out []*QueueInfo
	for ok := it.First(); ok && (limit <= 0 || len(out) < limit); ok = it.Next() {
		v, err := it.Value()
		if err != nil {
			return nil, err
		}
		rec := &storepb.QueueRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return nil, err
		}
		rec.HandleKey = nil
		out = append(out, &QueueInfo{Record: rec})
	}
	return out, nil
}

package store

import (
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// defaultTickLimit applies when a Tick gives no limit.
const defaultTickLimit = 1000

// queues returns every queue of the shard in catalog (tenant, name) order:
// the deterministic order in which Tick visits them.
func (t *txn) queues() (out []*storepb.QueueRecord, err error) {
	p := keys.CatalogPrefix(t.s.shard)
	it, err := t.iter(p, keys.PrefixEnd(p))
	if err != nil {
		return nil, err
	}
	defer closeInto(it, &err)
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.Value()
		if err != nil {
			return nil, err
		}
		rec := &storepb.QueueRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// tick removes, in this order and at most limit in all: messages past their
// queue's retention (queue by queue in catalog order, oldest first), expired
// short-lived records (idempotency keys, FIFO deduplication ids, receive
// attempts; queue by queue, by expiry), and delivered-outbox markers older
// than DeliveredMarkerTTLMs.
func (t *txn) tick(op *storepb.Tick, res *Result) error {
	limit := int(op.Limit)
	if limit <= 0 {
		limit = defaultTickLimit
	}
	qs, err := t.queues()
	if err != nil {
		return err
	}
	for _, q := range qs {
		if res.Removed >= limit {
			break
		}
		if err := t.expireMessages(q, limit, res); err != nil {
			return err
		}
	}
	for _, q := range qs {
		if res.Removed >= limit {
			break
		}
		if err := t.expireDedup(q.Id, limit, res); err != nil {
			return err
		}
	}
	if res.Removed < limit {
		return t.expireMarkers(limit, res)
	}
	return nil
}

// expireMessages walks the queue's messages in seq order from low_seq.
// enqueued_at grows with seq (apply time never runs backwards), so the first
// message that is not expired ends the walk. low_seq then moves to it, so
// the next walk seeks past the tombstones of removed and deleted messages.
func (t *txn) expireMessages(q *storepb.QueueRecord, limit int, res *Result) (err error) {
	meta, err := t.queueMeta(q.Id)
	if err != nil {
		return err
	}
	retention := q.Attributes.GetMessageRetentionMs()
	p := keys.MessagePrefix(t.s.shard, q.Id)
	it, err := t.iter(p, keys.PrefixEnd(p))
	if err != nil {
		return err
	}
	defer closeInto(it, &err)
	low := meta.NextSeq
	var expired []*storepb.MessageRecord
	for ok := it.SeekGE(keys.Message(t.s.shard, q.Id, meta.LowSeq)); ok; ok = it.Next() {
		v, err := it.Value()
		if err != nil {
			return err
		}
		m := &storepb.MessageRecord{}
		if err := proto.Unmarshal(v, m); err != nil {
			return err
		}
		if m.EnqueuedAtMs+retention > t.now || res.Removed+len(expired) >= limit {
			low = m.Seq
			break
		}
		expired = append(expired, m)
	}
	for _, m := range expired {
		if err := t.remove(q, meta, m); err != nil {
			return err
		}
	}
	res.Removed += len(expired)
	if len(expired) == 0 && low == meta.LowSeq {
		return nil
	}
	meta.LowSeq = low
	return t.putQueueMeta(q.Id, meta)
}

func (t *txn) expireDedup(qid uint64, limit int, res *Result) (err error) {
	it, err := t.iter(keys.DedupOrderPrefix(t.s.shard, qid), keys.DedupOrderUntil(t.s.shard, qid, t.now))
	if err != nil {
		return err
	}
	defer closeInto(it, &err)
	for ok := it.First(); ok && res.Removed < limit; ok = it.Next() {
		_, _, at, key, err := keys.DecodeDedupOrder(it.Key())
		if err != nil {
			return err
		}
		if err := t.del(keys.Dedup(t.s.shard, qid, key)); err != nil {
			return err
		}
		if err := t.del(keys.DedupOrder(t.s.shard, qid, at, key)); err != nil {
			return err
		}
		res.Removed++
	}
	return nil
}

func (t *txn) expireMarkers(limit int, res *Result) (err error) {
	it, err := t.iter(keys.DeliveredOrderPrefix(t.s.shard), keys.DeliveredOrderUntil(t.s.shard, t.now-DeliveredMarkerTTLMs))
	if err != nil {
		return err
	}
	defer closeInto(it, &err)
	for ok := it.First(); ok && res.Removed < limit; ok = it.Next() {
		_, at, src, id, err := keys.DecodeDeliveredOrder(it.Key())
		if err != nil {
			return err
		}
		if err := t.del(keys.Delivered(t.s.shard, src, id)); err != nil {
			return err
		}
		if err := t.del(keys.DeliveredOrder(t.s.shard, at, src, id)); err != nil {
			return err
		}
		res.Removed++
	}
	return nil
}

// NeedsTick reports whether a Tick at nowMs would remove anything: a message
// past retention at the head of a queue, an expired idempotency,
// deduplication or receive attempt record, or an old delivered marker. It
// reads O(queues) keys.
func (s *Store) NeedsTick(nowMs int64) (bool, error) {
	t, done := s.snapshot(nowMs)
	defer done()
	qs, err := t.queues()
	if err != nil {
		return false, err
	}
	first := func(lo, hi []byte, check func(v []byte) (bool, error)) (found bool, err error) {
		it, err := t.iter(lo, hi)
		if err != nil {
			return false, err
		}
		defer closeInto(it, &err)
		if !it.First() {
			return false, nil
		}
		if check == nil {
			return true, nil
		}
		v, err := it.Value()
		if err != nil {
			return false, err
		}
		return check(v)
	}
	for _, q := range qs {
		meta, err := t.queueMeta(q.Id)
		if err != nil {
			return false, err
		}
		retention := q.Attributes.GetMessageRetentionMs()
		found, err := first(keys.Message(s.shard, q.Id, meta.LowSeq), keys.PrefixEnd(keys.MessagePrefix(s.shard, q.Id)),
			func(v []byte) (bool, error) {
				m := &storepb.MessageRecord{}
				err := proto.Unmarshal(v, m)
				return err == nil && m.EnqueuedAtMs+retention <= nowMs, err
			})
		if found || err != nil {
			return found, err
		}
		found, err = first(keys.DedupOrderPrefix(s.shard, q.Id), keys.DedupOrderUntil(s.shard, q.Id, nowMs), nil)
		if found || err != nil {
			return found, err
		}
	}
	return first(keys.DeliveredOrderPrefix(s.shard), keys.DeliveredOrderUntil(s.shard, nowMs-DeliveredMarkerTTLMs), nil)
}

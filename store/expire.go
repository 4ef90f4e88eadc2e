package store

import (
	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// defaultTickLimit applies when a Tick gives no limit.
const defaultTickLimit = 1000

// queues returns every queue of the shard in catalog (tenant, name) order:
// the deterministic order in which Tick visits them.
func (t *txn) queues() ([]*storepb.QueueRecord, error) {
	return readAll(t, keys.CatalogPrefix(t.s.shard), func() *storepb.QueueRecord { return &storepb.QueueRecord{} })
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
		m, err := t.decodeMessage(q.Id, it.Key(), v)
		if err != nil {
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
		t.dedupRemoved(qid, key)
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

package store

import (
	"fmt"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Time to live (see DESIGN.md, "Retries, nacks and time to live"). A
// message with a ttl has expires_at_ms in its record (written once) and an
// entry in the queue's time-to-live order 'x' (expires_at, seq), so Tick
// finds the expired ones in O(expired) although expiry, unlike retention,
// does not follow seq. A receive that meets an expired message before Tick
// does removes it instead of leasing it (triage.sort).

// expiresAt is when a message sent now into q with its own ttl (0: none)
// expires, 0 for never: the shorter of its ttl and the queue's.
func (t *txn) expiresAt(q *storepb.QueueRecord, ttlMs int64) int64 {
	ttl := q.Attributes.GetMessageTtlMs()
	if ttlMs > 0 && (ttl == 0 || ttlMs < ttl) {
		ttl = ttlMs
	}
	if ttl <= 0 {
		return 0
	}
	return t.now + ttl
}

// indexExpiry writes m's place in the time-to-live order and has Tick
// visit the queue then.
func (t *txn) indexExpiry(q *storepb.QueueRecord, meta *storepb.QueueMeta, m *storepb.MessageRecord) error {
	if m.ExpiresAtMs <= 0 {
		return nil
	}
	if err := t.setRaw(keys.Expiry(t.s.shard, q.Id, m.ExpiresAtMs, m.Seq), nil); err != nil {
		return err
	}
	return t.schedule(q, meta, m.ExpiresAtMs)
}

// expireTTL removes queue q's messages whose time to live ended by now, in
// expiry order, within the tick's limit: dead-lettered with reason EXPIRED
// when q has a dead-letter queue, else dropped.
func (t *txn) expireTTL(q *storepb.QueueRecord, limit int, res *Result) (err error) {
	sh := t.s.shard
	p := keys.ExpiryPrefix(sh, q.Id)
	it, err := t.iter(p, untilKey(p, t.now))
	if err != nil {
		return err
	}
	var seqs []uint64
	for ok := it.First(); ok && res.Removed+len(seqs) < limit; ok = it.Next() {
		_, _, _, seq, err := keys.DecodeExpiry(it.Key())
		if err != nil {
			closeInto(it, &err)
			return fmt.Errorf("store: bad expiry key %s: %w", keys.Pretty(it.Key()), err)
		}
		seqs = append(seqs, seq)
	}
	if err := it.Close(); err != nil || len(seqs) == 0 {
		return err
	}
	meta, err := t.queueMeta(q.Id)
	if err != nil {
		return err
	}
	for _, seq := range seqs {
		m, err := t.message(q.Id, seq)
		if err != nil {
			return err
		}
		if m == nil {
			return fmt.Errorf("store: expiry entry without message: queue %d seq %d", q.Id, seq)
		}
		if q.Attributes.DeadLetterQueue != "" {
			err = t.deadLetter(q, meta, m, storepb.DeadLetterReason_DEAD_LETTER_REASON_EXPIRED)
			res.OutboxAdded = true
		} else {
			err = t.remove(q, meta, m)
			res.Dropped++
		}
		if err != nil {
			return err
		}
	}
	res.Removed += len(seqs)
	return t.putQueueMeta(q.Id, meta)
}

// nextExpiry is the first expires_at after now in q's time-to-live order
// (0: none).
func (t *txn) nextExpiry(qid uint64) (at int64, err error) {
	p := keys.ExpiryPrefix(t.s.shard, qid)
	it, err := t.iter(untilKey(p, t.now), keys.PrefixEnd(p))
	if err != nil {
		return 0, err
	}
	defer closeInto(it, &err)
	if !it.First() {
		return 0, nil
	}
	_, _, at, _, err = keys.DecodeExpiry(it.Key())
	if err != nil {
		return 0, fmt.Errorf("store: bad expiry key %s: %w", keys.Pretty(it.Key()), err)
	}
	return at, nil
}

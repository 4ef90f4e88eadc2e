package store

import (
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Short-lived records share one key space per queue ('d' key, with the
// expiry order in 'e' that Tick walks), namespaced by a prefix:
const (
	idempotencyPrefix   = "i:" // idempotency key -> DedupRecord (any queue)
	deduplicationPrefix = "f:" // FIFO deduplication id -> DedupRecord
	attemptPrefix       = "r:" // receive_attempt_id -> ReceiveAttemptRecord
)

// prefixed returns prefix+id, or "" for an empty id.
func prefixed(prefix, id string) string {
	if id == "" {
		return ""
	}
	return prefix + id
}

// expiring is a short-lived record.
type expiring interface {
	proto.Message
	GetExpiresAtMs() int64
}

// recall reads the record under key into rec. found: it exists; live: it
// has not expired at the command time. An expired record that Tick has not
// removed yet is found but not live: the caller replaces it through
// remember, passing it as old.
func (t *txn) recall(qid uint64, key string, rec expiring) (found, live bool, err error) {
	if may, err := t.dedupMayHold(qid, key); !may || err != nil {
		return false, false, err
	}
	found, err = t.get(keys.Dedup(t.s.shard, qid, key), rec)
	if !found || err != nil {
		return false, false, err
	}
	return true, rec.GetExpiresAtMs() > t.now, nil
}

// remember writes rec under key with its place in the expiry order; old,
// if not nil, is the record it replaces (its expiry entry goes).
func (t *txn) remember(q *storepb.QueueRecord, key string, rec, old expiring) error {
	qid := q.Id
	// Tick looks at the queue when the record expires.
	meta, err := t.queueMeta(qid)
	if err != nil {
		return err
	}
	if err := t.schedule(q, meta, rec.GetExpiresAtMs()); err != nil {
		return err
	}
	if old != nil {
		if err := t.del(keys.DedupOrder(t.s.shard, qid, old.GetExpiresAtMs(), key)); err != nil {
			return err
		}
	}
	if err := t.set(keys.Dedup(t.s.shard, qid, key), rec); err != nil {
		return err
	}
	if old == nil { // recall found no record: the key is new
		t.dedupAdded(qid, key)
	}
	return t.setRaw(keys.DedupOrder(t.s.shard, qid, rec.GetExpiresAtMs(), key), nil)
}

// replayAttempt answers a retried receive. When id names a live attempt of
// queue q whose messages all still exist with the receive count they were
// returned with and are still in flight, it fills res.Received with them in
// the same order (same receipt handles: a handle is a function of the
// message and its count) and reports replayed; nothing is written. Else the
// caller makes a fresh receive and records it with rememberAttempt, passing
// old (the record found, nil if none) to replace.
func (t *txn) replayAttempt(q *storepb.QueueRecord, id string, res *Result) (old *storepb.ReceiveAttemptRecord, replayed bool, err error) {
	if id == "" {
		return nil, false, nil
	}
	rec := &storepb.ReceiveAttemptRecord{}
	found, live, err := t.recall(q.Id, attemptPrefix+id, rec)
	if !found || err != nil {
		return nil, false, err
	}
	// An attempt that returned nothing is not replayed: the client lost
	// nothing, and a fresh receive may find messages.
	if !live || len(rec.Messages) == 0 {
		return rec, false, nil
	}
	out := make([]Received, 0, len(rec.Messages))
	for _, ref := range rec.Messages {
		m, err := t.message(q.Id, ref.Seq)
		if err != nil {
			return nil, false, err
		}
		if m == nil || m.ReceiveCount != ref.ReceiveCount || m.VisibleAtMs <= t.now || m.LeaseClosed {
			return rec, false, nil
		}
		h := Handle{Shard: t.s.shard, Partition: uint16(q.Partition), Queue: q.Id, Seq: m.Seq, ReceiveCount: m.ReceiveCount}
		out = append(out, Received{Message: m, ReceiptHandle: t.signer(q.HandleKey).encode(h)})
	}
	res.Received, res.Replayed = out, true
	return rec, true, nil
}

// rememberAttempt records what a fresh receive with a receive_attempt_id
// returned, replacing old. A receive that returned nothing leaves no record
// (a retry of it is a fresh receive anyway).
func (t *txn) rememberAttempt(q *storepb.QueueRecord, id string, got []Received, old *storepb.ReceiveAttemptRecord) error {
	qid := q.Id
	key := attemptPrefix + id
	if len(got) == 0 {
		if old == nil {
			return nil
		}
		if err := t.del(keys.Dedup(t.s.shard, qid, key)); err != nil {
			return err
		}
		t.dedupRemoved(qid, key)
		return t.del(keys.DedupOrder(t.s.shard, qid, old.ExpiresAtMs, key))
	}
	rec := &storepb.ReceiveAttemptRecord{ExpiresAtMs: t.now + ReceiveAttemptWindowMs}
	for _, r := range got {
		rec.Messages = append(rec.Messages, &storepb.ReceivedRef{Seq: r.Message.Seq, ReceiveCount: r.Message.ReceiveCount})
	}
	var prev expiring
	if old != nil {
		prev = old
	}
	return t.remember(q, key, rec, prev)
}

package store

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Idempotency keys live in expiry buckets ('i' bucket key, DESIGN.md
// "Deduplication"): one key per send, removed a bucket at a time by one
// range delete. The 'd' record with its 'e' expiry entry cost two keys per
// send and two point deletes at expiry, all of them flushed and compacted
// (every SDK send carries a key that lives five minutes, far longer than a
// memtable): without idempotency keys a closed-loop run wrote 0.06 KiB of
// compactions per message instead of 0.96, and used 18 % less CPU.

// idemBucketMs is the span of one bucket: a record is removed at most this
// long after it expired, and a lookup that the filter cannot answer seeks
// one key per bucket of the window (IdempotencyWindowMs / idemBucketMs + 1).
const idemBucketMs = 60_000

// idemBucket is the start of the bucket that holds records expiring at
// expiresMs.
func idemBucket(expiresMs int64) int64 {
	b := expiresMs / idemBucketMs
	if expiresMs%idemBucketMs < 0 {
		b--
	}
	return b * idemBucketMs
}

// idemExpiredBefore is the exclusive end of the buckets whose every record
// has expired at now (a record is live while its expiry is after now).
func idemExpiredBefore(now int64) int64 { return now + 2 - idemBucketMs }

// An idempotency record's value is the send's time (8 bytes, big-endian)
// and the message's seq (uvarint): its expiry is the time plus the window,
// and its message id a function of both (messageID), so neither is stored.
func appendIdem(dst []byte, sentAt int64, seq uint64) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(sentAt))
	return binary.AppendUvarint(dst, seq)
}

func decodeIdem(v []byte) (sentAt int64, seq uint64, err error) {
	if len(v) < 9 {
		return 0, 0, fmt.Errorf("store: idempotency record of %d bytes", len(v))
	}
	seq, n := binary.Uvarint(v[8:])
	if n <= 0 || 8+n != len(v) {
		return 0, 0, fmt.Errorf("store: bad idempotency record %x", v)
	}
	return int64(binary.BigEndian.Uint64(v)), seq, nil
}

// recallIdem looks up idempotency key key (without its "i:" prefix) of the
// reader's queue. live: a record of it has not expired; rec is then the
// first send's outcome. A record from before the buckets ('d', with its
// 'e' entry) is found too; an expired one is left for Tick.
func (d *dedupReader) recallIdem(key string, rec *storepb.DedupRecord) (live bool, err error) {
	full := idempotencyPrefix + key
	if w, ok := d.wrote[full]; ok {
		*rec = storepb.DedupRecord{MessageId: w.MessageId, Seq: w.Seq, ExpiresAtMs: w.ExpiresAtMs}
		return w.ExpiresAtMs > d.t.now, nil
	}
	// One hash of the key for the filter's 'd' map and bucket maps (nil
	// counts: no filter here, look everywhere).
	t := d.t
	qk, err := t.counted(d.qid)
	if err != nil {
		return false, err
	}
	var h uint64
	if qk != nil {
		h = t.s.dedup.hash(full)
	}
	if qk == nil || qk.d[h] > 0 {
		if _, live, err := d.seek(full, rec); live || err != nil {
			return live, err
		}
	}
	// A live record expires in (now, now + window]: at most one bucket of
	// that span holds the key (a record is written only when none is live).
	for b := idemBucket(t.now + 1); b <= idemBucket(t.now+IdempotencyWindowMs); b += idemBucketMs {
		if qk != nil && qk.i[b][h] == 0 {
			continue
		}
		if live, err := d.seekIdem(b, key, rec); live || err != nil {
			return live, err
		}
	}
	return false, nil
}

// seekIdem reads key's record in the bucket that starts at b into rec and
// reports whether it is live.
func (d *dedupReader) seekIdem(b int64, key string, rec *storepb.DedupRecord) (live bool, err error) {
	t := d.t
	if d.idemIt == nil {
		lo := keys.IdemPrefix(t.s.shard, d.qid)
		d.idemIt, err = t.r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: keys.PrefixEnd(lo), UseL6Filters: true})
		if err != nil {
			return false, fmt.Errorf("store: iterate %s: %w", keys.Pretty(lo), err)
		}
	}
	t.s.keysRead.Add(1)
	d.key = keys.AppendString(keys.AppendInt64(append(d.key[:0], keys.IdemPrefix(t.s.shard, d.qid)...), b), key)
	if !d.idemIt.SeekPrefixGE(d.key) || !bytes.Equal(d.idemIt.Key(), d.key) {
		if err := d.idemIt.Error(); err != nil {
			return false, fmt.Errorf("store: get %s: %w", keys.Pretty(d.key), err)
		}
		return false, nil
	}
	v, err := d.idemIt.ValueAndErr()
	if err != nil {
		return false, fmt.Errorf("store: read %s: %w", keys.Pretty(d.key), err)
	}
	sentAt, seq, err := decodeIdem(v)
	if err != nil {
		return false, fmt.Errorf("%w (%s)", err, keys.Pretty(d.key))
	}
	exp := sentAt + IdempotencyWindowMs
	if exp <= t.now {
		return false, nil
	}
	*rec = storepb.DedupRecord{MessageId: messageID(sentAt, t.s.shard, d.qid, seq), Seq: seq, ExpiresAtMs: exp}
	return true, nil
}

// rememberIdem records that key (without its "i:" prefix) sent message id
// (seq) of queue q now; later lookups of key in this command see it.
func (d *dedupReader) rememberIdem(q *storepb.QueueRecord, key, id string, seq uint64) error {
	t := d.t
	exp := t.now + IdempotencyWindowMs
	if d.wrote == nil {
		d.wrote = map[string]*storepb.DedupRecord{}
	}
	full := idempotencyPrefix + key
	d.wrote[full] = &storepb.DedupRecord{MessageId: id, Seq: seq, ExpiresAtMs: exp}
	meta, err := t.queueMeta(q.Id)
	if err != nil {
		return err
	}
	b := idemBucket(exp)
	// Tick drops the bucket once every record in it has expired.
	if err := t.schedule(q, meta, b+idemBucketMs-1); err != nil {
		return err
	}
	t.s.idemBuf = appendIdem(t.s.idemBuf[:0], t.now, seq)
	if err := t.setRaw(keys.Idem(t.s.shard, q.Id, b, key), t.s.idemBuf); err != nil {
		return err
	}
	t.idemAdded(q.Id, full, b)
	return nil
}

// expireIdem drops queue qid's buckets whose records have all expired:
// one range delete (from the start of the queue's buckets, so it also
// covers those dropped before), written only when such a bucket holds a
// key. It counts as one removal against the Tick's limit.
func (t *txn) expireIdem(qid uint64, limit int, res *Result) (err error) {
	if res.Removed >= limit {
		return nil
	}
	end := idemExpiredBefore(t.now)
	lo, hi := keys.IdemPrefix(t.s.shard, qid), keys.IdemBucketStart(t.s.shard, qid, end)
	it, err := t.iter(lo, hi)
	if err != nil {
		return err
	}
	found := it.First()
	if err := it.Close(); err != nil || !found {
		return err
	}
	// Not delRange: no cached hot key lives under 'i'.
	if err := t.b.DeleteRange(lo, hi, nil); err != nil {
		return fmt.Errorf("store: delete range %s: %w", keys.Pretty(lo), err)
	}
	t.idemDropped(qid, end)
	res.Removed++
	return nil
}

// nextIdemDue is when Tick can drop queue qid's first bucket (0: none).
func (t *txn) nextIdemDue(qid uint64) (at int64, err error) {
	lo := keys.IdemBucketStart(t.s.shard, qid, idemExpiredBefore(t.now))
	it, err := t.iter(lo, keys.PrefixEnd(keys.IdemPrefix(t.s.shard, qid)))
	if err != nil {
		return 0, err
	}
	defer closeInto(it, &err)
	if !it.First() {
		return 0, nil
	}
	_, _, b, _, err := keys.DecodeIdem(it.Key())
	if err != nil {
		return 0, fmt.Errorf("store: bad key %s: %w", keys.Pretty(it.Key()), err)
	}
	return b + idemBucketMs - 1, nil
}

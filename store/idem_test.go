package store

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// idemKeys lists queue qid's bucketed idempotency keys as bucket/key.
func idemKeys(t *testing.T, db *pebble.DB, shard, qid uint64) []string {
	t.Helper()
	lo := keys.IdemPrefix(shard, qid)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: keys.PrefixEnd(lo)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []string
	for ok := it.First(); ok; ok = it.Next() {
		_, _, b, k, err := keys.DecodeIdem(it.Key())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d/%s", b, k))
	}
	return out
}

// TestIdemBucketsDropInOneRangeDelete: each keyed send writes one key in
// the bucket of its expiry and nothing else for its key; a Tick drops every
// bucket whose records all expired with one range delete (no point delete),
// and the dedup filter forgets their keys with them, so a key of a dropped
// bucket is a new send while one in a later bucket is still a duplicate.
func TestIdemBucketsDropInOneRangeDelete(t *testing.T) {
	h := newHarness(t)
	h.run("create q=a")
	q, err := h.s.reader(h.now).queue("t", "a")
	if err != nil || q == nil {
		t.Fatal(q, err)
	}
	first := map[string]string{}
	var times []int64
	for i := range 30 { // one key every 20 s: ten minutes, ten buckets
		h.now = int64(i) * 20_000
		times = append(times, h.now)
		key := fmt.Sprintf("k%02d", i)
		r := h.apply(sendCmd("a", &storepb.SendEntry{Body: "b", DelayMs: -1, IdempotencyKey: key}))
		if r.Err != nil || r.Sent[0].Duplicate {
			t.Fatalf("send %s: %+v %v", key, r.Sent, r.Err)
		}
		first[key] = r.Sent[0].MessageID
	}
	got := idemKeys(t, h.db, h.s.shard, q.Id)
	if len(got) != 30 {
		t.Fatalf("%d idempotency keys for 30 keyed sends: %v", len(got), got)
	}
	for i, k := range got {
		want := fmt.Sprintf("%d/k%02d", idemBucket(times[i]+IdempotencyWindowMs), i)
		if k != want {
			t.Fatalf("key %d: %s, want %s", i, k, want)
		}
	}

	// At 9m50s (after the last send) the records sent before 4m50s have
	// expired; the buckets of those expiring before 9m go in one range
	// delete, the one of [9m, 10m) stays.
	h.now = 590_000
	_, b := h.stage(&storepb.Command{Op: &storepb.Command_Tick{Tick: &storepb.Tick{}}})
	rangeDels, pointDels := batchDeletes(t, b, keys.IdemPrefix(h.s.shard, q.Id))
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	h.s.Committed()
	if rangeDels != 1 || pointDels != 0 {
		t.Fatalf("tick: %d range deletes and %d point deletes of idempotency keys, want 1 and 0", rangeDels, pointDels)
	}
	left := idemKeys(t, h.db, h.s.shard, q.Id)
	end := idemExpiredBefore(h.now)
	for _, k := range left {
		var bucket int64
		if _, err := fmt.Sscanf(k, "%d/", &bucket); err != nil {
			t.Fatal(err)
		}
		if bucket < end {
			t.Fatalf("bucket %d of %s left after a tick at %d", bucket, k, h.now)
		}
	}
	if len(left) == 0 || len(left) >= 30 {
		t.Fatalf("%d keys left: %v", len(left), left)
	}
	// The filter counts exactly the keys left, by bucket.
	qk := h.s.dedup.queues[q.Id]
	if qk == nil {
		t.Fatal("the queue's keys are not counted")
	}
	total := 0
	for b, m := range qk.i {
		if b < end {
			t.Fatalf("filter keeps bucket %d, dropped at %d", b, h.now)
		}
		for _, n := range m {
			total += int(n)
		}
	}
	if total != len(left) || len(qk.d) != 0 {
		t.Fatalf("filter counts %d keys in buckets and %d others, state holds %d", total, len(qk.d), len(left))
	}

	// Expired keys (dropped or not) send anew; live ones are duplicates.
	for i, at := range times {
		key := fmt.Sprintf("k%02d", i)
		r := h.apply(sendCmd("a", &storepb.SendEntry{Body: "b", DelayMs: -1, IdempotencyKey: key}))
		live := at+IdempotencyWindowMs > h.now
		if r.Sent[0].Duplicate != live || (live && r.Sent[0].MessageID != first[key]) {
			t.Fatalf("retry of %s (sent at %d, now %d): %+v, want duplicate %v of %s", key, at, h.now, r.Sent[0], live, first[key])
		}
	}
}

// TestIdemRecordsFromBefore: idempotency records written by a version
// before the buckets ('d' "i:" key and its 'e' expiry entry, as an old data
// directory or an old node's snapshot holds them) still make duplicates
// within their window, are not rewritten, and Tick removes them by their
// expiry order as before.
func TestIdemRecordsFromBefore(t *testing.T) {
	h := newHarness(t)
	h.run("create q=a")
	h.now = 1_000
	r := h.apply(sendCmd("a", &storepb.SendEntry{Body: "b", DelayMs: -1}))
	id, seq := r.Sent[0].MessageID, r.Sent[0].Seq
	// The old layout, written the way the old send did (txn.remember).
	b := h.db.NewIndexedBatch()
	tx := &txn{s: h.s, r: b, b: b, now: h.now}
	q, err := tx.queue("t", "a")
	if err != nil || q == nil {
		t.Fatal(q, err)
	}
	if err := tx.remember(q, "i:old", &storepb.DedupRecord{MessageId: id, Seq: seq, ExpiresAtMs: h.now + IdempotencyWindowMs}, nil); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(tx.flushMarks(), tx.flushMetas()); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	h.s.dropCaches() // as after a restart

	h.now = 200_000
	r = h.apply(sendCmd("a", &storepb.SendEntry{Body: "b", DelayMs: -1, IdempotencyKey: "old"}))
	if !r.Sent[0].Duplicate || r.Sent[0].MessageID != id {
		t.Fatalf("retry within the old record's window: %+v, want duplicate of %s", r.Sent[0], id)
	}
	if got := idemKeys(t, h.db, h.s.shard, q.Id); len(got) != 0 {
		t.Fatalf("a duplicate wrote %v", got)
	}
	// Expired: a new message, recorded in a bucket; the old record stays
	// until Tick reaches its expiry entry.
	h.now = 301_000
	r = h.apply(sendCmd("a", &storepb.SendEntry{Body: "b", DelayMs: -1, IdempotencyKey: "old"}))
	if r.Sent[0].Duplicate {
		t.Fatalf("send after the old record expired: %+v", r.Sent[0])
	}
	if got := idemKeys(t, h.db, h.s.shard, q.Id); len(got) != 1 {
		t.Fatalf("idempotency keys %v, want the new record", got)
	}
	if got := strings.TrimSpace(h.run("tick")); got != "removed=1" {
		t.Fatalf("tick: %s, want the expired old record removed", got)
	}
	if found, err := h.s.reader(h.now).get(keys.Dedup(h.s.shard, q.Id, "i:old"), nil); err != nil || found {
		t.Fatalf("old record after its tick: %v %v", found, err)
	}
	if ok, err := h.s.reader(h.now).get(keys.DedupOrder(h.s.shard, q.Id, 301_000, "i:old"), nil); err != nil || ok {
		t.Fatalf("old expiry entry after its tick: %v %v", ok, err)
	}
	// The new record still answers.
	again := h.apply(sendCmd("a", &storepb.SendEntry{Body: "b", DelayMs: -1, IdempotencyKey: "old"}))
	if !again.Sent[0].Duplicate || again.Sent[0].MessageID != r.Sent[0].MessageID {
		t.Fatalf("retry of the new record: %+v, want duplicate of %s", again.Sent[0], r.Sent[0].MessageID)
	}
}

// batchDeletes counts the range deletes and point deletes in b whose key
// starts with prefix.
func batchDeletes(t *testing.T, b *pebble.Batch, prefix []byte) (rangeDels, pointDels int) {
	t.Helper()
	for _, op := range batchOps(t, b) {
		if !bytes.HasPrefix(op.key, prefix) {
			continue
		}
		switch op.kind {
		case pebble.InternalKeyKindRangeDelete:
			rangeDels++
		case pebble.InternalKeyKindDelete, pebble.InternalKeyKindSingleDelete:
			pointDels++
		}
	}
	return rangeDels, pointDels
}

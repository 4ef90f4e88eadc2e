package store

import (
	"fmt"
	"hash/maphash"
	"math"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumq/quorumq/internal/keys"
)

// dedupFilter counts, per queue, the short-lived record keys ('d':
// idempotency keys, deduplication ids, receive attempts; 'i': idempotency
// keys in expiry buckets, counted as "i:" + key) in the shard's state by a
// 64-bit hash of the key. A lookup whose hash has no count is a
// miss without touching Pebble: every SDK send carries an idempotency key
// that is almost never there, and even through one iterator with bloom
// filters each miss cost a seek of every memtable (13 % of a leader's CPU
// in `make bench-peers`).
//
// It is a cache of the state, never an input to it: a hash with a count
// is looked up in Pebble as before, so outcomes and writes are those of
// the lookup without it (TestDeterministicReplay runs a replica without
// it). What keeps it exact: a queue's counts are built from its 'd' range
// at its first lookup (through the apply batch), and from then on every
// write of a new 'd' key adds one and every delete of an existing one
// takes one (remember, rememberAttempt, expireDedup); each bucket keeps
// the hashes of its 'i' keys, so the range delete that drops it (expireIdem)
// takes theirs; dropping the queue drops its counts. A snapshot install (Restored) or an apply index that
// runs backwards (state rebuilt from the start) drops them all. A failed
// apply halts the group, so a dropped batch's changes never matter. Only
// Apply's goroutine touches it.
type dedupFilter struct {
	seed   maphash.Seed
	queues map[uint64]map[uint64]uint32
	// buckets holds, per counted queue, the hashes of each 'i' bucket's keys.
	buckets map[uint64]map[int64][]uint64
}

func newDedupFilter() *dedupFilter {
	return &dedupFilter{seed: maphash.MakeSeed(), queues: map[uint64]map[uint64]uint32{}, buckets: map[uint64]map[int64][]uint64{}}
}

// Restored drops every cached view of the state after a snapshot replaced
// it (the Raft host's Restorer).
func (s *Store) Restored() {
	s.dropCaches()
	s.views.committed()
}

// Restoring is called before the shard's state is replaced or removed:
// read-only views stop using the cache (viewHot) until Restored.
func (s *Store) Restoring() { s.views.writing() }

// Committed is called after the batch of an apply round is committed:
// read-only views may use the cache again (viewHot).
func (s *Store) Committed() { s.views.committed() }

// dropCaches forgets what Apply cached of the state.
func (s *Store) dropCaches() {
	if s.dedup != nil {
		clear(s.dedup.queues)
		clear(s.dedup.buckets)
	}
	s.dropHot()
}

func (f *dedupFilter) hash(key string) uint64 { return maphash.String(f.seed, key) }

// dedupMayHold reports whether queue qid may have a 'd' record under key:
// false is certain. Outside Apply (no filter, or a read-only view) it is
// always true.
func (t *txn) dedupMayHold(qid uint64, key string) (bool, error) {
	f := t.s.dedup
	if f == nil || t.b == nil {
		return true, nil
	}
	counts, ok := f.queues[qid]
	if !ok {
		var (
			buckets map[int64][]uint64
			err     error
		)
		if counts, buckets, err = t.buildDedupCounts(qid); err != nil {
			return false, err
		}
		f.queues[qid] = counts // nil: too many to count, always look
		if counts != nil {
			f.buckets[qid] = buckets
		}
	}
	return counts == nil || counts[f.hash(key)] > 0, nil
}

// maxDedupBuild bounds the keys a build counts (it runs on the Raft loop:
// 1.5 M keys, five minutes of sends at 5,000/s, would hold the loop for
// about a second). A queue with more is not filtered until the store is
// created again; a queue that grows past it while counted stays counted.
// A variable for tests.
var maxDedupBuild = 1 << 18

// buildDedupCounts counts queue qid's 'd' and 'i' keys as the batch sees
// them, and lists each bucket's hashes.
func (t *txn) buildDedupCounts(qid uint64) (counts map[uint64]uint32, buckets map[int64][]uint64, err error) {
	counts, buckets = map[uint64]uint32{}, map[int64][]uint64{}
	count := func(lo []byte, key func(k []byte) (string, int64, error)) (ok bool, err error) {
		it, err := t.r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: keys.PrefixEnd(lo)})
		if err != nil {
			return false, fmt.Errorf("store: iterate %s: %w", keys.Pretty(lo), err)
		}
		defer func() {
			if cerr := it.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("store: iterator: %w", cerr)
			}
		}()
		for valid := it.First(); valid; valid = it.Next() {
			if len(counts) >= maxDedupBuild {
				return false, nil
			}
			t.s.keysRead.Add(1)
			k, b, err := key(it.Key())
			if err != nil {
				return false, err
			}
			h := t.s.dedup.hash(k)
			counts[h]++
			if b != noBucket {
				buckets[b] = append(buckets[b], h)
			}
		}
		return true, it.Error()
	}
	ok, err := count(keys.DedupPrefix(t.s.shard, qid), func(k []byte) (string, int64, error) {
		_, _, key, err := keys.DecodeDedup(k)
		return key, noBucket, err
	})
	if err != nil || !ok {
		return nil, nil, err
	}
	ok, err = count(keys.IdemPrefix(t.s.shard, qid), func(k []byte) (string, int64, error) {
		_, _, b, key, err := keys.DecodeIdem(k)
		return idempotencyPrefix + key, b, err
	})
	if err != nil || !ok {
		return nil, nil, err
	}
	return counts, buckets, nil
}

// noBucket marks a 'd' key in buildDedupCounts.
const noBucket = math.MinInt64

// dedupAdded notes a new 'd' key of queue qid (one that was absent).
func (t *txn) dedupAdded(qid uint64, key string) {
	if f := t.s.dedup; f != nil {
		if counts := f.queues[qid]; counts != nil {
			counts[f.hash(key)]++
		}
	}
}

// dedupRemoved notes the delete of an existing 'd' key of queue qid.
func (t *txn) dedupRemoved(qid uint64, key string) {
	f := t.s.dedup
	if f == nil {
		return
	}
	counts := f.queues[qid]
	if counts == nil {
		return
	}
	f.uncount(qid, counts, f.hash(key))
}

// uncount takes one from hash h of queue qid's counts.
func (f *dedupFilter) uncount(qid uint64, counts map[uint64]uint32, h uint64) {
	switch n := counts[h]; {
	case n > 1:
		counts[h] = n - 1
	case n == 1:
		delete(counts, h)
	default:
		// Not counted: the counts are wrong. Rebuild them at the next
		// lookup rather than answer a miss for a key that exists.
		delete(f.queues, qid)
		delete(f.buckets, qid)
	}
}

// idemAdded notes a new 'i' key of queue qid (key with its "i:" prefix)
// in the bucket that starts at bucket.
func (t *txn) idemAdded(qid uint64, key string, bucket int64) {
	f := t.s.dedup
	if f == nil {
		return
	}
	if counts := f.queues[qid]; counts != nil {
		h := f.hash(key)
		counts[h]++
		bs := f.buckets[qid]
		bs[bucket] = append(bs[bucket], h)
	}
}

// idemDropped notes the range delete of queue qid's buckets that start
// before end.
func (t *txn) idemDropped(qid uint64, end int64) {
	f := t.s.dedup
	if f == nil {
		return
	}
	counts := f.queues[qid]
	if counts == nil {
		return
	}
	bs := f.buckets[qid]
	for b, hs := range bs { // order does not matter: counts only
		if b >= end {
			continue
		}
		delete(bs, b)
		for _, h := range hs {
			if f.queues[qid] == nil {
				return // uncount found the counts wrong and dropped them
			}
			f.uncount(qid, counts, h)
		}
	}
}

// dedupDropped forgets queue qid's counts (the queue and its keys went).
func (t *txn) dedupDropped(qid uint64) {
	if f := t.s.dedup; f != nil {
		delete(f.queues, qid)
		delete(f.buckets, qid)
	}
}

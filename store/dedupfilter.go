package store

import (
	"fmt"
	"hash/maphash"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumq/quorumq/internal/keys"
)

// dedupFilter counts, per queue, the short-lived record keys in the
// shard's state by a 64-bit hash of the key: the 'd' keys (deduplication
// ids, receive attempts, idempotency keys from before their buckets) in
// one map, the 'i' keys (idempotency keys, counted as "i:" + key) in one
// map per bucket. A lookup whose hash has no count is a miss without
// touching Pebble: every SDK send carries an idempotency key that is
// almost never there, and even through one iterator with bloom filters
// each miss cost a seek of every memtable (13 % of a leader's CPU in
// `make bench-peers`).
//
// It is a cache of the state, never an input to it: a hash with a count
// is looked up in Pebble as before, so outcomes and writes are those of
// the lookup without it (TestDeterministicReplay runs a replica without
// it). What keeps it exact: a queue's counts are built from its 'd' and
// 'i' ranges at its first lookup (through the apply batch), and from then
// on every write of a new 'd' key adds one and every delete of an existing
// one takes one (remember, rememberAttempt, expireDedup), every 'i' key
// adds one to its bucket's map (rememberIdem), and the range delete of
// expired buckets drops their maps (expireIdem); dropping the queue drops
// its counts. A snapshot install (Restored) or an apply index that runs
// backwards (state rebuilt from the start) drops them all. A failed apply
// halts the group, so a dropped batch's changes never matter. Only Apply's
// goroutine touches it.
type dedupFilter struct {
	seed   maphash.Seed
	queues map[uint64]*queueKeys // nil: too many to count, always look
}

// queueKeys is one queue's counts.
type queueKeys struct {
	d map[uint64]uint32
	i map[int64]map[uint64]uint32 // by bucket start
}

func newDedupFilter() *dedupFilter {
	return &dedupFilter{seed: maphash.MakeSeed(), queues: map[uint64]*queueKeys{}}
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
	}
	s.dropHot()
}

func (f *dedupFilter) hash(key string) uint64 { return maphash.String(f.seed, key) }

// counted returns queue qid's counts, built at the first call; nil (and
// ok) when they cannot be used: no filter, a read-only view, or a queue
// with too many keys.
func (t *txn) counted(qid uint64) (*queueKeys, error) {
	f := t.s.dedup
	if f == nil || t.b == nil {
		return nil, nil
	}
	qk, ok := f.queues[qid]
	if !ok {
		var err error
		if qk, err = t.buildDedupCounts(qid); err != nil {
			return nil, err
		}
		f.queues[qid] = qk
	}
	return qk, nil
}

// dedupMayHold reports whether queue qid may have a 'd' record under key:
// false is certain. Outside Apply (no filter, or a read-only view) it is
// always true.
func (t *txn) dedupMayHold(qid uint64, key string) (bool, error) {
	qk, err := t.counted(qid)
	if qk == nil || err != nil {
		return err == nil, err
	}
	return qk.d[t.s.dedup.hash(key)] > 0, nil
}

// maxDedupBuild bounds the keys a build counts (it runs on the Raft loop:
// 1.5 M keys, five minutes of sends at 5,000/s, would hold the loop for
// about a second). A queue with more is not filtered until the store is
// created again; a queue that grows past it while counted stays counted.
// A variable for tests.
var maxDedupBuild = 1 << 18

// buildDedupCounts counts queue qid's 'd' and 'i' keys as the batch sees
// them; nil if there are more than maxDedupBuild.
func (t *txn) buildDedupCounts(qid uint64) (_ *queueKeys, err error) {
	qk := &queueKeys{d: map[uint64]uint32{}, i: map[int64]map[uint64]uint32{}}
	n := 0
	count := func(lo []byte, add func(k []byte) error) (ok bool, err error) {
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
			if n >= maxDedupBuild {
				return false, nil
			}
			n++
			t.s.keysRead.Add(1)
			if err := add(it.Key()); err != nil {
				return false, err
			}
		}
		return true, it.Error()
	}
	f := t.s.dedup
	ok, err := count(keys.DedupPrefix(t.s.shard, qid), func(k []byte) error {
		_, _, key, err := keys.DecodeDedup(k)
		qk.d[f.hash(key)]++
		return err
	})
	if err != nil || !ok {
		return nil, err
	}
	ok, err = count(keys.IdemPrefix(t.s.shard, qid), func(k []byte) error {
		_, _, b, key, err := keys.DecodeIdem(k)
		qk.addIdem(b, f.hash(idempotencyPrefix+key))
		return err
	})
	if err != nil || !ok {
		return nil, err
	}
	return qk, nil
}

func (qk *queueKeys) addIdem(bucket int64, h uint64) {
	m := qk.i[bucket]
	if m == nil {
		m = map[uint64]uint32{}
		qk.i[bucket] = m
	}
	m[h]++
}

// dedupAdded notes a new 'd' key of queue qid (one that was absent).
func (t *txn) dedupAdded(qid uint64, key string) {
	if f := t.s.dedup; f != nil {
		if qk := f.queues[qid]; qk != nil {
			qk.d[f.hash(key)]++
		}
	}
}

// dedupRemoved notes the delete of an existing 'd' key of queue qid.
func (t *txn) dedupRemoved(qid uint64, key string) {
	f := t.s.dedup
	if f == nil {
		return
	}
	qk := f.queues[qid]
	if qk == nil {
		return
	}
	h := f.hash(key)
	switch n := qk.d[h]; {
	case n > 1:
		qk.d[h] = n - 1
	case n == 1:
		delete(qk.d, h)
	default:
		// Not counted: the counts are wrong. Rebuild them at the next
		// lookup rather than answer a miss for a key that exists.
		delete(f.queues, qid)
	}
}

// idemAdded notes a new 'i' key of queue qid (key with its "i:" prefix)
// in the bucket that starts at bucket.
func (t *txn) idemAdded(qid uint64, key string, bucket int64) {
	if f := t.s.dedup; f != nil {
		if qk := f.queues[qid]; qk != nil {
			qk.addIdem(bucket, f.hash(key))
		}
	}
}

// idemDropped notes the range delete of queue qid's buckets that start
// before end.
func (t *txn) idemDropped(qid uint64, end int64) {
	if f := t.s.dedup; f != nil {
		if qk := f.queues[qid]; qk != nil {
			for b := range qk.i { // order does not matter: counts only
				if b < end {
					delete(qk.i, b)
				}
			}
		}
	}
}

// dedupDropped forgets queue qid's counts (the queue and its keys went).
func (t *txn) dedupDropped(qid uint64) {
	if f := t.s.dedup; f != nil {
		delete(f.queues, qid)
	}
}

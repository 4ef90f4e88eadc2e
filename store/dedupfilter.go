package store

import (
	"fmt"
	"hash/maphash"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumq/quorumq/internal/keys"
)

// dedupFilter counts, per queue, the short-lived record keys ('d':
// idempotency keys, deduplication ids, receive attempts) in the shard's
// state by a 64-bit hash of the key. A lookup whose hash has no count is a
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
// takes one (remember, rememberAttempt, expireDedup); dropping the queue
// drops its counts. A snapshot install (Restored) or an apply index that
// runs backwards (state rebuilt from the start) drops them all. A failed
// apply halts the group, so a dropped batch's changes never matter. Only
// Apply's goroutine touches it.
type dedupFilter struct {
	seed   maphash.Seed
	queues map[uint64]map[uint64]uint32
}

func newDedupFilter() *dedupFilter {
	return &dedupFilter{seed: maphash.MakeSeed(), queues: map[uint64]map[uint64]uint32{}}
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
		var err error
		if counts, err = t.buildDedupCounts(qid); err != nil {
			return false, err
		}
		f.queues[qid] = counts // nil: too many to count, always look
	}
	return counts == nil || counts[f.hash(key)] > 0, nil
}

// maxDedupBuild bounds the keys a build counts (it runs on the Raft loop:
// 1.5 M keys, five minutes of sends at 5,000/s, would hold the loop for
// about a second). A queue with more is not filtered until the store is
// created again; a queue that grows past it while counted stays counted.
// A variable for tests.
var maxDedupBuild = 1 << 18

// buildDedupCounts counts queue qid's 'd' keys as the batch sees them.
func (t *txn) buildDedupCounts(qid uint64) (counts map[uint64]uint32, err error) {
	lo := keys.DedupPrefix(t.s.shard, qid)
	it, err := t.r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: keys.PrefixEnd(lo)})
	if err != nil {
		return nil, fmt.Errorf("store: iterate %s: %w", keys.Pretty(lo), err)
	}
	defer func() {
		if cerr := it.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("store: iterator: %w", cerr)
		}
	}()
	counts = map[uint64]uint32{}
	for ok := it.First(); ok; ok = it.Next() {
		if len(counts) >= maxDedupBuild {
			return nil, nil
		}
		t.s.keysRead.Add(1)
		_, _, key, err := keys.DecodeDedup(it.Key())
		if err != nil {
			return nil, err
		}
		counts[t.s.dedup.hash(key)]++
	}
	return counts, it.Error()
}

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
	h := f.hash(key)
	switch n := counts[h]; {
	case n > 1:
		counts[h] = n - 1
	case n == 1:
		delete(counts, h)
	default:
		// Not counted: the counts are wrong. Rebuild them at the next
		// lookup rather than answer a miss for a key that exists.
		delete(f.queues, qid)
	}
}

// dedupDropped forgets queue qid's counts (the queue and its keys went).
func (t *txn) dedupDropped(qid uint64) {
	if f := t.s.dedup; f != nil {
		delete(f.queues, qid)
	}
}

package store

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumq/quorumq/internal/keys"
)

// hotKeys holds, for Apply, the values of keys that nearly every command
// reads and few write: queue catalog records (every command resolves its
// queue by name) and QueueOrder records (every send and receive reads one,
// and most queues have none). They sit in the deep levels of the LSM, so
// each was a Pebble Get through every level (a few percent of a node's
// CPU). Write-through: every set or delete of such a key in the apply
// batch updates the entry, a range delete drops them all, and so do a
// snapshot install and an apply index that runs backwards (as for
// dedupFilter). Values are copies; readers unmarshal them afresh, so no
// record is shared. Read-only views never use it (it holds the batch's
// uncommitted writes).
type hotKeys struct {
	catalog []byte // prefix of catalog keys
	queues  []byte // prefix of per-queue keys
	vals    map[string][]byte
}

// maxHotKeys bounds the cache: past it, it starts over.
const maxHotKeys = 1 << 16

func newHotKeys(shard uint64) *hotKeys {
	q := keys.QueuePrefix(shard, 0)
	return &hotKeys{catalog: keys.CatalogPrefix(shard), queues: q[:len(q)-8], vals: map[string][]byte{}}
}

// hot reports whether key is a catalog or QueueOrder key.
func (h *hotKeys) hot(key []byte) bool {
	if bytes.HasPrefix(key, h.catalog) {
		return true
	}
	n := len(h.queues) + 8
	return len(key) == n+2 && key[n] == 'w' && key[n+1] == 0 && bytes.HasPrefix(key, h.queues)
}

// put records key's value (present: a non-nil copy, even if empty) or
// its absence (nil).
func (h *hotKeys) put(key, v []byte, present bool) {
	if len(h.vals) >= maxHotKeys {
		clear(h.vals)
	}
	var c []byte
	if present {
		c = append(make([]byte, 0, len(v)), v...)
	}
	h.vals[string(key)] = c
}

// getHot is txn.get's path for hot keys: found, the value (nil when
// absent), and whether it answered. Read-only views go through viewHot.
func (t *txn) getHot(key []byte) (v []byte, found, answered bool, err error) {
	h := t.s.hot
	if h == nil || !h.hot(key) {
		return nil, false, false, nil
	}
	if t.b == nil {
		return t.s.views.get(key, t.gen, t.r)
	}
	if v, ok := h.vals[string(key)]; ok {
		return v, v != nil, true, nil
	}
	got, closer, err := t.r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		h.put(key, nil, false)
		return nil, false, true, nil
	}
	if err != nil {
		return nil, false, true, err
	}
	h.put(key, got, true)
	if err := closer.Close(); err != nil {
		return nil, false, true, err
	}
	return h.vals[string(key)], true, true, nil
}

// wroteHot keeps the cache in step with a set (present) or delete of key.
func (t *txn) wroteHot(key, v []byte, present bool) {
	if h := t.s.hot; h != nil && h.hot(key) {
		h.put(key, v, present)
		t.s.views.writing()
	}
}

// dropHot forgets every cached value (a range delete, a replaced state).
func (s *Store) dropHot() {
	if s.hot != nil {
		clear(s.hot.vals)
	}
	s.views.writing()
}

// viewHot caches the same hot keys for read-only views (Peek on every long
// poll, queue lookups of reads), which hotKeys cannot serve: it holds the
// apply batch's uncommitted writes. A long poll's Peek read the queue's
// catalog record and QueueOrder through every level of the LSM, where
// they sit because they are rarely written: 0.9 s of the 9.7 s of leader
// CPU in 15 s of a 5,000 msgs/s open-loop run.
//
// Validity is a generation counter, used like a seqlock: it is odd while
// an apply round that wrote a hot key is uncommitted (writing, from Apply
// on the Raft loop) and turns even again once the round is committed
// (committed, from AfterApply) — or at a snapshot install's end. A view
// reads the generation before and after taking its Pebble snapshot; only
// an even generation unchanged across both may use the cache, and only
// entries filled under that same generation, which hold what any snapshot
// taken under it reads. An entry is filled from a view's own read, and only
// if the generation was still the view's after that read.
type viewHot struct {
	gen  atomic.Uint64
	mu   sync.Mutex
	vals map[string]viewVal
}

type viewVal struct {
	gen uint64
	v   []byte // nil: absent
}

// noGen marks a view that may not use the cache (odd: never matches).
const noGen = 1

// begin returns the generation a view taken now may use, given the
// generation read before it was taken (noGen if a write came between).
func (c *viewHot) begin(before uint64) uint64 {
	if before&1 == 1 || c.gen.Load() != before {
		return noGen
	}
	return before
}

// writing marks hot-key writes under way (the generation odd).
func (c *viewHot) writing() {
	for {
		g := c.gen.Load()
		if g&1 == 1 || c.gen.CompareAndSwap(g, g+1) {
			return
		}
	}
}

// committed ends the writes under way (the generation even again).
func (c *viewHot) committed() {
	for {
		g := c.gen.Load()
		if g&1 == 0 || c.gen.CompareAndSwap(g, g+1) {
			return
		}
	}
}

// get answers key for a view taken under generation gen, reading r (the
// view's snapshot or the db) on a miss.
func (c *viewHot) get(key []byte, gen uint64, r pebble.Reader) (v []byte, found, answered bool, err error) {
	if gen&1 == 0 {
		c.mu.Lock()
		e, ok := c.vals[string(key)]
		c.mu.Unlock()
		if ok && e.gen == gen {
			return e.v, e.v != nil, true, nil
		}
	}
	got, closer, err := r.Get(key)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		got = nil
	case err != nil:
		return nil, false, true, err
	default:
		got = append(make([]byte, 0, len(got)), got...)
		if err := closer.Close(); err != nil {
			return nil, false, true, err
		}
	}
	if gen&1 == 0 && c.gen.Load() == gen {
		c.mu.Lock()
		if c.vals == nil || len(c.vals) >= maxHotKeys {
			c.vals = map[string]viewVal{}
		}
		c.vals[string(key)] = viewVal{gen: gen, v: got}
		c.mu.Unlock()
	}
	return got, got != nil, true, nil
}

package store

import (
	"bytes"
	"errors"

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

// getHot is txn.get's path for hot keys inside Apply: found, the value
// (nil when absent), and whether it answered.
func (t *txn) getHot(key []byte) (v []byte, found, answered bool, err error) {
	h := t.s.hot
	if h == nil || t.b == nil || !h.hot(key) {
		return nil, false, false, nil
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
	}
}

// dropHot forgets every cached value (a range delete, a replaced state).
func (s *Store) dropHot() {
	if s.hot != nil {
		clear(s.hot.vals)
	}
}

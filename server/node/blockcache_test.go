package node

import (
	"bytes"
	"fmt"
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestBlockCacheHoldsBlocks: with the memtables Pebble reserves from the
// cache, the DBs openDB opens still cache the blocks they read: a second
// read of flushed keys hits the cache (before, every read of an sstable
// block went to the file).
func TestBlockCacheHoldsBlocks(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run(fmt.Sprintf("state_without_wal=%v", split), func(t *testing.T) {
			n := &Node{}
			log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
			if err := n.openDB(Config{DataDir: t.TempDir(), CacheBytes: 8 << 20, StateWithoutWAL: split, Logger: log}); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if n.sdb != n.db {
					_ = n.sdb.Close()
				}
				_ = n.db.Close()
			}()
			// Memtables start small and double at each rotation: 160 MiB
			// written brings the mutable one and the one kept for reuse to
			// their full size, reserved from the cache as under load.
			big := bytes.Repeat([]byte("b"), 64<<10)
			for i := range 2560 {
				if err := n.sdb.Set(fmt.Appendf(nil, "b%06d", i), big, pebble.NoSync); err != nil {
					t.Fatal(err)
				}
			}
			if err := n.sdb.Flush(); err != nil {
				t.Fatal(err)
			}
			val := bytes.Repeat([]byte("v"), 100)
			for i := range 5_000 {
				if err := n.sdb.Set(fmt.Appendf(nil, "k%06d", i), val, pebble.NoSync); err != nil {
					t.Fatal(err)
				}
			}
			if err := n.sdb.Flush(); err != nil {
				t.Fatal(err)
			}
			read := func() {
				for i := range 5_000 {
					_, closer, err := n.sdb.Get(fmt.Appendf(nil, "k%06d", i))
					if err != nil {
						t.Fatal(err)
					}
					_ = closer.Close()
				}
			}
			read()
			before := n.sdb.Metrics().BlockCache
			read()
			after := n.sdb.Metrics().BlockCache
			if hits, misses := after.Hits-before.Hits, after.Misses-before.Misses; misses > hits/100 {
				t.Fatalf("second read: %d block cache hits, %d misses (cache holds %d bytes)", hits, misses, after.Size)
			}
		})
	}
}

package node

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestAPIMisuseCounted: a key set twice and then single-deleted, in the
// listener openDB installs, is counted by kind and logged as an error once
// a compaction meets the three.
func TestAPIMisuseCounted(t *testing.T) {
	var logs bytes.Buffer
	misuse := &apiMisuse{log: slog.New(slog.NewTextHandler(&logs, nil))}
	// No automatic compactions: the three stay in L0 until the manual
	// compaction takes them together.
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), EventListener: (&writeStalls{}).listener(misuse), DisableAutomaticCompactions: true,
		Logger: pebbleLogger{slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if misuse.total() != 0 {
		t.Fatalf("%d misuses before any write", misuse.total())
	}
	k := []byte("\x02\x00\x00\x00\x00\x00\x00\x00\x01\x10k")
	for _, op := range []func() error{
		func() error { return db.Set(k, []byte("1"), pebble.NoSync) },
		db.Flush,
		func() error { return db.Set(k, []byte("2"), pebble.NoSync) },
		db.Flush,
		func() error { return db.SingleDelete(k, pebble.NoSync) },
		db.Flush,
		func() error { return db.Compact(context.Background(), []byte{0}, []byte{0xff}, false) },
	} {
		if err := op(); err != nil {
			t.Fatal(err)
		}
	}
	if got := misuse.counts[pebble.NondeterministicSingleDelete].Load(); got != 1 || misuse.total() != 1 {
		t.Fatalf("nondeterministic single deletes counted: %d (all kinds %d), want 1", got, misuse.total())
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "kind=nondeterministic_single_delete") {
		t.Fatalf("log: %q", logs.String())
	}
}

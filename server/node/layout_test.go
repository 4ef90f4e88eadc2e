package node_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumq/quorumq/server/node"
)

// TestOldLayoutRefused: a data directory of the single-Pebble layout
// (pebble/ holding log and state, no raftlog/) is refused with a message
// saying what to do, and left as it was; a new directory gets both DBs.
func TestOldLayoutRefused(t *testing.T) {
	dir := t.TempDir()
	db, err := pebble.Open(filepath.Join(dir, "pebble"), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = node.Start(ctx, node.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "single-Pebble layout") || !strings.Contains(err.Error(), "remove the data directory") {
		t.Fatalf("old layout: want a refusal saying what to do, got %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "raftlog")); !os.IsNotExist(err) {
		t.Fatalf("the refused start created raftlog/: %v", err)
	}

	fresh := t.TempDir()
	n := startNode(t, node.Config{DataDir: fresh})
	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"raftlog", "pebble"} {
		if _, err := os.Stat(filepath.Join(fresh, sub)); err != nil {
			t.Fatalf("new data directory: %v", err)
		}
	}
}

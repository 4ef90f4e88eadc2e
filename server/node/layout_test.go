package node_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server/node"
)

// TestDataLayoutKept: a new data directory gets the layout
// StateWithoutWAL asks for (raftlog/ + pebble/, or pebble/ alone), and a
// directory keeps the layout it was created with when the setting
// changes: its messages are all there after each restart, and no instance
// of the other layout appears.
func TestDataLayoutKept(t *testing.T) {
	exists := func(dir, sub string) bool {
		_, err := os.Stat(filepath.Join(dir, sub))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return err == nil
	}
	for _, split := range []bool{false, true} {
		t.Run(fmt.Sprintf("created with state_without_wal=%v", split), func(t *testing.T) {
			dir := t.TempDir()
			ctx := testCtx(t)
			for i, want := range []bool{split, !split, split} {
				n := startNode(t, node.Config{DataDir: dir, StateWithoutWAL: want})
				c := qv1.NewQueueServiceClient(dial(t, n.GRPCAddr()))
				if i == 0 {
					if _, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "kept"}); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "kept", Body: fmt.Sprint(i)}); err != nil {
					t.Fatal(err)
				}
				q, err := c.GetQueue(ctx, &qv1.GetQueueRequest{Name: "kept"})
				if err != nil {
					t.Fatal(err)
				}
				if got := q.GetQueue().GetStats().GetVisible(); got != int64(i+1) {
					t.Fatalf("start %d: %d messages, want %d", i, got, i+1)
				}
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err = n.Stop(sctx)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				if !exists(dir, "pebble") || exists(dir, "raftlog") != split {
					t.Fatalf("start %d (state_without_wal=%v): pebble/ %v, raftlog/ %v; created split=%v",
						i, want, exists(dir, "pebble"), exists(dir, "raftlog"), split)
				}
			}
		})
	}
}

package raftnode

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestSnapshotPacer: chunks go no faster than the rate (the first at
// once), an unlimited pacer never waits, and a cancelled context ends a
// wait.
func TestSnapshotPacer(t *testing.T) {
	ctx := context.Background()
	p := &snapshotPacer{rate: 10 << 20} // 10 MiB/s
	start := time.Now()
	for range 5 {
		if err := p.wait(ctx, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	// 5 chunks of 1 MiB: the last may start once 4 are paid for (400 ms).
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("5 MiB at 10 MiB/s went in %v, want at least 400ms", d)
	}
	var unlimited *snapshotPacer
	if err := unlimited.wait(ctx, 1<<30); err != nil {
		t.Fatal(err)
	}
	if err := (&snapshotPacer{}).wait(ctx, 1<<30); err != nil {
		t.Fatal(err)
	}
	slow := &snapshotPacer{rate: 1} // 1 byte/s: the second chunk waits 1 GiB s
	if err := slow.wait(ctx, 1<<30); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := slow.wait(cctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait after cancel: %v, want context.Canceled", err)
	}
}

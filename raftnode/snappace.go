package raftnode

import (
	"context"
	"sync"
	"time"
)

// snapshotPacer spreads the snapshot data a host sends over time, at most
// rate bytes a second over all its streams: a replica copy (a move, a
// new learner) then leaves most of the disk and network to foreground
// traffic (issue 17: moves keep foreground latency within 2x of idle).
// A chunk waits for the chunks before it to be paid for, so the first
// chunk of an idle pacer goes at once.
type snapshotPacer struct {
	rate float64 // bytes per second; <= 0: unlimited

	mu   sync.Mutex
	next time.Time // when the bytes reserved so far are paid for
}

// wait blocks until n more bytes may go, or ctx ends.
func (p *snapshotPacer) wait(ctx context.Context, n int) error {
	if p == nil || p.rate <= 0 {
		return nil
	}
	p.mu.Lock()
	start := time.Now()
	if p.next.After(start) {
		start = p.next
	}
	p.next = start.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	p.mu.Unlock()
	d := time.Until(start)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

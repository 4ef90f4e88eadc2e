package shardserver

import (
	"testing"
	"time"
)

// A coordinator that lost its leadership (or whose term changed) forgets
// its groups and wakes their held heartbeats, which then answer NOT_LEADER
// instead of holding members until their waits end; while it leads in the
// same term it keeps them.
func TestCoordinatorAbandonWakesHeldHeartbeats(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name     string
		term     uint64
		leader   bool
		abandons bool
	}{
		{"same term, leader", 3, true, false},
		{"leadership lost", 3, false, true},
		{"new term", 4, true, true},
	} {
		c := &coordinator{}
		g, err := c.group(3, "t\x00topic\x00g", now)
		if err != nil {
			t.Fatal(err)
		}
		g.mu.Lock()
		g.reset(1, 2)
		held := g.changed
		g.mu.Unlock()
		c.abandon(tc.term, tc.leader)
		woken := false
		select {
		case <-held:
			woken = true
		default:
		}
		if woken != tc.abandons || c.current("t\x00topic\x00g", g) == tc.abandons {
			t.Errorf("%s: held heartbeat woken %v, group kept %v; want woken and forgotten: %v", tc.name, woken, c.current("t\x00topic\x00g", g), tc.abandons)
		}
	}
}

package raftnode

import "testing"

// TestHealthyMembersStayActive: a leader's status shows a member that
// answers every heartbeat as active at every tick, including the one
// right after raft's CheckQuorum clears its RecentActive flags (which
// callers such as AddShards' placement read as "down").
func TestHealthyMembersStayActive(t *testing.T) {
	c := newManualCluster(t, []uint64{1, 2, 3}, 1, nil)
	c.elect(1)
	leader := c.hosts[1]
	for i := range 3 * leader.cfg.ElectionTicks {
		for _, id := range c.ids {
			c.hosts[id].tick(uint64(i + 1))
		}
		c.round(1) // the leader's status after the tick, before any answer
		for _, p := range c.status(1).Peers {
			if p.ID != 1 && !p.RecentActive {
				t.Fatalf("tick %d: member %d shown inactive: %+v", i+1, p.ID, c.status(1).Peers)
			}
		}
		c.settle()
	}
	// A member that stops answering is shown inactive within two election
	// timeouts.
	c.net.Detach(3)
	inactive := false
	for i := range 2 * leader.cfg.ElectionTicks {
		for _, id := range []uint64{1, 2} {
			c.hosts[id].tick(uint64(100 + i))
		}
		c.settle()
		for _, p := range c.status(1).Peers {
			if p.ID == 3 && !p.RecentActive {
				inactive = true
			}
		}
	}
	if !inactive {
		t.Fatalf("member 3, cut off, still shown active: %+v", c.status(1).Peers)
	}
}

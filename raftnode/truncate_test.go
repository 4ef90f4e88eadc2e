package raftnode

import (
	"fmt"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/tracker"
)

// TestTruncationIsPrompt: with the default LogRetain, every replica's log
// shrinks to about LogRetain entries within a few ticks of the proposals
// being applied, so entries die in Pebble's memtable.
func TestTruncationIsPrompt(t *testing.T) {
	const g = 1
	c := newCluster(t, 3, 0, g)
	lead := c.leader(g)
	for i := range 4 {
		checkResults(t, proposeAll(t, lead.host, g, fmt.Sprint(i), 300))
	}
	c.converged(g)
	retain := lead.host.cfg.LogRetain
	checkFor(t, 10*time.Second, func() error {
		for id, n := range c.nodes {
			st, err := n.host.Status(g)
			if err != nil {
				return err
			}
			// LogRetain behind the applied index, plus the entries of one
			// truncation step and the truncation entry itself.
			if held := st.LastIndex - st.FirstIndex + 1; held > retain+retain/4+2 {
				return fmt.Errorf("node %d holds %d entries (first %d, last %d), want at most %d",
					id, held, st.FirstIndex, st.LastIndex, retain+retain/4+2)
			}
		}
		return nil
	})
}

// TestTruncateTarget: what pins the log and what does not.
func TestTruncateTarget(t *testing.T) {
	const self, applied, retain, lag = 1, 10000, 100, 1000
	type peer struct {
		id uint64
		pr tracker.Progress
	}
	cases := []struct {
		name  string
		peers []peer
		want  uint64
	}{
		{"caught up", []peer{{2, tracker.Progress{Match: applied, RecentActive: true, State: tracker.StateReplicate}}}, applied - retain},
		{"slow active follower pins", []peer{{2, tracker.Progress{Match: 9500, RecentActive: true, State: tracker.StateReplicate}}}, 9500},
		{"inactive follower does not", []peer{{2, tracker.Progress{Match: 9500, State: tracker.StateReplicate}}}, applied - retain},
		{"far behind does not", []peer{{2, tracker.Progress{Match: 8000, RecentActive: true, State: tracker.StateProbe}}}, applied - retain},
		{"snapshot in flight pins its index", []peer{{2, tracker.Progress{Match: 10, PendingSnapshot: 9700, RecentActive: true, State: tracker.StateSnapshot}}}, 9700},
		{"old snapshot in flight does not", []peer{{2, tracker.Progress{Match: 10, PendingSnapshot: 5000, RecentActive: true, State: tracker.StateSnapshot}}}, applied - retain},
		{"self ignored", []peer{{1, tracker.Progress{Match: 5, RecentActive: true}}}, applied - retain},
		{"slowest wins", []peer{
			{2, tracker.Progress{Match: 9800, RecentActive: true, State: tracker.StateReplicate}},
			{3, tracker.Progress{Match: 9600, RecentActive: true, State: tracker.StateReplicate}},
		}, 9600},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			progress := func(fn func(uint64, raft.ProgressType, tracker.Progress)) {
				for _, p := range tc.peers {
					fn(p.id, raft.ProgressTypePeer, p.pr)
				}
			}
			if got := truncateTarget(self, applied, retain, lag, progress); got != tc.want {
				t.Fatalf("target %d, want %d", got, tc.want)
			}
		})
	}
}

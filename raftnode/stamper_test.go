package raftnode

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// stampSM is a testSM that stamps each payload's first 4 bytes with the
// count of Stamp calls, the way a state machine stamps time.
type stampSM struct {
	*testSM
	n int
}

func (s *stampSM) Stamp(data []byte) {
	s.n++
	copy(data, fmt.Sprintf("%04d", s.n))
}

// TestStampFollowsLogOrder: the leader stamps proposals as raft appends
// them, so a consume proposal that overtakes queued default ones (its own
// share of the round) gets the first stamp, and every entry's stamp is in
// log order; the stamped bytes are what every replica applies.
func TestStampFollowsLogOrder(t *testing.T) {
	fs := vfs.NewMem()
	db := openDB(t, fs)
	net := NewMemNetwork()
	h, err := NewHost(Config{NodeID: 1, DB: db, Transport: net.Transport(1), Logger: testLogger(t), SnapshotFS: fs, SnapshotDir: "snapshots"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Stop()
		_ = db.Close()
	})
	sm := &stampSM{testSM: &testSM{group: 1}}
	if err := h.AddGroup(1, []uint64{1}, sm); err != nil {
		t.Fatal(err)
	}
	net.Attach(1, h)
	c := &manualCluster{t: t, net: net, ids: []uint64{1}, hosts: map[uint64]*Host{1: h}, group: 1}
	c.elect(1)
	var outs []<-chan proposeOutcome
	for i := range 5 {
		outs = append(outs, c.proposeAsync(1, fmt.Appendf(nil, "xxxx-send-%d", i)))
	}
	consume := make(chan proposeOutcome, 1)
	go func() {
		v, err := h.Propose(WithClass(context.Background(), ClassConsume), 1, []byte("xxxx-consume"))
		consume <- proposeOutcome{v, err}
	}()
	checkFor(t, 10*time.Second, func() error {
		if h.Proposals() < 6 {
			return fmt.Errorf("%d proposals queued", h.Proposals())
		}
		return nil
	})
	c.settle()
	for _, o := range outs {
		if r := waitOutcome(t, o); r.err != nil {
			t.Fatal(r.err)
		}
	}
	if r := waitOutcome(t, consume); r.err != nil {
		t.Fatal(r.err)
	}
	got := sm.results()
	var applied []string
	for _, r := range got {
		if len(r.Data) > 4 {
			applied = append(applied, r.Data)
		}
	}
	want := []string{"0001-consume", "0002-send-0", "0003-send-1", "0004-send-2", "0005-send-3", "0006-send-4"}
	if fmt.Sprint(applied) != fmt.Sprint(want) {
		t.Fatalf("applied %q, want %q", applied, want)
	}
}

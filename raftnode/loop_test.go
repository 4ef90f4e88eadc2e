package raftnode

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// manualCluster is a cluster of hosts whose loops do not run: the test runs
// their rounds itself, one host at a time, so the interleaving of messages
// is exact. No ticks happen (no heartbeats, no elections by timeout).
type manualCluster struct {
	t     *testing.T
	net   *MemNetwork
	ids   []uint64
	hosts map[uint64]*Host
	group uint64
}

func newManualCluster(t *testing.T, ids []uint64, group uint64, tweak func(*Config)) *manualCluster {
	t.Helper()
	c := &manualCluster{t: t, net: NewMemNetwork(), ids: ids, hosts: make(map[uint64]*Host), group: group}
	for _, id := range ids {
		fs := vfs.NewMem()
		db := openDB(t, fs)
		cfg := Config{
			NodeID: id, DB: db, Transport: c.net.Transport(id), Logger: testLogger(t),
			SnapshotFS: fs, SnapshotDir: "snapshots",
		}
		if tweak != nil {
			tweak(&cfg)
		}
		h, err := NewHost(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			h.Stop()
			_ = db.Close()
		})
		if err := h.AddGroup(group, ids, &testSM{group: group}); err != nil {
			t.Fatal(err)
		}
		c.net.Attach(id, h)
		c.hosts[id] = h
	}
	return c
}

// round runs one round on each of the given hosts, in order.
func (c *manualCluster) round(ids ...uint64) {
	for _, id := range ids {
		c.hosts[id].round()
	}
}

// settle runs rounds on every host until none has anything left to do.
func (c *manualCluster) settle() {
	c.t.Helper()
	for range 200 {
		before, _ := c.net.Counts()
		more := false
		for _, id := range c.ids {
			if c.hosts[id].round() {
				more = true
			}
		}
		if after, _ := c.net.Counts(); !more && after == before {
			return
		}
	}
	c.t.Fatal("cluster did not settle in 200 passes")
}

// elect makes id the leader (a campaign, not a timeout) and lets every
// member apply the new leader's empty entry.
func (c *manualCluster) elect(id uint64) GroupStatus {
	c.t.Helper()
	c.settle() // apply the bootstrap conf changes: raft campaigns only then
	if err := c.hosts[id].groups[c.group].rn.Campaign(); err != nil {
		c.t.Fatal(err)
	}
	c.settle()
	st := c.status(id)
	if !st.IsLeader {
		c.t.Fatalf("node %d did not become leader: %+v", id, st)
	}
	for _, other := range c.ids {
		if o := c.status(other); o.Applied != st.LastIndex {
			c.t.Fatalf("node %d applied %d, leader's last index %d", other, o.Applied, st.LastIndex)
		}
	}
	return st
}

func (c *manualCluster) status(id uint64) GroupStatus {
	c.t.Helper()
	st, err := c.hosts[id].Status(c.group)
	if err != nil {
		c.t.Fatal(err)
	}
	return st
}

type proposeOutcome struct {
	v   any
	err error
}

// proposeAsync starts a proposal on node id and waits until it is queued
// (so proposals started one after another queue in that order).
func (c *manualCluster) proposeAsync(id uint64, data []byte) <-chan proposeOutcome {
	c.t.Helper()
	h := c.hosts[id]
	before := h.Proposals()
	out := make(chan proposeOutcome, 1)
	go func() {
		v, err := h.Propose(context.Background(), c.group, data)
		out <- proposeOutcome{v, err}
	}()
	checkFor(c.t, 10*time.Second, func() error {
		if h.Proposals() == before {
			return errors.New("proposal not queued yet")
		}
		return nil
	})
	return out
}

func waitOutcome(t *testing.T, ch <-chan proposeOutcome) proposeOutcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no proposal result after 10s")
		return proposeOutcome{}
	}
}

// An entry applied in the round in which the leader learns of a new term
// has a definite result: its proposer gets it, not ErrLeadershipLost.
// Here the followers' acks (which commit the entry) and a higher-term vote
// request (a leadership transfer to node 2) reach node 1 in the same round.
func TestAppliedResultSurvivesTermChangeInSameRound(t *testing.T) {
	c := newManualCluster(t, []uint64{1, 2, 3}, 1, nil)
	lead := c.elect(1)

	res := c.proposeAsync(1, []byte("x"))
	c.round(1)    // append; MsgApp to 2 and 3
	c.round(2, 3) // both append and ack; the acks wait in node 1's inbox
	if st := c.status(1); st.LastIndex != lead.LastIndex+1 || st.Commit != lead.LastIndex {
		t.Fatalf("leader status %+v: want the entry appended at %d, not committed", st, lead.LastIndex+1)
	}
	// Node 2 takes over, as TransferLeadership makes it: its vote request
	// (term+1) reaches node 1 behind the acks.
	timeout := &pb.Message{Type: pb.MsgTimeoutNow.Enum(), From: proto.Uint64(1), To: proto.Uint64(2), Term: proto.Uint64(lead.Term)}
	if err := c.hosts[2].Step(context.Background(), 1, timeout); err != nil {
		t.Fatal(err)
	}
	c.round(2)
	// One round on node 1: the acks commit the entry, the vote request ends
	// node 1's leadership; the entry is applied in that round.
	c.round(1)
	st := c.status(1)
	if st.IsLeader || st.Term != lead.Term+1 || st.Applied != lead.LastIndex+1 {
		t.Fatalf("node 1 status %+v: want a follower in term %d that applied %d", st, lead.Term+1, lead.LastIndex+1)
	}
	o := waitOutcome(t, res)
	if o.err != nil {
		t.Fatalf("proposal applied at %d returned %v, want its result", lead.LastIndex+1, o.err)
	}
	if r := o.v.(applyResult); r.Data != "x" || r.Index != lead.LastIndex+1 {
		t.Fatalf("result %+v, want x at %d", r, lead.LastIndex+1)
	}
	// The new leader keeps the entry: it is applied once everywhere.
	c.settle()
	for _, id := range c.ids {
		sm := c.hosts[id].groups[1].sm.(*testSM)
		if got := slices.IndexFunc(sm.results(), func(r applyResult) bool { return r.Data == "x" }); got < 0 {
			t.Fatalf("node %d never applied the entry", id)
		}
	}
}

// A leader whose uncommitted log tail reaches Config.MaxUncommittedBytes
// refuses further proposals with ErrOverloaded (which is also an
// ErrProposalDropped) at once; within a round, the proposals before the
// limit still go in.
func TestUncommittedTailBoundedInBytes(t *testing.T) {
	const limit = 1536 << 10
	c := newManualCluster(t, []uint64{1, 2, 3}, 1, func(cfg *Config) { cfg.MaxUncommittedBytes = limit })
	lead := c.elect(1)
	// The followers are gone: nothing commits from here on.
	c.net.Detach(2)
	c.net.Detach(3)

	big := bytes.Repeat([]byte{'b'}, 600<<10)
	// Three in one round, one MsgProp each (two do not fit in one chunk):
	// the first two fit under the limit, the third does not. Before the
	// chunking, raft admitted the whole batch into an empty tail.
	var outs []<-chan proposeOutcome
	for range 3 {
		outs = append(outs, c.proposeAsync(1, big))
	}
	c.round(1)
	if o := waitOutcome(t, outs[2]); !errors.Is(o.err, ErrOverloaded) || !errors.Is(o.err, ErrProposalDropped) {
		t.Fatalf("third proposal: %v, want ErrOverloaded", o.err)
	}
	if st := c.status(1); st.LastIndex != lead.LastIndex+2 {
		t.Fatalf("last index %d, want %d (two proposals appended)", st.LastIndex, lead.LastIndex+2)
	}
	// A small one is refused too while the tail is full.
	o := waitOutcome(t, func() <-chan proposeOutcome {
		ch := c.proposeAsync(1, bytes.Repeat([]byte{'s'}, 400<<10))
		c.round(1)
		return ch
	}())
	if !errors.Is(o.err, ErrOverloaded) {
		t.Fatalf("proposal into a full tail: %v, want ErrOverloaded", o.err)
	}
	if st := c.status(1); !st.IsLeader || st.LastIndex != lead.LastIndex+2 {
		t.Fatalf("status %+v: want the leader with last index %d", st, lead.LastIndex+2)
	}
}

// While a leadership transfer is pending raft drops proposals too: that is
// ErrProposalDropped (retry at the next leader), not ErrOverloaded.
func TestProposalDuringTransferIsDroppedNotOverloaded(t *testing.T) {
	c := newManualCluster(t, []uint64{1, 2, 3}, 1, nil)
	c.elect(1)
	// Node 2 falls behind, so a transfer to it waits for it to catch up.
	c.net.Detach(2)
	res := c.proposeAsync(1, []byte("behind"))
	c.round(1, 3, 1)
	if o := waitOutcome(t, res); o.err != nil {
		t.Fatal(o.err)
	}
	if err := c.hosts[1].groups[1].enqueueTransfer(2); err != nil {
		t.Fatal(err)
	}
	c.round(1)
	o := waitOutcome(t, func() <-chan proposeOutcome {
		ch := c.proposeAsync(1, []byte("during"))
		c.round(1)
		return ch
	}())
	if !errors.Is(o.err, ErrProposalDropped) || errors.Is(o.err, ErrOverloaded) {
		t.Fatalf("proposal during a transfer: %v, want ErrProposalDropped, not ErrOverloaded", o.err)
	}
}

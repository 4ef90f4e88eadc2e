package store

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// shardTime is the shard's applied time.
func (h *harness) shardTime() int64 {
	h.t.Helper()
	v, closer, err := h.db.Get(keys.ShardMeta(h.s.shard))
	if err != nil {
		h.t.Fatal(err)
	}
	defer closer.Close()
	sm := &storepb.ShardMeta{}
	if err := proto.Unmarshal(v, sm); err != nil {
		h.t.Fatal(err)
	}
	return sm.LastTimeMs
}

// TestClockSkewDoesNotFreezeTime: a leader whose clock runs 10 minutes
// ahead applies some commands and steps down; the new leader's clock is
// right. Time never runs backwards, but it does not stand still until the
// new clock catches up either: it keeps moving (at half the new leader's
// rate) and meets the true time within twice the skew. A message leased for
// 30 s by the new leader comes back within a minute, not after 10.
func TestClockSkewDoesNotFreezeTime(t *testing.T) {
	h := newHarness(t)
	h.now = 1_000_000
	h.run("create q=a vis=30s")
	const skew = 10 * 60_000
	real := h.now
	for range 5 { // the skewed leader
		real += 1000
		h.now = real + skew
		h.run("send q=a body=x")
	}
	if got := h.shardTime(); got != real+skew {
		t.Fatalf("time %d, want the skewed leader's %d", got, real+skew)
	}
	// The new leader (true clock) receives with a 30 s lease, then keeps
	// proposing once a second.
	real += 1000
	h.now = real
	r := h.apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: "t", Queue: "a", MaxMessages: 1, VisibilityTimeoutMs: 30_000}}})
	if len(r.Received) != 1 {
		t.Fatalf("received %d", len(r.Received))
	}
	prev, back := h.shardTime(), int64(0)
	for i := 1; i <= 2*skew/1000+5; i++ {
		real += 1000
		h.now = real
		r := h.apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: "t", Queue: "a", MaxMessages: 10, VisibilityTimeoutMs: 0}}})
		now := h.shardTime()
		if now < prev || (i > 1 && now == prev && now != h.now) {
			t.Fatalf("command %d (stamp %d): time %d after %d: it must move forward", i, h.now, now, prev)
		}
		prev = now
		for _, m := range r.Received {
			if m.Message.ReceiveCount == 2 && back == 0 {
				back = int64(i)
			}
		}
	}
	if back == 0 || back > 62 {
		t.Fatalf("the 30 s lease ended after %d s of the new leader's time, want about 60", back)
	}
	if prev != real {
		t.Fatalf("time %d did not meet the true clock %d within twice the skew", prev, real)
	}
}

// TestClockJumpBounded: one command stamped a year ahead moves time by at
// most MaxClockJumpMs, so it cannot expire every message at once; the
// commands after it, stamped right, keep time moving.
func TestClockJumpBounded(t *testing.T) {
	h := newHarness(t)
	h.now = 1_000_000
	h.run("create q=a retention=96h")
	h.run("send q=a body=x")
	h.now += 365 * 24 * 3600 * 1000
	h.apply(&storepb.Command{Op: &storepb.Command_Tick{Tick: &storepb.Tick{}}})
	if got := h.shardTime(); got != 1_000_000+MaxClockJumpMs {
		t.Fatalf("time %d after a year-ahead stamp, want %d", got, 1_000_000+MaxClockJumpMs)
	}
	if info, _ := h.s.GetQueue("t", "a", h.shardTime()); info.Stats.Messages != 1 {
		t.Fatalf("the jump expired the message (retention 96h): %+v", info.Stats)
	}
	prev := h.shardTime()
	h.now = 1_001_000
	for i := range 3 {
		h.now += 1000
		h.run("send q=a body=y")
		if now := h.shardTime(); (i > 0 && now <= prev) || now < prev {
			t.Fatalf("command %d: time %d after %d", i, now, prev)
		}
		prev = h.shardTime()
	}
}

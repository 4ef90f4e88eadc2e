package store

import (
	"errors"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// TestInvalidCommandsWriteNothing: a command of another version, without an
// op, or not decoding is an outcome (ErrInvalidCommand), not an apply error,
// and it leaves the state untouched (not even the shard time).
func TestInvalidCommandsWriteNothing(t *testing.T) {
	h := newHarness(t)
	tick := &storepb.Command_Tick{Tick: &storepb.Tick{}}
	for _, c := range []*storepb.Command{
		{Version: 2, TimeMs: 5, Op: tick},
		{Version: 0, TimeMs: 5, Op: tick},
		{Version: CommandVersion, TimeMs: 5},
	} {
		data, _ := proto.Marshal(c)
		b := h.db.NewIndexedBatch()
		r, err := h.s.Apply(b, 1, data)
		if err != nil || !errors.Is(r.(*Result).Err, ErrInvalidCommand) {
			t.Errorf("%v: %v %v", c, r, err)
		}
		if !b.Empty() {
			t.Errorf("%v: wrote %d bytes", c, b.Len())
		}
		b.Close()
	}
}

// TestTimeNeverRunsBackwards: a command stamped before the last applied time
// applies at the last applied time, across batches (it is persisted).
func TestTimeNeverRunsBackwards(t *testing.T) {
	h := newHarness(t)
	h.run("create q=a now=100s")
	h.now = 10_000
	r := h.apply(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: "t", Queue: "a",
		Entries: []*storepb.SendEntry{{Body: "x", DelayMs: 5000}}}}})
	if r.Sent[0].Err != nil {
		t.Fatal(r.Sent[0].Err)
	}
	if ready, next, err := h.s.Peek("t", "a", nil, 100_000, math.MaxInt64); err != nil || ready || next != 105_000 {
		t.Errorf("peek = %v %d %v, want a message due at 105s", ready, next, err)
	}
}

// TestPeekHorizon: Peek looks for a message coming due only up to untilMs;
// for a lease ending later it answers "look again after untilMs", one
// ending within it is reported, a visible message is ready whatever the
// bound, and an empty queue has nothing coming (0: wait for a wake).
func TestPeekHorizon(t *testing.T) {
	h := newHarness(t)
	h.run("create q=a now=100s")
	h.now = 100_000
	r := h.apply(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: "t", Queue: "a",
		Entries: []*storepb.SendEntry{{Body: "x", DelayMs: 5000}}}}})
	if r.Sent[0].Err != nil {
		t.Fatal(r.Sent[0].Err)
	}
	for _, c := range []struct {
		now, until, next int64
		ready            bool
	}{
		{100_000, 101_000, 101_001, false}, // due at 105 s, beyond the horizon: look again after it
		{100_000, 104_999, 105_000, false}, // just beyond
		{100_000, 105_000, 105_000, false}, // at the horizon: reported
		{100_000, 90_000, 100_001, false},  // a bound before now reads as now
		{105_000, 105_000, 0, true},        // visible
	} {
		ready, next, err := h.s.Peek("t", "a", nil, c.now, c.until)
		if err != nil || ready != c.ready || next != c.next {
			t.Errorf("Peek(now %d, until %d) = %v %d %v, want %v %d", c.now, c.until, ready, next, err, c.ready, c.next)
		}
	}
	h.run("create q=empty")
	if ready, next, err := h.s.Peek("t", "empty", nil, 100_000, 101_000); err != nil || ready || next != 0 {
		t.Errorf("Peek(empty queue) = %v %d %v, want nothing coming (0)", ready, next, err)
	}
}

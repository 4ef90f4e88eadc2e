package store

import (
	"errors"
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
	if ready, next, err := h.s.Peek("t", "a", nil, 100_000); err != nil || ready || next != 105_000 {
		t.Errorf("peek = %v %d %v, want a message due at 105s", ready, next, err)
	}
}

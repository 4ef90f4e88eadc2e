package store

import (
	"errors"
	"slices"
	"strings"
	"testing"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

func bodies(ms []*storepb.MessageRecord) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Body)
	}
	return out
}

// TestBrowseStatesAndChangesNothing: a browse tells visible, in-flight and
// delayed messages apart from the records alone, filters by state, tag,
// attribute and age, and leaves the state byte-identical.
func TestBrowseStatesAndChangesNothing(t *testing.T) {
	h := newHarness(t)
	h.run("create q=a vis=30s")
	h.run("send q=a body=m1,m2 tags=red now=0s")
	h.run("send q=a body=m3 attrs=k:v now=1s")
	h.run("send q=a body=m4 delay=60s now=2s")
	h.run("receive q=a max=1 now=3s") // m1 in flight until 33s
	before := dumpState(t, h.db, 1)
	keysBefore := h.s.KeysRead()

	now := int64(4_000)
	all, next, err := h.s.Browse("t", "a", BrowseFilter{}, 0, 10, 0, now)
	if err != nil || next != 0 {
		t.Fatalf("browse: %v next %d", err, next)
	}
	if got := bodies(all); !slices.Equal(got, []string{"m1", "m2", "m3", "m4"}) {
		t.Fatalf("browse = %v", got)
	}
	wantStates := []MessageState{StateInFlight, StateVisible, StateVisible, StateDelayed}
	for i, m := range all {
		if st := StateOf(m, now); st != wantStates[i] {
			t.Errorf("%s: state %d, want %d", m.Body, st, wantStates[i])
		}
	}
	if all[0].ReceiveCount != 1 || all[0].VisibleAtMs != 33_000 {
		t.Errorf("in-flight m1: rc %d visible_at %d", all[0].ReceiveCount, all[0].VisibleAtMs)
	}
	for _, c := range []struct {
		f    BrowseFilter
		want []string
	}{
		{BrowseFilter{States: []MessageState{StateInFlight}}, []string{"m1"}},
		{BrowseFilter{States: []MessageState{StateDelayed, StateVisible}}, []string{"m2", "m3", "m4"}},
		{BrowseFilter{Tags: &storepb.TagFilter{All: []string{"red"}}}, []string{"m1", "m2"}},
		{BrowseFilter{Tags: &storepb.TagFilter{None: []string{"red"}}}, []string{"m3", "m4"}},
		{BrowseFilter{AttrKey: "k", AttrValue: "v"}, []string{"m3"}},
		{BrowseFilter{AttrKey: "k", AttrValue: "w"}, nil},
		{BrowseFilter{MinAgeMs: 3_000}, []string{"m1", "m2", "m3"}},
	} {
		got, _, err := h.s.Browse("t", "a", c.f, 0, 10, 0, now)
		if err != nil || !slices.Equal(bodies(got), c.want) {
			t.Errorf("browse %+v = %v %v, want %v", c.f, bodies(got), err, c.want)
		}
	}
	if m, err := h.s.GetMessage("t", "a", all[2].Id, now); err != nil || m == nil || m.Body != "m3" {
		t.Errorf("get m3 = %v %v", m, err)
	}
	if m, err := h.s.GetMessage("t", "a", "not-an-id", now); err != nil || m != nil {
		t.Errorf("get of a bad id = %v %v, want nil", m, err)
	}
	if _, _, err := h.s.Browse("t", "nope", BrowseFilter{}, 0, 10, 0, now); !errors.Is(err, ErrQueueNotFound) {
		t.Errorf("browse of a missing queue: %v", err)
	}
	if after := dumpState(t, h.db, 1); !slices.Equal(before, after) {
		t.Errorf("browse changed the state")
	}
	if h.s.KeysRead() == keysBefore {
		t.Errorf("reads not counted")
	}
	// The lease is untouched: m1 is still the one in flight, and the
	// next receive gets m2.
	if out := h.run("receive q=a max=1 now=5s"); !strings.Contains(out, "body=m2") {
		t.Errorf("receive after browse = %q, want m2", out)
	}
}

// TestBrowsePagesAndScanBound: pages resume at the seq they hand back, and
// a filter that matches nothing stops after the scan budget with a token
// to go on (an empty page), then finishes.
func TestBrowsePagesAndScanBound(t *testing.T) {
	h := newHarness(t)
	h.run("create q=a")
	h.run("send q=a body=a1,a2,a3,a4,a5 now=0s")
	h.run("send q=a body=b1 tags=blue now=1s")
	now := int64(2_000)
	var got []string
	from, pages := uint64(0), 0
	for {
		ms, next, err := h.s.Browse("t", "a", BrowseFilter{}, from, 2, 0, now)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		got = append(got, bodies(ms)...)
		if next == 0 {
			break
		}
		if len(ms) != 2 {
			t.Fatalf("a short page (%d) with a next token, without a filter", len(ms))
		}
		from = next
	}
	if !slices.Equal(got, []string{"a1", "a2", "a3", "a4", "a5", "b1"}) || pages != 3 {
		t.Fatalf("pages: %v in %d pages", got, pages)
	}
	// Budget 4: the filter for blue passes a1..a4 without a match.
	f := BrowseFilter{Tags: &storepb.TagFilter{All: []string{"blue"}}}
	ms, next, err := h.s.Browse("t", "a", f, 0, 10, 4, now)
	if err != nil || len(ms) != 0 || next != 5 {
		t.Fatalf("bounded browse = %v next %d %v, want empty page resuming at seq 5", bodies(ms), next, err)
	}
	ms, next, err = h.s.Browse("t", "a", f, next, 10, 4, now)
	if err != nil || !slices.Equal(bodies(ms), []string{"b1"}) || next != 0 {
		t.Fatalf("resumed browse = %v next %d %v", bodies(ms), next, err)
	}
}

// TestGetMessageInDeadLetterQueue: a dead-lettered message keeps its id
// (which names the source queue's seq); GetMessage finds it in the DLQ by
// the fallback walk, with its dead-letter source, and no longer in the
// source queue.
func TestGetMessageInDeadLetterQueue(t *testing.T) {
	h := newHarness(t)
	h.run("create q=d")
	h.run("create q=a vis=10s dlq=d max=1")
	r := h.apply(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: "t", Queue: "a",
		Entries: []*storepb.SendEntry{{Body: "poison", DelayMs: -1}}}}})
	id := r.Sent[0].MessageID
	h.run("send q=d body=other now=0s") // takes seq 1 in d, the seq the id names
	h.run("receive q=a now=0s")
	h.run("receive q=a now=10s")
	h.run("relay")
	m, err := h.s.GetMessage("t", "d", id, 11_000)
	if err != nil || m == nil || m.Body != "poison" || m.DeadLetterSource != "a" {
		t.Fatalf("get in the DLQ = %v %v", m, err)
	}
	if m, err := h.s.GetMessage("t", "a", id, 11_000); err != nil || m != nil {
		t.Fatalf("get in the source after the move = %v %v, want nil", m, err)
	}
}

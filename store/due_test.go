package store

import (
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// sendReceiveDelete runs n send + receive + delete cycles on queue q.
func (h *harness) sendReceiveDelete(q string, n int) {
	h.t.Helper()
	for range n / 50 {
		h.now++
		entries := make([]*storepb.SendEntry, 50)
		for i := range entries {
			entries[i] = &storepb.SendEntry{Body: "x", DelayMs: -1}
		}
		h.apply(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: "t", Queue: q, Entries: entries}}})
		r := h.apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: "t", Queue: q, MaxMessages: 50, VisibilityTimeoutMs: -1}}})
		del := &storepb.Delete{Tenant: "t", Queue: q}
		for _, m := range r.Received {
			del.ReceiptHandles = append(del.ReceiptHandles, m.ReceiptHandle)
		}
		if d := h.apply(&storepb.Command{Op: &storepb.Command_Delete{Delete: del}}); len(d.Entries) != 50 {
			h.t.Fatalf("deleted %d of 50", len(d.Entries))
		}
	}
}

// readsOf returns the keys and internal points (tombstones included) read
// by fn.
func (h *harness) readsOf(fn func()) uint64 {
	before := h.s.KeysRead() + h.s.PointsRead()
	fn()
	return h.s.KeysRead() + h.s.PointsRead() - before
}

// TestTickWorkDoesNotGrowWithDeletes: NeedsTick and Depths (run every
// second on every leader / every scrape) and Tick read a bounded number of
// keys however many messages were sent and deleted before (they walked the
// deleted messages' tombstones from a low-water mark that only moved on
// expiry), and however many idle queues the shard has (Tick and NeedsTick
// loaded every queue record). Counted in keys read, not timed.
func TestTickWorkDoesNotGrowWithDeletes(t *testing.T) {
	h := newHarness(t)
	h.now = 1_000_000
	h.run("create q=busy")
	for _, q := range []string{"idle1", "idle2", "idle3", "idle4", "idle5", "idle6", "idle7", "idle8"} {
		h.run("create q=" + q)
	}
	h.sendReceiveDelete("busy", 100)
	h.run("send q=busy body=live") // one live message behind the tombstones
	h.now += 1000
	h.apply(&storepb.Command{Op: &storepb.Command_Tick{Tick: &storepb.Tick{}}})
	measure := func() (needsTick, depths uint64) {
		needsTick = h.readsOf(func() {
			if need, err := h.s.NeedsTick(h.now); err != nil || need {
				t.Fatalf("needs tick: %v %v", need, err)
			}
		})
		depths = h.readsOf(func() {
			err := h.s.Depths(h.now, 0, func(d QueueDepth) bool {
				if d.Queue == "busy" && (d.Stats.Messages != 1 || d.OldestEnqueuedMs == 0) {
					t.Fatalf("busy: %+v", d)
				}
				return true
			})
			if err != nil {
				t.Fatal(err)
			}
		})
		return needsTick, depths
	}
	n1, d1 := measure()
	h.sendReceiveDelete("busy", 20_000)
	n2, d2 := measure()
	t.Logf("keys read after 100 / 20,100 deleted: NeedsTick %d / %d, Depths %d / %d", n1, n2, d1, d2)
	if n2 > n1 || n2 > 10 {
		t.Errorf("NeedsTick read %d keys after 20,100 deletes (%d after 100), want the same few", n2, n1)
	}
	if d2 > d1 {
		t.Errorf("Depths read %d keys after 20,100 deletes, %d after 100: it grows with deleted messages", d2, d1)
	}
	// A Tick when only the busy queue has due work visits only it.
	h.run("update q=busy retention=1m")
	tick := h.readsOf(func() { h.apply(&storepb.Command{Op: &storepb.Command_Tick{Tick: &storepb.Tick{}}}) })
	t.Logf("tick with one due queue of 9 read %d keys", tick)
	if tick > 60 {
		t.Errorf("tick read %d keys for one due queue", tick)
	}
}

// TestDepthsFromCounters: Depths reads each queue's kept counters (O(1)
// per queue however many messages are in flight or delayed; it scanned
// their index entries), and they are right after the Tick that follows a
// lease end or a delay end. GetQueue is exact at any time.
func TestDepthsFromCounters(t *testing.T) {
	h := newHarness(t)
	h.now = 1_000_000
	h.run("create q=a vis=30s")
	send := func(n int, delayMs int64) {
		entries := make([]*storepb.SendEntry, n)
		for i := range entries {
			entries[i] = &storepb.SendEntry{Body: "x", DelayMs: delayMs}
		}
		h.apply(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: "t", Queue: "a", Entries: entries}}})
	}
	depth := func() (st Stats, read uint64) {
		read = h.readsOf(func() {
			err := h.s.Depths(h.now, 0, func(d QueueDepth) bool { st = d.Stats; return true })
			if err != nil {
				t.Fatal(err)
			}
		})
		return st, read
	}
	want := func(what string, got Stats, visible, inFlight, delayed int64) {
		t.Helper()
		if got.Visible != visible || got.InFlight != inFlight || got.Delayed != delayed {
			t.Fatalf("%s: %+v, want visible %d, in flight %d, delayed %d", what, got, visible, inFlight, delayed)
		}
	}
	send(3, -1)
	send(2, 60_000)
	h.apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: "t", Queue: "a", MaxMessages: 1, VisibilityTimeoutMs: -1}}})
	st, small := depth()
	want("after send and receive", st, 2, 1, 2)
	// Many more in flight and delayed: Depths reads no more keys.
	send(1000, -1)
	send(1000, 60_000)
	h.apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: "t", Queue: "a", MaxMessages: 100, VisibilityTimeoutMs: -1}}})
	st, large := depth()
	want("with 2,000 more", st, 902, 101, 1002)
	t.Logf("Depths read %d keys with 3 in flight or delayed, %d with 1,103", small, large)
	if large > small {
		t.Errorf("Depths read %d keys with 1,103 messages in flight or delayed, %d with 3", large, small)
	}
	// The leases end at +30 s: GetQueue sees it at once; the next Tick
	// settles the counters that Depths reads.
	h.now += 31_000
	if info, err := h.s.GetQueue("t", "a", h.now); err != nil || info.Stats.InFlight != 0 || info.Stats.Visible != 1003 {
		t.Fatalf("GetQueue after the leases ended: %+v %v", info.Stats, err)
	}
	if need, err := h.s.NeedsTick(h.now); err != nil || !need {
		t.Fatalf("NeedsTick after the leases ended: %v %v, want true (counters to settle)", need, err)
	}
	h.apply(&storepb.Command{Op: &storepb.Command_Tick{Tick: &storepb.Tick{}}})
	st, _ = depth()
	want("after the leases ended and a tick", st, 1003, 0, 1002)
	h.now += 30_000
	if need, _ := h.s.NeedsTick(h.now); !need {
		t.Fatal("NeedsTick after the delays ended: false, want true")
	}
	h.apply(&storepb.Command{Op: &storepb.Command_Tick{Tick: &storepb.Tick{}}})
	st, _ = depth()
	want("after the delays ended and a tick", st, 2005, 0, 0)
	if need, _ := h.s.NeedsTick(h.now); need {
		t.Fatal("NeedsTick with nothing due: true")
	}
}

// TestDueIndexBuiltForOldShards: a shard written before the due index and
// the counters (no due entries, ShardMeta.due_index and QueueMeta.counted
// unset) still expires its messages: NeedsTick answers true until a Tick
// has scheduled every queue, and the counters are counted once.
func TestDueIndexBuiltForOldShards(t *testing.T) {
	h := newHarness(t)
	h.now = 1_000_000
	h.run("create q=a retention=1m vis=30s")
	h.run("send q=a body=x,y")
	h.apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: "t", Queue: "a", MaxMessages: 1, VisibilityTimeoutMs: -1}}})
	// Make it look old.
	b := h.db.NewBatch()
	sm := &storepb.ShardMeta{}
	if _, err := h.s.reader(0).get(keys.ShardMeta(1), sm); err != nil {
		t.Fatal(err)
	}
	sm.DueIndex = false
	q, _ := h.s.reader(0).queue("t", "a")
	meta, _ := h.s.reader(0).queueMeta(q.Id)
	if err := b.Delete(keys.Due(1, meta.DueAtMs, q.Id), nil); err != nil {
		t.Fatal(err)
	}
	meta.InFlight, meta.Delayed, meta.SettledMs, meta.DueAtMs, meta.Counted = 0, 0, 0, 0, false
	for k, m := range map[string]proto.Message{string(keys.ShardMeta(1)): sm, string(keys.QueueMeta(1, q.Id)): meta} {
		v, _ := proto.Marshal(m)
		if err := b.Set([]byte(k), v, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
	if need, err := h.s.NeedsTick(h.now); err != nil || !need {
		t.Fatalf("NeedsTick on an old shard: %v %v, want true", need, err)
	}
	if info, _ := h.s.GetQueue("t", "a", h.now); info.Stats.InFlight != 1 || info.Stats.Visible != 1 {
		t.Fatalf("old queue stats: %+v", info.Stats)
	}
	h.apply(&storepb.Command{Op: &storepb.Command_Tick{Tick: &storepb.Tick{}}})
	var st Stats
	_ = h.s.Depths(h.now, 0, func(d QueueDepth) bool { st = d.Stats; return true })
	if st.InFlight != 1 || st.Visible != 1 {
		t.Fatalf("Depths after the first tick: %+v, want 1 in flight, 1 visible", st)
	}
	h.now += 61_000
	if need, _ := h.s.NeedsTick(h.now); !need {
		t.Fatal("NeedsTick past retention: false")
	}
	if r := h.apply(&storepb.Command{Op: &storepb.Command_Tick{Tick: &storepb.Tick{}}}); r.Removed != 2 {
		t.Fatalf("tick past retention removed %d, want 2", r.Removed)
	}
}

// TestPeekHorizonSkipsConsumedLeases: every message received and deleted
// within its visibility timeout leaves a tombstone at its lease's end, ahead
// of now. A peek bounded by a horizon (as long polls ask) reads a bounded
// number of points however many were consumed; an unbounded one walks them
// all, which is what the horizon is for.
func TestPeekHorizonSkipsConsumedLeases(t *testing.T) {
	reads := map[int][2]uint64{}
	for _, n := range []int{1_000, 20_000} {
		h := newHarness(t)
		h.now = 1_000_000
		h.run("create q=a")
		h.sendReceiveDelete("a", n)
		var bounded, unbounded uint64
		bounded = h.readsOf(func() {
			if ready, next, err := h.s.Peek("t", "a", nil, h.now, h.now+1000); err != nil || ready || next != 0 {
				t.Fatalf("bounded peek = %v %d %v, want nothing within 1 s", ready, next, err)
			}
		})
		unbounded = h.readsOf(func() {
			if ready, next, err := h.s.Peek("t", "a", nil, h.now, math.MaxInt64); err != nil || ready || next != 0 {
				t.Fatalf("unbounded peek = %v %d %v, want an empty queue", ready, next, err)
			}
		})
		reads[n] = [2]uint64{bounded, unbounded}
	}
	t.Logf("points read (bounded, unbounded): %v", reads)
	if b, a := reads[20_000][0], reads[1_000][0]; b > a+16 {
		t.Errorf("a peek 1 s ahead read %d points after 1,000 consumed messages, %d after 20,000: it grows with them", a, b)
	}
	if u, b := reads[20_000][1], reads[20_000][0]; u < 10*b {
		t.Errorf("an unbounded peek read %d points after 20,000 consumed messages, a bounded one %d: the tombstones this guards against are not there", u, b)
	}
}

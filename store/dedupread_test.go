package store

import (
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// TestDedupReaderSeesItsCommand: a command's keyed sends are looked up
// through one iterator opened before the command wrote anything, so a key
// repeated within the command, a key an earlier command of the same apply
// batch wrote, and an expired record waiting for Tick must answer as a
// Get would: the repeat and the earlier one are duplicates of the first
// message, the expired one is stored anew and replaces its record.
func TestDedupReaderSeesItsCommand(t *testing.T) {
	h := newHarness(t)
	h.run("create q=a")
	h.run("create q=f.fifo")
	keyed := func(k string) *storepb.SendEntry {
		return &storepb.SendEntry{Body: "b", DelayMs: -1, IdempotencyKey: k}
	}
	fifo := func(d string) *storepb.SendEntry {
		return &storepb.SendEntry{Body: "b", DelayMs: -1, GroupId: "g", DeduplicationId: d}
	}

	// Two commands in one apply batch (raftnode applies a round's entries
	// into one indexed batch): the second sees the first's records.
	b := h.db.NewIndexedBatch()
	apply := func(cmd *storepb.Command) *Result {
		t.Helper()
		cmd.Version, cmd.TimeMs = CommandVersion, h.now
		data, err := proto.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		h.index++
		r, err := h.s.Apply(b, h.index, data)
		if err != nil {
			t.Fatal(err)
		}
		return r.(*Result)
	}
	r1 := apply(sendCmd("a", keyed("k1"), keyed("k2"), keyed("k1")))
	if r1.Sent[0].Duplicate || r1.Sent[1].Duplicate || !r1.Sent[2].Duplicate || r1.Sent[2].MessageID != r1.Sent[0].MessageID {
		t.Fatalf("one command, k1 twice: %+v", r1.Sent)
	}
	r2 := apply(sendCmd("a", keyed("k3"), keyed("k2")))
	if r2.Sent[0].Duplicate || !r2.Sent[1].Duplicate || r2.Sent[1].MessageID != r1.Sent[1].MessageID {
		t.Fatalf("second command of the batch, k2 again: %+v", r2.Sent)
	}
	r3 := apply(sendCmd("f.fifo", fifo("d1"), fifo("d1"), fifo("d2")))
	if r3.Sent[0].Duplicate || !r3.Sent[1].Duplicate || r3.Sent[2].Duplicate {
		t.Fatalf("FIFO, d1 twice: %+v", r3.Sent)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}

	// Past the window, before Tick: k1 is found expired and replaced; the
	// repeat in the same command is a duplicate of the new message.
	h.now += IdempotencyWindowMs + 1
	r4 := h.apply(sendCmd("a", keyed("k1"), keyed("k1")))
	if r4.Sent[0].Duplicate || r4.Sent[0].MessageID == r1.Sent[0].MessageID || !r4.Sent[1].Duplicate || r4.Sent[1].MessageID != r4.Sent[0].MessageID {
		t.Fatalf("expired k1 sent again twice: %+v", r4.Sent)
	}
	if n := h.stats("a").Messages; n != 4 {
		t.Fatalf("queue a holds %d messages, want 4 (k1, k2, k3, k1 again)", n)
	}
}

// TestDedupFilterFollowsReplacedState: the store's in-memory count of
// short-lived record keys answers a send's idempotency-key miss without
// Pebble, and its hot-key cache answers catalog reads, so both must be
// dropped when the state changes behind the store:
// a snapshot install (Restored) or a state rebuilt from the start (the
// apply index runs backwards). Another Store on the same db stands for
// the snapshot's writer.
func TestDedupFilterFollowsReplacedState(t *testing.T) {
	h := newHarness(t)
	h.run("create q=a")
	keyed := func(k string) *storepb.SendEntry {
		return &storepb.SendEntry{Body: "b", DelayMs: -1, IdempotencyKey: k}
	}
	if r := h.apply(sendCmd("a", keyed("k1"))); r.Sent[0].Duplicate {
		t.Fatalf("first send of k1: %+v", r.Sent)
	}
	other := &harness{t: t, db: h.db, s: New(h.db, 1), now: h.now, index: h.index}

	sent := other.apply(sendCmd("a", keyed("k2")))
	h.index = other.index
	h.s.Restored()
	if r := h.apply(sendCmd("a", keyed("k2"))); !r.Sent[0].Duplicate || r.Sent[0].MessageID != sent.Sent[0].MessageID {
		t.Fatalf("k2 after a restore that brought it: %+v, want a duplicate of %+v", r.Sent, sent.Sent)
	}

	other.index = 1
	sent = other.apply(sendCmd("a", keyed("k3")))
	h.index = 1
	if r := h.apply(sendCmd("a", keyed("k3"))); !r.Sent[0].Duplicate || r.Sent[0].MessageID != sent.Sent[0].MessageID {
		t.Fatalf("k3 after the index ran backwards: %+v, want a duplicate of %+v", r.Sent, sent.Sent)
	}

	// The hot-key cache (catalog records): a queue the other store
	// deleted is gone after Restored.
	other.index = h.index
	other.run("delete-queue q=a")
	h.index = other.index
	h.s.Restored()
	if r := h.apply(sendCmd("a", keyed("k4"))); r.Err != ErrQueueNotFound {
		t.Fatalf("send to a queue deleted behind the store's back: %v %+v", r.Err, r.Sent)
	}
}

// TestDedupFilterBuildBound: a queue with more keys than a build counts
// is looked up in Pebble for every key (no counts), and its keys still
// answer as duplicates after a restart (a new Store on the same state).
func TestDedupFilterBuildBound(t *testing.T) {
	defer func(n int) { maxDedupBuild = n }(maxDedupBuild)
	maxDedupBuild = 2
	h := newHarness(t)
	h.run("create q=a")
	keyed := func(k string) *storepb.SendEntry {
		return &storepb.SendEntry{Body: "b", DelayMs: -1, IdempotencyKey: k}
	}
	first := h.apply(sendCmd("a", keyed("k1"), keyed("k2"), keyed("k3")))
	h.s = New(h.db, 1) // a restart: the counts are built again, and stop at 2
	r := h.apply(sendCmd("a", keyed("k3"), keyed("k4"), keyed("k4")))
	if !r.Sent[0].Duplicate || r.Sent[0].MessageID != first.Sent[2].MessageID || r.Sent[1].Duplicate || !r.Sent[2].Duplicate {
		t.Fatalf("after the restart: %+v (first %+v)", r.Sent, first.Sent)
	}
	if n := len(h.s.dedup.queues); n != 1 {
		t.Fatalf("%d queues in the filter, want 1 (unfiltered)", n)
	}
	for _, c := range h.s.dedup.queues {
		if c != nil {
			t.Fatalf("queue counted (%d 'd' hashes, %d buckets) past the build bound", len(c.d), len(c.i))
		}
	}
}

package store

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// toOldLayout rewrites a shard's state into the layout from before lease
// records (the one an old node's data directory or snapshot holds): every
// message record carries its lease fields inline, there are no 's' keys, and
// index entries hold the flag byte alone. It rewrites records and entries in
// place (a second set, no delete between), as the old code did, and clears
// the queues' set_once_seq, which the old code never wrote: their messages
// must not be single-deleted. It returns how many lease records it folded.
func toOldLayout(t *testing.T, db *pebble.DB, shard uint64) int {
	t.Helper()
	r := New(db, shard).reader(0)
	qs, err := r.queues()
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	folded := 0
	for _, q := range qs {
		meta := &storepb.QueueMeta{}
		if found, err := r.get(keys.QueueMeta(shard, q.Id), meta); err != nil {
			t.Fatal(err)
		} else if found && meta.SetOnceSeq != 0 {
			meta.SetOnceSeq = 0
			v, err := marshal.Marshal(meta)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Set(keys.QueueMeta(shard, q.Id), v, nil); err != nil {
				t.Fatal(err)
			}
		}
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: keys.QueuePrefix(shard, q.Id), UpperBound: keys.QueueEnd(shard, q.Id)})
		if err != nil {
			t.Fatal(err)
		}
		for ok := it.First(); ok; ok = it.Next() {
			k, v := it.Key(), it.Value()
			if _, _, seq, err := keys.DecodeLease(k); err == nil {
				raw, closer, err := db.Get(keys.Message(shard, q.Id, seq))
				if err != nil {
					t.Fatalf("lease of seq %d without message: %v", seq, err)
				}
				m := &storepb.MessageRecord{}
				if err := proto.Unmarshal(raw, m); err != nil {
					t.Fatal(err)
				}
				closer.Close()
				if err := applyLease(m, v); err != nil {
					t.Fatal(err)
				}
				old, err := marshal.Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				if err := b.Set(keys.Message(shard, q.Id, seq), old, nil); err != nil {
					t.Fatal(err)
				}
				if err := b.Delete(k, nil); err != nil {
					t.Fatal(err)
				}
				folded++
				continue
			}
			_, _, _, _, verr := keys.DecodeVisible(k)
			_, _, _, _, _, terr := keys.DecodeTag(k)
			_, _, _, _, _, perr := keys.DecodePriority(k)
			_, _, _, _, _, ferr := keys.DecodeFair(k)
			if (verr == nil || terr == nil || perr == nil || ferr == nil) && len(v) > 1 {
				if err := b.Set(k, v[:1], nil); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	return folded
}

// TestOldLayoutUpgrade: a store whose state was written in the layout from
// before lease records (message record rewritten by every lease change,
// flag-only index entries) keeps working after the upgrade. A random log of
// every op is applied to a replica whose state is turned into the old
// layout every 200 commands (as a restart on an old data directory, or an
// old node's snapshot, would hand it over); every outcome (messages
// received with their counts, receipt handles, deletes, nacks, stale
// handles, dead-letter moves, redrives) must be the generator's, the
// invariants must hold over the mixed layout, and in the old layout the
// final state is byte-identical to the generator's.
func TestOldLayoutUpgrade(t *testing.T) {
	const shard = 4
	g := newGenerator(t, shard, 3)
	log, want := g.generate(4000)

	// A Pebble that flushes and compacts often: a record set twice by the
	// old layout and then single-deleted would be reported, or come back
	// (the state compared below, after a full compaction, would differ).
	db, _ := openWatched(t, smallLSM())
	s := New(db, shard)
	rng := rand.New(rand.NewPCG(3, 99))
	folded := 0
	for i := 0; i < len(log); {
		if i > 0 && i%200 < 20 {
			folded += toOldLayout(t, db, shard)
			if i%800 < 20 {
				checkInvariants(t, s)
			}
		}
		n := min(1+rng.IntN(20), len(log)-i)
		b := db.NewIndexedBatch()
		for j := i; j < i+n; j++ {
			r, err := s.Apply(b, uint64(j+1), log[j])
			if err != nil {
				t.Fatalf("entry %d: %v", j, err)
			}
			if got := summarize(r.(*Result)); got != want[j] {
				t.Fatalf("entry %d: outcome %s, generator had %s", j, got, want[j])
			}
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		i += n
	}
	checkInvariants(t, s)
	if folded < 50 {
		t.Fatalf("only %d lease records were turned into the old layout: too little coverage", folded)
	}
	compactAll(t, db)
	toOldLayout(t, db, shard)
	toOldLayout(t, g.db, shard)
	got, wantState := dumpState(t, db, shard), dumpState(t, g.db, shard)
	if len(got) != len(wantState) {
		t.Fatalf("%d keys, generator %d", len(got), len(wantState))
	}
	for i := range got {
		if got[i] != wantState[i] {
			t.Fatalf("key %d differs:\n%q\n%q", i, got[i], wantState[i])
		}
	}
	t.Logf("%d commands, %d lease records folded into the old layout on the way", len(log), folded)
}

// TestReceiveWritesNoBody: a receive, a visibility change and a reschedule
// write tens of bytes per message, never the message record (and a receive
// leaves the body to the reply to decode); a delete removes the message
// record and its lease record.
func TestReceiveWritesNoBody(t *testing.T) {
	h := newHarness(t)
	h.now = 1_000_000
	h.run("create q=a vis=1m")
	body := string(bytes.Repeat([]byte("b"), 4096))
	h.apply(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: "t", Queue: "a", Entries: []*storepb.SendEntry{
		{Body: body, DelayMs: -1, Tags: []string{"red"}},
		{Body: body, DelayMs: 60_000},
	}}}})
	written := func(cmd *storepb.Command) (*Result, []string, int) {
		r, b := h.stage(cmd)
		var ks []string
		for _, op := range batchOps(t, b) {
			ks = append(ks, keys.Pretty(op.key))
		}
		n := b.Len()
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		return r, ks, n
	}
	noRecord := func(op string, ks []string, n int) {
		t.Helper()
		t.Logf("%s: %d bytes, keys %v", op, n, ks)
		for _, k := range ks {
			if bytes.Contains([]byte(k), []byte("/m/")) {
				t.Errorf("%s wrote the message record: %v", op, ks)
			}
		}
		if n > 1024 {
			t.Errorf("%s wrote %d bytes for a 4 KiB message", op, n)
		}
	}
	r, ks, n := written(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: "t", Queue: "a", MaxMessages: 1, VisibilityTimeoutMs: -1}}})
	if len(r.Received) != 1 || r.Received[0].Message.ReceiveCount != 1 {
		t.Fatalf("receive: %v", r.Received)
	}
	// Nor did it decode the body: only the reply does (decodeLean).
	if got := r.Received[0].Message.Body; got != "" {
		t.Errorf("the receive decoded the body (%d bytes) before the reply asked", len(got))
	}
	if m, err := r.Received[0].Whole(); err != nil || m.Body != body || m.ReceiveCount != 1 || len(m.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("whole: %v, %v", m, err)
	}
	noRecord("receive", ks, n)
	handle := r.Received[0].ReceiptHandle
	r, ks, n = written(&storepb.Command{Op: &storepb.Command_ChangeVisibility{ChangeVisibility: &storepb.ChangeVisibility{Tenant: "t", Queue: "a",
		Changes: []*storepb.VisibilityChange{{ReceiptHandle: handle, VisibilityTimeoutMs: 0}}}}})
	if r.Entries[0] != nil {
		t.Fatal(r.Entries[0])
	}
	noRecord("change visibility", ks, n)
	r, ks, n = written(&storepb.Command{Op: &storepb.Command_RescheduleMessage{RescheduleMessage: &storepb.RescheduleMessage{Tenant: "t", Queue: "a",
		MessageId: messageID(1_000_000, 1, 1, 2), DelayMs: 1000}}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	noRecord("reschedule", ks, n)
	// Received again (count 2), then deleted: record, lease record and
	// index entries go.
	r, _, _ = written(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: "t", Queue: "a", MaxMessages: 1, VisibilityTimeoutMs: -1}}})
	if len(r.Received) != 1 || r.Received[0].Message.ReceiveCount != 2 || r.Received[0].Message.FirstReceivedAtMs != 1_000_000 {
		t.Fatalf("second receive: %v", r.Received)
	}
	r, ks, _ = written(&storepb.Command{Op: &storepb.Command_Delete{Delete: &storepb.Delete{Tenant: "t", Queue: "a", ReceiptHandles: [][]byte{r.Received[0].ReceiptHandle}}}})
	if r.Entries[0] != nil {
		t.Fatal(r.Entries[0])
	}
	for _, want := range []string{"/q/1/m/1", "/q/1/s/1", "/q/1/v/", "/q/1/t/"} {
		found := false
		for _, k := range ks {
			found = found || bytes.Contains([]byte(k), []byte(want))
		}
		if !found {
			t.Errorf("delete did not touch %s: %v", want, ks)
		}
	}
	checkInvariants(t, h.s)
}

// TestDeleteByHandleReadsLease: a delete by receipt handle of a message
// without group and ttl reads its lease record and not its record, tags or
// not (a tagged lease record carries the tags): one key fewer than the same
// delete of a message with a ttl; all leave the counters and indexes right.
func TestDeleteByHandleReadsLease(t *testing.T) {
	h := newHarness(t)
	h.now = 1_000_000
	h.run("create q=a vis=1m")
	h.apply(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: "t", Queue: "a", Entries: []*storepb.SendEntry{
		{Body: "plain", DelayMs: -1},
		{Body: "tagged", DelayMs: -1, Tags: []string{"red", "blue"}},
		{Body: "ttl", DelayMs: -1, TtlMs: 3_600_000},
	}}}})
	r := h.apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: "t", Queue: "a", MaxMessages: 3, VisibilityTimeoutMs: -1}}})
	if len(r.Received) != 3 {
		t.Fatalf("received %d", len(r.Received))
	}
	deleteReads := func(handle []byte) uint64 {
		before := h.s.KeysRead()
		d := h.apply(&storepb.Command{Op: &storepb.Command_Delete{Delete: &storepb.Delete{Tenant: "t", Queue: "a", ReceiptHandles: [][]byte{handle}}}})
		if d.Entries[0] != nil {
			t.Fatal(d.Entries[0])
		}
		return h.s.KeysRead() - before
	}
	// The last ones first: then the plain one's delete empties the queue,
	// and moving low_seq finds no key to read.
	ttl := deleteReads(r.Received[2].ReceiptHandle)
	checkInvariants(t, h.s)
	tagged := deleteReads(r.Received[1].ReceiptHandle)
	checkInvariants(t, h.s)
	plain := deleteReads(r.Received[0].ReceiptHandle)
	checkInvariants(t, h.s)
	t.Logf("delete reads: plain %d, tagged %d, ttl %d", plain, tagged, ttl)
	if plain != tagged || plain+1 != ttl {
		t.Errorf("delete reads: plain %d, tagged %d, ttl %d: want plain = tagged = ttl - 1", plain, tagged, ttl)
	}
	if qi, err := h.s.GetQueue("t", "a", h.now); err != nil || qi.Stats.Messages != 0 || qi.Stats.Bytes != 0 {
		t.Fatalf("after the deletes: %+v %v", qi, err)
	}
}

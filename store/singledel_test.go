package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// misuseWatch collects what Pebble's flushes and compactions report as a
// possible API misuse: above all a single delete that found no set to
// delete, or a set under the one it deleted (the set-once rule broken; see
// DESIGN.md, "Single deletes").
type misuseWatch struct {
	mu     sync.Mutex
	events []pebble.PossibleAPIMisuseInfo
}

func (w *misuseWatch) listener() *pebble.EventListener {
	return &pebble.EventListener{PossibleAPIMisuse: func(info pebble.PossibleAPIMisuseInfo) {
		w.mu.Lock()
		defer w.mu.Unlock()
		info.UserKey = append([]byte(nil), info.UserKey...)
		w.events = append(w.events, info)
	}}
}

func (w *misuseWatch) seen() []pebble.PossibleAPIMisuseInfo {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]pebble.PossibleAPIMisuseInfo(nil), w.events...)
}

// openWatched opens an in-memory Pebble with o (FS and Logger set here)
// whose misuse reports fail the test: at the test's end (before the DB
// closes) it flushes and compacts everything, so that every single delete
// meets what lies under it, and fails on any report.
func openWatched(t testing.TB, o *pebble.Options) (*pebble.DB, *misuseWatch) {
	w := &misuseWatch{}
	o.FS, o.Logger, o.EventListener = vfs.NewMem(), quietLogger{}, w.listener()
	db, err := pebble.Open("", o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	t.Cleanup(func() {
		compactAll(t, db)
		for _, e := range w.seen() {
			t.Errorf("pebble: %s", e)
		}
	})
	return db, w
}

// compactAll flushes db and compacts every key into the last level.
func compactAll(t testing.TB, db *pebble.DB) {
	t.Helper()
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Compact(context.Background(), []byte{0}, []byte{0xff, 0xff, 0xff, 0xff}, false); err != nil {
		t.Fatal(err)
	}
}

// smallLSM are Pebble options under which a short log flushes and compacts
// many times: a 64 KiB memtable, L0 compacted at 2 files, 128 KiB L1.
func smallLSM() *pebble.Options {
	o := &pebble.Options{MemTableSize: 64 << 10, L0CompactionThreshold: 2, LBaseMaxBytes: 128 << 10}
	o.TargetFileSizes[0] = 32 << 10
	return o
}

// applyLog applies log to s in apply rounds of 1-20 entries (each an
// indexed batch committed like raftnode's) and returns the single deletes
// the batches held. It stops at the first apply error or outcome that is
// not the generator's and returns it as problem.
func applyLog(t *testing.T, s *Store, db *pebble.DB, log [][]byte, want []string) (singleDeletes int, problem string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 99))
	for i := 0; i < len(log); {
		n := min(1+rng.IntN(20), len(log)-i)
		b := db.NewIndexedBatch()
		for j := i; j < i+n; j++ {
			r, err := s.Apply(b, uint64(j+1), log[j])
			if err != nil {
				b.Close()
				return singleDeletes, fmt.Sprintf("entry %d: %v", j, err)
			}
			if got := summarize(r.(*Result)); got != want[j] {
				b.Close()
				return singleDeletes, fmt.Sprintf("entry %d: outcome %s, generator had %s", j, got, want[j])
			}
		}
		singleDeletes += len(singleDeleted(t, b))
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		i += n
	}
	return singleDeletes, ""
}

// singleDeleted returns the keys b single-deletes, in batch order.
func singleDeleted(t *testing.T, b *pebble.Batch) [][]byte {
	t.Helper()
	var out [][]byte
	for _, op := range batchOps(t, b) {
		if op.kind == pebble.InternalKeyKindSingleDelete {
			out = append(out, op.key)
		}
	}
	return out
}

// batchOp is one operation of a batch: its kind and user key (for a range
// delete, the start).
type batchOp struct {
	kind pebble.InternalKeyKind
	key  []byte
}

// batchOps lists b's operations in the order they were added.
func batchOps(t *testing.T, b *pebble.Batch) []batchOp {
	t.Helper()
	var out []batchOp
	for r := b.Reader(); ; {
		kind, k, _, ok, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, batchOp{kind, k})
	}
}

// TestSingleDeletesMatchDeletes applies the random log of
// TestDeterministicReplay (every op: sends with ttls, priorities, groups
// and tags, receives, visibility changes, nacks with retry backoff,
// reschedules, deletes, dead-letter moves and redrives through the outbox,
// expiry, max length, purges, queue deletes) to a store that removes keys
// with single deletes where the set-once rule allows, and to one with
// plain deletes only, each on a Pebble small enough to flush and compact
// hundreds of times on the way. Pebble must report no misuse, and after a
// full compaction the two hold the same keys and values: a single delete
// that broke the rule would have brought a deleted key back.
func TestSingleDeletesMatchDeletes(t *testing.T) {
	for _, seed := range []uint64{1, 2} {
		const shard = 4
		g := newGenerator(t, shard, seed)
		log, want := g.generate(4000)

		db, w := openWatched(t, smallLSM())
		plainDB, _ := openWatched(t, smallLSM())
		plain := New(plainDB, shard)
		plain.plainDeletes = true
		if n, problem := applyLog(t, plain, plainDB, log, want); n != 0 || problem != "" {
			t.Fatalf("seed %d: %d single deletes with plain deletes on; %s", seed, n, problem)
		}
		n, problem := applyLog(t, New(db, shard), db, log, want)
		if problem != "" {
			t.Fatalf("seed %d: %s", seed, problem)
		}
		compactAll(t, db)
		compactAll(t, plainDB)
		m := db.Metrics()
		if e := w.seen(); len(e) > 0 {
			t.Fatalf("seed %d: pebble: %s (%d reports)", seed, e[0], len(e))
		}
		got, wantState := dumpState(t, db, shard), dumpState(t, plainDB, shard)
		if len(got) != len(wantState) {
			t.Fatalf("seed %d: %d keys, %d with plain deletes", seed, len(got), len(wantState))
		}
		for i := range got {
			if got[i] != wantState[i] {
				t.Fatalf("seed %d: key %d differs:\n%q\nplain deletes: %q", seed, i, got[i], wantState[i])
			}
		}
		if n < 1000 || m.Flush.Count < 50 || m.Compact.Count < 50 {
			t.Fatalf("seed %d: %d single deletes, %d flushes, %d compactions: too little coverage", seed, n, m.Flush.Count, m.Compact.Count)
		}
		t.Logf("seed %d: %d commands, %d keys left, %d single deletes, %d flushes, %d compactions; %s",
			seed, len(log), len(got), n, m.Flush.Count, m.Compact.Count, g.coverage())
	}
}

// TestSingleDeleteChecksCatchMisuse: the checks above fail when a key
// kind that is set twice between deletes is removed with a single delete.
// overwriteLeases rewrites lease records in place (every redelivery, nack
// or visibility change sets the record again), and their removal then
// breaks the rule: Pebble reports it, or the older set comes back.
func TestSingleDeleteChecksCatchMisuse(t *testing.T) {
	const shard = 4
	g := newGenerator(t, shard, 1)
	log, want := g.generate(4000)

	w := &misuseWatch{}
	o := smallLSM()
	o.FS, o.Logger, o.EventListener = vfs.NewMem(), quietLogger{}, w.listener()
	db, err := pebble.Open("", o)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	plainDB, _ := openWatched(t, smallLSM())
	plain := New(plainDB, shard)
	plain.plainDeletes = true
	if _, problem := applyLog(t, plain, plainDB, log, want); problem != "" {
		t.Fatal(problem)
	}
	s := New(db, shard)
	s.overwriteLeases = true
	_, problem := applyLog(t, s, db, log, want)
	compactAll(t, db)
	compactAll(t, plainDB)
	got, wantState := dumpState(t, db, shard), dumpState(t, plainDB, shard)
	differ := len(got) != len(wantState)
	for i := 0; !differ && i < len(got); i++ {
		differ = got[i] != wantState[i]
	}
	reports := w.seen()
	if len(reports) == 0 && !differ && problem == "" {
		t.Fatal("lease records set twice and single-deleted: no report, the same outcomes and the same state")
	}
	t.Logf("%d misuse reports (first: %v); the log's apply: %q; state differs from plain deletes: %v (%d keys against %d)",
		len(reports), firstReport(reports), problem, differ, len(got), len(wantState))
}

func firstReport(r []pebble.PossibleAPIMisuseInfo) any {
	if len(r) == 0 {
		return nil
	}
	return r[0]
}

// TestSetOnceSeq: a new queue single-deletes from its first message; a
// queue from before the rule (no set_once_seq, records set twice) gets its
// next_seq at the first command that writes its meta, and only messages
// from there on are single-deleted, whatever removes them together.
func TestSetOnceSeq(t *testing.T) {
	h := newHarness(t)
	marker := func(q string) uint64 {
		t.Helper()
		rec, err := h.s.reader(h.now).queue("t", q)
		if err != nil || rec == nil {
			t.Fatalf("queue %s: %v", q, err)
		}
		meta := &storepb.QueueMeta{}
		if _, err := h.s.reader(h.now).get(keys.QueueMeta(1, rec.Id), meta); err != nil {
			t.Fatal(err)
		}
		return meta.SetOnceSeq
	}
	h.run("create q=new vis=1m")
	h.run("create q=old vis=1m")
	if got := marker("new"); got != 1 {
		t.Fatalf("new queue: set_once_seq %d, want 1", got)
	}
	h.run("send q=old body=a,b,c")
	// What an older version left: no marker, and each record set a second
	// time (it rewrote the record on every receive).
	rec, err := h.s.reader(h.now).queue("t", "old")
	if err != nil {
		t.Fatal(err)
	}
	meta := &storepb.QueueMeta{}
	if _, err := h.s.reader(h.now).get(keys.QueueMeta(1, rec.Id), meta); err != nil {
		t.Fatal(err)
	}
	meta.SetOnceSeq = 0
	b := h.db.NewBatch()
	v, err := marshal.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Set(keys.QueueMeta(1, rec.Id), v, nil); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		k := keys.Message(1, rec.Id, seq)
		v, closer, err := h.db.Get(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Set(k, append([]byte(nil), v...), nil); err != nil {
			t.Fatal(err)
		}
		closer.Close()
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	// The records' second sets reach an sstable apart from what follows.
	if err := h.db.Flush(); err != nil {
		t.Fatal(err)
	}
	h.run("send q=old body=d") // seq 4, inserted before the command writes the marker
	if got := marker("old"); got != 5 {
		t.Fatalf("old queue after a send: set_once_seq %d, want 5 (its next_seq)", got)
	}
	h.run("send q=old body=e")
	h.run("send q=new body=f")
	h.run("receive q=old max=10 vis=1m")
	h.run("receive q=new max=10 vis=1m")

	del := func(q string, names ...string) map[string]bool {
		t.Helper()
		var hs [][]byte
		for _, n := range names {
			hs = append(hs, h.handles[n])
		}
		cmd := &storepb.Command{Version: CommandVersion, TimeMs: h.now,
			Op: &storepb.Command_Delete{Delete: &storepb.Delete{Tenant: "t", Queue: q, ReceiptHandles: hs}}}
		data, err := proto.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		b := h.db.NewIndexedBatch()
		h.index++
		r, err := h.s.Apply(b, h.index, data)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range r.(*Result).Entries {
			if e != nil {
				t.Fatalf("delete: %v", e)
			}
		}
		single := map[string]bool{}
		for _, k := range singleDeleted(t, b) {
			single[keys.Pretty(k)] = true
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		return single
	}
	if got := del("old", "h1", "h2", "h3", "h4", "h5"); len(got) != 3 {
		// seq 5's record, lease record and visibility entry
		t.Fatalf("old queue: single deletes %v, want the 3 keys of seq 5", got)
	}
	if got := del("new", "h6"); len(got) != 3 {
		t.Fatalf("new queue: single deletes %v, want the 3 keys of seq 1", got)
	}
	// openMem's end-of-test compaction fails the test if a record set twice
	// was single-deleted.
}

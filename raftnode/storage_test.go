package raftnode

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
)

func ents(term uint64, from, to uint64, size int) []*pb.Entry {
	var out []*pb.Entry
	for i := from; i <= to; i++ {
		out = append(out, &pb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(term), Data: make([]byte, size)})
	}
	return out
}

func stageAndCommit(t *testing.T, s *storage, es []*pb.Entry, hs *pb.HardState) {
	t.Helper()
	b := s.db.NewBatch()
	defer b.Close()
	st, err := s.stageAppend(b, es, hs)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.commitAppend(st)
}

func TestStorage(t *testing.T) {
	db := openDB(t, vfs.NewMem())
	defer db.Close()
	s, fresh, err := loadStorage(db, db, 5)
	if err != nil || !fresh {
		t.Fatalf("load: fresh=%v err=%v", fresh, err)
	}
	stageAndCommit(t, s, ents(1, 1, 10, 100), &pb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(3)})

	got, err := s.Entries(2, 11, 1<<20)
	if err != nil || len(got) != 9 || got[0].GetIndex() != 2 {
		t.Fatalf("Entries(2, 11) = %d entries, %v", len(got), err)
	}
	size := uint64(proto.Size(got[0]))
	if got, _ := s.Entries(2, 11, 3*size); len(got) != 3 {
		t.Fatalf("maxSize 3 entries: got %d", len(got))
	}
	if got, _ := s.Entries(2, 11, 1); len(got) != 1 {
		t.Fatalf("maxSize below one entry: got %d, want 1", len(got))
	}
	if _, err := s.Entries(5, 12, 1<<20); !errors.Is(err, raft.ErrUnavailable) {
		t.Fatalf("past last: %v", err)
	}

	// A new leader's entries replace the tail from 6: 7..10 must go.
	stageAndCommit(t, s, ents(2, 6, 6, 10), nil)
	if last, _ := s.LastIndex(); last != 6 {
		t.Fatalf("last index %d after tail replacement", last)
	}
	if term, _ := s.Term(6); term != 2 {
		t.Fatalf("term(6) = %d", term)
	}
	if _, err := s.Term(7); !errors.Is(err, raft.ErrUnavailable) {
		t.Fatalf("term(7): %v", err)
	}

	// Truncate through 4.
	b := db.NewBatch()
	term, ok, err := s.stageTruncate(b, 4)
	if err != nil || !ok || term != 1 {
		t.Fatalf("stageTruncate: %d %v %v", term, ok, err)
	}
	if err := s.stageApplied(b, 4, &pb.ConfState{Voters: []uint64{1}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.commitApply(4, &pb.ConfState{Voters: []uint64{1}}, 4, term)
	if first, _ := s.FirstIndex(); first != 5 {
		t.Fatalf("first index %d", first)
	}
	if _, err := s.Entries(4, 6, 1<<20); !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("compacted: %v", err)
	}
	if term, err := s.Term(4); err != nil || term != 1 {
		t.Fatalf("term of truncated index: %d %v", term, err)
	}
	snap, err := s.Snapshot()
	if err != nil || snap.GetMetadata().GetIndex() != 4 || snap.GetMetadata().GetTerm() != 1 ||
		len(snap.GetMetadata().GetConfState().GetVoters()) != 1 {
		t.Fatalf("snapshot %v %v", snap, err)
	}

	// Everything survives a reload.
	s2, fresh, err := loadStorage(db, db, 5)
	if err != nil || fresh {
		t.Fatalf("reload: fresh=%v err=%v", fresh, err)
	}
	first, _ := s2.FirstIndex()
	last, _ := s2.LastIndex()
	hs, cs, _ := s2.InitialState()
	// The stored commit (3) is below the truncation point (4): loading
	// raises it, as after a crash between a snapshot's ingestion and its
	// HardState write.
	if first != 5 || last != 6 || s2.applied != 4 || hs.GetCommit() != 4 || len(cs.GetVoters()) != 1 {
		t.Fatalf("reloaded first=%d last=%d applied=%d hs=%v cs=%v", first, last, s2.applied, hs, cs)
	}
	// Other groups are untouched.
	if _, fresh, _ := loadStorage(db, db, 6); !fresh {
		t.Fatal("group 6 not fresh")
	}
}

// TestStorageEntryCache drives two storages over the same operations, one
// with a small entry cache and one without (so every read goes to Pebble),
// and checks that every read agrees: appends, replaced tails, truncation,
// eviction and a snapshot restore.
func TestStorageEntryCache(t *testing.T) {
	db := openDB(t, vfs.NewMem())
	defer db.Close()
	cached, _, err := loadStorage(db, db, 1)
	if err != nil {
		t.Fatal(err)
	}
	cached.cacheLimit = 2000 // about 15 entries of 120 bytes
	plain, _, err := loadStorage(db, db, 2)
	if err != nil {
		t.Fatal(err)
	}
	both := []*storage{cached, plain}
	withTerm := func(es []*pb.Entry, term uint64, data byte) []*pb.Entry {
		for _, e := range es {
			e.Term = proto.Uint64(term)
			e.Data[0] = data
		}
		return es
	}
	check := func(step string) {
		t.Helper()
		f1, l1, _ := cached.bounds()
		f2, l2, _ := plain.bounds()
		if f1 != f2 || l1 != l2 {
			t.Fatalf("%s: bounds [%d,%d] vs [%d,%d]", step, f1, l1, f2, l2)
		}
		for lo := f1 - 1; lo <= l1+1; lo++ {
			t1, e1 := cached.Term(lo)
			t2, e2 := plain.Term(lo)
			if t1 != t2 || !errors.Is(e1, e2) && (e1 != nil || e2 != nil) {
				t.Fatalf("%s: Term(%d) = %d, %v vs %d, %v", step, lo, t1, e1, t2, e2)
			}
			for hi := lo; hi <= l1+2; hi++ {
				for _, maxSize := range []uint64{1, 300, 1 << 20} {
					g1, e1 := cached.Entries(lo, hi, maxSize)
					g2, e2 := plain.Entries(lo, hi, maxSize)
					if !errors.Is(e1, e2) && (e1 != nil || e2 != nil) || len(g1) != len(g2) {
						t.Fatalf("%s: Entries(%d, %d, %d) = %d, %v vs %d, %v", step, lo, hi, maxSize, len(g1), e1, len(g2), e2)
					}
					for i := range g1 {
						if !proto.Equal(g1[i], g2[i]) {
							t.Fatalf("%s: Entries(%d, %d)[%d] = %v vs %v", step, lo, hi, i, g1[i], g2[i])
						}
					}
				}
			}
		}
		if cached.cacheBytes > cached.cacheLimit {
			t.Fatalf("%s: cache holds %d bytes, limit %d", step, cached.cacheBytes, cached.cacheLimit)
		}
	}
	for _, s := range both {
		stageAndCommit(t, s, withTerm(ents(1, 1, 10, 100), 1, 1), nil)
	}
	check("append 1..10")
	if len(cached.cache) == 0 {
		t.Fatal("nothing cached")
	}
	for _, s := range both {
		stageAndCommit(t, s, withTerm(ents(1, 11, 30, 100), 1, 2), nil)
	}
	check("append 11..30 (evicts)")
	for _, s := range both {
		stageAndCommit(t, s, withTerm(ents(2, 25, 27, 100), 2, 3), nil)
	}
	check("replace tail from 25")
	for _, s := range both {
		stageAndCommit(t, s, withTerm(ents(3, 20, 40, 100), 3, 4), nil)
	}
	check("replace tail from 20, longer")
	for _, s := range both {
		b := db.NewIndexedBatch()
		term, ok, err := s.stageTruncate(b, 30)
		if err != nil || !ok {
			t.Fatalf("truncate: %v %v", ok, err)
		}
		if err := b.Commit(pebble.Sync); err != nil {
			t.Fatal(err)
		}
		_ = b.Close()
		s.commitApply(30, nil, 30, term)
	}
	check("truncate to 30")
	for _, s := range both {
		s.restore(&pb.SnapshotMetadata{Index: proto.Uint64(50), Term: proto.Uint64(4), ConfState: &pb.ConfState{}})
		b := db.NewBatch()
		if err := b.DeleteRange(keys.LogPrefix(s.group), keys.LogEnd(s.group), nil); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(pebble.Sync); err != nil {
			t.Fatal(err)
		}
		_ = b.Close()
	}
	check("restore at 50")
	for _, s := range both {
		stageAndCommit(t, s, withTerm(ents(4, 51, 55, 100), 4, 5), nil)
	}
	check("append after restore")
}

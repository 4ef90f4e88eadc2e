package raftnode

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
)

// Crash tests of the two-DB layout (Config.StateDB without a WAL). A crash
// is a copy of a node's filesystem as synced at that moment
// (vfs.MemFS.CrashClone): unsynced writes, the state DB's memtable
// included, are lost. The node is restarted on the copy.

// crash stops node id and returns its disk as a crash at the call would
// have left it (the node's later writes, Stop's state flush included, go
// to the discarded filesystem).
func (c *testCluster) crash(id uint64) *vfs.MemFS {
	c.t.Helper()
	clone := c.nodes[id].fs.(*vfs.MemFS).CrashClone(vfs.CrashCloneCfg{})
	c.stopNode(id)
	return clone
}

// onDisk opens a stopped node's DBs and returns what the group restarts
// from: the state's applied index and the log's bounds (loadStorage fails
// on an inconsistent pair).
func onDisk(t *testing.T, fs vfs.FS, group uint64) (applied, first, last uint64) {
	t.Helper()
	db, sdb := openDB(t, fs), openStateDB(t, fs)
	defer func() {
		if err := sdb.Close(); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	s, _, err := loadStorage(db, sdb, group)
	if err != nil {
		t.Fatal(err)
	}
	first, last, applied = s.bounds()
	return applied, first, last
}

// checkAppliedOnce: every entry the node's state counts was applied once.
func checkAppliedOnce(t *testing.T, n *testNode, group uint64, want int) {
	t.Helper()
	c := counts(t, n.sdb, group)
	if len(c) != want {
		t.Fatalf("node %d: %d entries applied, want %d", n.id, len(c), want)
	}
	for idx, k := range c {
		if k != 1 {
			t.Fatalf("node %d: entry %d applied %d times", n.id, idx, k)
		}
	}
}

// TestStateCrashReplay: replicas whose state DB has no WAL crash (1)
// before any flush of their state, (2) after a flush, while their log
// truncation waits for the next one, (3) a leader that never flushed; each
// restarts from its last flush, replays its log and ends with the state of
// the replicas that did not crash, key for key, every entry applied once.
// On the way: a replica never truncates its log past the applied index
// its state DB made durable, whatever the leader's truncation target.
func TestStateCrashReplay(t *testing.T) {
	const g = 1
	c := newClusterOpts(t, 3, nodeOpts{logRetain: 8, split: true, crashable: true,
		stateFlushBytes: 1 << 40, stateFlushInterval: time.Hour}, g)
	lead := c.leader(g)
	checkResults(t, proposeAll(t, lead.host, g, "a", 100))
	c.converged(g)
	st, err := lead.host.Status(g)
	if err != nil {
		t.Fatal(err)
	}
	// The leader proposes truncations (the applied index passes the 100
	// proposals) and every replica applies them, but no state was
	// flushed, so no log may shrink.
	checkFor(t, 10*time.Second, func() error {
		for id, n := range c.nodes {
			s, err := n.host.Status(g)
			if err != nil {
				return err
			}
			if s.Applied <= st.Applied {
				return fmt.Errorf("node %d: applied %d, no truncation entry after %d yet", id, s.Applied, st.Applied)
			}
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond) // ten ticks: a truncation would happen now
	for id, n := range c.nodes {
		if s, _ := n.host.Status(g); s.FirstIndex != 1 {
			t.Fatalf("node %d truncated its log to %d with no state flushed", id, s.FirstIndex-1)
		}
	}

	// (1) A follower crashes before any flush: its state is gone, and it
	// rebuilds it from its whole log.
	f := c.follower(g, lead)
	fid := f.id
	fs := c.crash(fid)
	if applied, first, _ := onDisk(t, fs, g); applied >= st.Applied || first != 1 {
		t.Fatalf("after the crash: applied %d (the crash should have lost the state), first index %d", applied, first)
	}
	c.start(fid, fs)
	c.converged(g)
	checkAppliedOnce(t, c.nodes[fid], g, 100)

	// (2) The follower flushes its state at d; the group goes on; the
	// follower truncates its log to d and no further, the leader (never
	// flushed) not at all. Then it crashes: it restarts from d.
	f = c.nodes[fid]
	if err := f.host.flushState(); err != nil {
		t.Fatal(err)
	}
	fg, err := f.host.lookup(g)
	if err != nil {
		t.Fatal(err)
	}
	d := fg.st.durableApplied()
	lead = c.leader(g)
	checkResults(t, proposeAll(t, lead.host, g, "b", 100))
	c.converged(g)
	checkFor(t, 10*time.Second, func() error {
		s, err := f.host.Status(g)
		if err != nil {
			return err
		}
		if s.FirstIndex != d+1 {
			return fmt.Errorf("follower's first index %d, want %d (durable applied %d, applied %d)", s.FirstIndex, d+1, d, s.Applied)
		}
		if s.LastIndex <= d+50 {
			return fmt.Errorf("follower's last index %d: the second round of proposals is not in its log", s.LastIndex)
		}
		return nil
	})
	if s, _ := lead.host.Status(g); s.FirstIndex != 1 {
		t.Fatalf("the leader truncated its log to %d with no state flushed", s.FirstIndex-1)
	}
	fs = c.crash(fid)
	// The truncation's write is not synced: the log may start earlier
	// after the crash, never later than d+1.
	if applied, first, _ := onDisk(t, fs, g); applied != d || first > d+1 {
		t.Fatalf("after the crash: applied %d, first index %d; want %d, at most %d", applied, first, d, d+1)
	}
	c.start(fid, fs)
	c.converged(g)
	checkAppliedOnce(t, c.nodes[fid], g, 200)

	// (3) The leader, which never flushed, crashes; the group goes on
	// without it, and it catches up after replaying its log.
	lead = c.leader(g)
	lid := lead.id
	fs = c.crash(lid)
	if applied, first, _ := onDisk(t, fs, g); applied >= d || first != 1 {
		t.Fatalf("the leader after the crash: applied %d, first index %d", applied, first)
	}
	checkResults(t, proposeAll(t, c.leader(g).host, g, "c", 50))
	c.start(lid, fs)
	c.converged(g)
	checkAppliedOnce(t, c.nodes[lid], g, 250)
	checkAppliedOnce(t, c.nodes[fid], g, 250)
}

// TestStateFlushBounds: with a short interval, a replica flushes its
// state by itself and truncates behind it; with flushes far away, a clean
// stop flushes, so the state on disk is the applied one and a restart
// replays nothing.
func TestStateFlushBounds(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := nodeOpts{peers: []uint64{1}, groups: []uint64{1}, logRetain: 8, split: true, stateFlushInterval: 50 * time.Millisecond}
	n := startNode(t, 1, fs, o)
	defer func() { n.stop(t) }()
	if _, err := n.host.WaitLeader(ctxTimeout(t, 5*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	checkResults(t, proposeAll(t, n.host, 1, "a", 100))
	checkFor(t, 10*time.Second, func() error {
		s, err := n.host.Status(1)
		if err != nil {
			return err
		}
		if s.FirstIndex < 50 {
			return fmt.Errorf("first index %d (applied %d, state flushes %d)", s.FirstIndex, s.Applied, n.host.StateFlushes())
		}
		return nil
	})
	n.stop(t)

	o.stateFlushInterval, o.stateFlushBytes = time.Hour, 1<<40
	n = startNode(t, 1, fs, o)
	if _, err := n.host.WaitLeader(ctxTimeout(t, 5*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	checkResults(t, proposeAll(t, n.host, 1, "b", 10))
	st, _ := n.host.Status(1)
	n.stop(t)
	if applied, _, _ := onDisk(t, fs.CrashClone(vfs.CrashCloneCfg{}), 1); applied != st.Applied {
		t.Fatalf("after a clean stop the state is at %d, applied was %d", applied, st.Applied)
	}
	n = startNode(t, 1, fs, o)
	if _, err := n.host.WaitLeader(ctxTimeout(t, 5*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	checkResults(t, proposeAll(t, n.host, 1, "c", 10))
	checkAppliedOnce(t, n, 1, 120)
}

// splitSnapshotFixture is a host in two-DB mode with group g's old state
// (log 1..5 of term 1, applied 5, a stale key) and another group's
// applied index, all synced, and a received snapshot at (100, 4).
type splitSnapshotFixture struct {
	fs      *vfs.MemFS
	db, sdb *pebble.DB
	h       *Host
	meta    *pb.SnapshotMetadata
	path    string
}

const fixGroup = 3

func fixState(suffix byte) []byte { return append(keys.StatePrefix(fixGroup), 0x40, suffix) }

func newSplitHost(t *testing.T, fs vfs.FS, db, sdb *pebble.DB) *Host {
	t.Helper()
	h, err := NewHost(Config{NodeID: 1, DB: db, StateDB: sdb, SnapshotFS: fs, SnapshotDir: "snap", Logger: testLogger(t),
		StateFlushBytes: 1 << 40, StateFlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func newSplitSnapshotFixture(t *testing.T) *splitSnapshotFixture {
	t.Helper()
	const g = fixGroup
	x := &splitSnapshotFixture{fs: vfs.NewCrashableMem()}
	x.db, x.sdb = openDB(t, x.fs), openStateDB(t, x.fs)
	b := x.db.NewBatch()
	for i := uint64(1); i <= 5; i++ {
		v, _ := proto.Marshal(&pb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(1)})
		_ = b.Set(keys.LogEntry(g, i), v, nil)
	}
	hs, _ := proto.Marshal(&pb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(5)})
	_ = b.Set(keys.HardState(g), hs, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	cs1, _ := proto.Marshal(&pb.ConfState{Voters: []uint64{1}})
	sb := x.sdb.NewBatch()
	_ = sb.Set(keys.ConfState(g), cs1, nil)
	_ = sb.Set(fixState('z'), []byte("stale"), nil)
	_ = sb.Set(keys.AppliedIndex(g), binary.BigEndian.AppendUint64(nil, 5), nil)
	_ = sb.Set(keys.AppliedIndex(g+1), binary.BigEndian.AppendUint64(nil, 7), nil)
	if err := sb.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := x.sdb.Flush(); err != nil {
		t.Fatal(err)
	}
	x.h = newSplitHost(t, x.fs, x.db, x.sdb)
	if err := x.h.AddGroup(g, nil, &testSM{group: g}); err != nil {
		t.Fatal(err)
	}
	x.meta = &pb.SnapshotMetadata{Index: proto.Uint64(100), Term: proto.Uint64(4), ConfState: &pb.ConfState{Voters: []uint64{1, 2}}}
	cs, _ := proto.Marshal(x.meta.GetConfState())
	chunk := appendRecord(nil, keys.AppliedIndex(g), binary.BigEndian.AppendUint64(nil, 100))
	chunk = appendRecord(chunk, keys.ConfState(g), cs)
	chunk = appendRecord(chunk, fixState('a'), []byte("new"))
	var err error
	if x.path, err = x.h.writeSnapshotFile(context.Background(), g, x.meta, &sliceData{chunks: [][]byte{chunk}}); err != nil {
		t.Fatal(err)
	}
	return x
}

func (x *splitSnapshotFixture) close(t *testing.T) {
	t.Helper()
	x.h.Stop()
	if err := x.sdb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := x.db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotInstallCrashPoints: a snapshot install in two-DB mode
// interrupted by a crash at each of its steps restarts with either the
// old state and log (before the install is recorded in the log DB) or the
// complete snapshot (after), never a mix, with no files left behind; a
// completed install is durable without a later flush.
func TestSnapshotInstallCrashPoints(t *testing.T) {
	const g = fixGroup
	for _, point := range []string{"install-staged", "install-marked", "install-ingested", "install-flushed", "install-logged", "done"} {
		t.Run(point, func(t *testing.T) {
			x := newSplitSnapshotFixture(t)
			var crashed *vfs.MemFS
			x.h.testHook = func(step string) {
				if step == point {
					crashed = x.fs.CrashClone(vfs.CrashCloneCfg{})
				}
			}
			grp, _ := x.h.lookup(g)
			grp.stepped = []*stagedSnap{{path: x.path, index: 100, term: 4}}
			if err := x.h.installSnapshot(grp, &pb.Snapshot{Metadata: x.meta}); err != nil {
				t.Fatal(err)
			}
			if point == "done" {
				crashed = x.fs.CrashClone(vfs.CrashCloneCfg{})
			}
			x.close(t)
			if crashed == nil {
				t.Fatalf("the install never reached %s", point)
			}

			db, sdb := openDB(t, crashed), openStateDB(t, crashed)
			defer func() { _ = sdb.Close(); _ = db.Close() }()
			h := newSplitHost(t, crashed, db, sdb)
			defer h.Stop()
			if err := h.AddGroup(g, nil, &testSM{group: g}); err != nil {
				t.Fatal(err)
			}
			dump, err := stateDump(sdb, g)
			if err != nil {
				t.Fatal(err)
			}
			s, _, err := loadStorage(db, sdb, g)
			if err != nil {
				t.Fatal(err)
			}
			first, last, applied := s.bounds()
			if point == "install-staged" {
				cs1, _ := proto.Marshal(&pb.ConfState{Voters: []uint64{1}})
				want := fmt.Sprintf("%s=%x\n%s=%x\n%s=%x\n",
					keys.Pretty(keys.AppliedIndex(g)), binary.BigEndian.AppendUint64(nil, 5),
					keys.Pretty(keys.ConfState(g)), cs1,
					keys.Pretty(fixState('z')), "stale")
				if dump != want || first != 1 || last != 5 || applied != 5 {
					t.Fatalf("old state expected: first %d last %d applied %d, state:\n%s\nwant:\n%s", first, last, applied, dump, want)
				}
			} else {
				cs, _ := proto.Marshal(x.meta.GetConfState())
				want := fmt.Sprintf("%s=%x\n%s=%x\n%s=%x\n",
					keys.Pretty(keys.AppliedIndex(g)), binary.BigEndian.AppendUint64(nil, 100),
					keys.Pretty(keys.ConfState(g)), cs,
					keys.Pretty(fixState('a')), "new")
				if dump != want || first != 101 || last != 100 || applied != 100 || s.truncTerm != 4 ||
					s.hardState.GetCommit() < 100 || len(s.confState.GetVoters()) != 2 {
					t.Fatalf("snapshot expected: first %d last %d applied %d truncTerm %d hs %v cs %v, state:\n%s\nwant:\n%s",
						first, last, applied, s.truncTerm, s.hardState, s.confState, dump, want)
				}
			}
			if v, ok, _ := getValue(sdb, keys.AppliedIndex(g+1)); !ok || binary.BigEndian.Uint64(v) != 7 {
				t.Fatal("another group's state was touched")
			}
			if _, ok, _ := getValue(db, keys.RestoreMarker(g)); ok {
				t.Fatal("restore marker left behind")
			}
			if names, _ := crashed.List("snap"); len(names) != 0 {
				t.Fatalf("snapshot files left behind: %v", names)
			}
		})
	}
}

// TestRemoveGroupCrashPoints: a removal in two-DB mode interrupted by a
// crash after the log went (its state still there) or after the state
// went (the marker still there) never leaves a group that serves: the
// log and state found without the marker are refused, and with it the
// next AddGroup finishes the removal; the group then starts empty, and
// the other group keeps its state.
func TestRemoveGroupCrashPoints(t *testing.T) {
	for _, point := range []string{"remove-logged", "remove-cleared"} {
		t.Run(point, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			n := startNode(t, 1, fs, nodeOpts{peers: []uint64{1}, groups: []uint64{1, 2}, split: true,
				stateFlushBytes: 1 << 40, stateFlushInterval: time.Hour})
			defer func() { n.stop(t) }()
			for _, g := range []uint64{1, 2} {
				if _, err := n.host.WaitLeader(ctxTimeout(t, 5*time.Second), g); err != nil {
					t.Fatal(err)
				}
				checkResults(t, proposeAll(t, n.host, g, "a", 20))
			}
			if err := n.host.flushState(); err != nil {
				t.Fatal(err)
			}
			var crashed *vfs.MemFS
			n.host.testHook = func(step string) {
				if step == point {
					crashed = fs.CrashClone(vfs.CrashCloneCfg{})
				}
			}
			if err := n.host.RemoveGroup(ctxTimeout(t, 10*time.Second), 1, 0); err != nil {
				t.Fatal(err)
			}
			n.stop(t)
			if crashed == nil {
				t.Fatalf("the removal never reached %s", point)
			}

			db, sdb := openDB(t, crashed), openStateDB(t, crashed)
			defer func() { _ = sdb.Close(); _ = db.Close() }()
			if _, ok, _ := getValue(db, keys.RemoveMarker(1)); !ok {
				t.Fatal("no removal marker on disk")
			}
			if point == "remove-logged" {
				// What the marker guards against: a state without its log.
				if _, _, err := loadStorage(db, sdb, 1); err == nil {
					t.Fatal("a state without its log loads")
				}
			}
			h := newSplitHost(t, crashed, db, sdb)
			defer h.Stop()
			sm := &testSM{group: 1}
			if err := h.JoinGroup(1, sm); err != nil {
				t.Fatal(err)
			}
			if err := h.AddGroup(2, nil, &testSM{group: 2}); err != nil {
				t.Fatal(err)
			}
			if k := keysIn(t, sdb, keys.StatePrefix(1), keys.StateEnd(1)); k != 0 {
				t.Fatalf("%d state keys of the removed group left", k)
			}
			if st, err := h.Status(1); err != nil || st.Applied != 0 || st.LastIndex != 0 {
				t.Fatalf("the removed group restarts with %+v, %v; want empty", st, err)
			}
			if _, ok, _ := getValue(db, keys.RemoveMarker(1)); ok {
				t.Fatal("removal marker left behind")
			}
			if got := len(counts(t, sdb, 2)); got < 20 {
				t.Fatalf("the other group's state: %d entries", got)
			}
		})
	}
}

// TestLogFlushFollowsStateFlush: with LogFlushBytes, the host flushes the
// log DB after a state flush once that many log bytes were written (the
// log's own memtable, 4 MiB here, never fills); without, it does not.
func TestLogFlushFollowsStateFlush(t *testing.T) {
	for _, every := range []int64{0, 1} {
		t.Run(fmt.Sprint(every), func(t *testing.T) {
			n := startNode(t, 1, vfs.NewMem(), nodeOpts{peers: []uint64{1}, groups: []uint64{1}, split: true,
				stateFlushInterval: 20 * time.Millisecond, logFlushBytes: every})
			defer n.stop(t)
			if _, err := n.host.WaitLeader(ctxTimeout(t, 5*time.Second), 1); err != nil {
				t.Fatal(err)
			}
			checkResults(t, proposeAll(t, n.host, 1, "a", 50))
			checkFor(t, 5*time.Second, func() error {
				if n.host.StateFlushes() < 1 {
					return fmt.Errorf("%d state flushes", n.host.StateFlushes())
				}
				return nil
			})
			time.Sleep(100 * time.Millisecond) // two ticks and the flush
			flushes := n.db.Metrics().Flush.Count
			if (every > 0) != (flushes > 0) {
				t.Fatalf("LogFlushBytes %d: the log DB flushed %d times", every, flushes)
			}
		})
	}
}

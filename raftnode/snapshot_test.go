package raftnode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
)

// TestSnapshotCatchUpAfterRestart: a follower is down while the others
// truncate far past it; restarted on its old disk it catches up by snapshot
// and ends with the leader's state byte for byte.
func TestSnapshotCatchUpAfterRestart(t *testing.T) {
	const g = 1
	c := newCluster(t, 3, 10, g)
	lead := c.leader(g)
	f := c.follower(g, lead)
	checkResults(t, proposeAll(t, lead.host, g, "a", 30))
	c.converged(g)
	fSt, _ := f.host.Status(g)
	fs := c.stopNode(f.id)

	c.proposeUntilTruncated(g, fSt.LastIndex+50)
	// Summed over the nodes: leadership may move (10 ms ticks, -race).
	snapshotsSent := func() (sum uint64) {
		for _, n := range c.nodes {
			sum += n.host.SnapshotsSent()
		}
		return sum
	}
	sent := snapshotsSent()

	c.start(f.id, fs)
	f = c.nodes[f.id]
	c.converged(g)
	// The counter and the Restored call follow the round's log commit,
	// after the snapshot's state is in the state DB (which converged
	// reads): wait for them rather than read them once.
	checkFor(t, 10*time.Second, func() error {
		if f.host.SnapshotsApplied() == 0 || f.sms[g].restored.Load() == 0 {
			return fmt.Errorf("follower caught up without a snapshot (applied %d, Restored calls %d)",
				f.host.SnapshotsApplied(), f.sms[g].restored.Load())
		}
		return nil
	})
	if snapshotsSent() == sent {
		t.Fatal("no node sent a snapshot")
	}
	// The group keeps working, and the follower keeps up from the log.
	checkResults(t, proposeAll(t, c.leader(g).host, g, "b", 30))
	c.converged(g)
	st, _ := f.host.Status(g)
	if st.Applied < fSt.LastIndex+50 || st.FirstIndex <= fSt.LastIndex {
		t.Fatalf("follower status after catch-up: %+v", st)
	}
	checkNoDoubleApply(t, c, g)
}

// TestSnapshotWipedFollower: a follower's log and state are lost but its
// incarnation is not (a data directory restored from an old backup: a
// wiped one is fenced, see TestWipedMemberCannotVoteTwice); it rejoins with
// the same id and peer list and catches up by snapshot while proposals keep
// committing (the recovery aids of DESIGN.md, "Wiped members").
func TestSnapshotWipedFollower(t *testing.T) {
	const g = 1
	c := newCluster(t, 3, 10, g)
	lead := c.leader(g)
	f := c.follower(g, lead)
	checkResults(t, proposeAll(t, lead.host, g, "a", 30))
	inc := f.host.Incarnation()
	c.stopNode(f.id)
	lead = c.proposeUntilTruncated(g, 40)

	// Proposals keep committing on the leader side while the wiped node
	// catches up (leadership may move once: see handOffLeadership).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop); wg.Wait() }) }
	defer halt()
	var committed, failed atomic.Int64
	hosts := map[uint64]*Host{}
	for id, n := range c.nodes {
		hosts[id] = n.host
	}
	wg.Go(func() {
		leader := lead.id
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := hosts[leader].Propose(ctx, g, fmt.Appendf(nil, "during-%d", i))
			cancel()
			var nl *NotLeaderError
			switch {
			case err == nil:
				committed.Add(1)
			case errors.As(err, &nl) && hosts[nl.LeaderID] != nil:
				leader = nl.LeaderID
			default:
				failed.Add(1) // leadership moving: outcome unknown, retried
				if st, _ := hosts[leader].Status(g); st.LeaderID != 0 && hosts[st.LeaderID] != nil {
					leader = st.LeaderID
				}
			}
		}
	})
	c.start(f.id, withIncarnation(t, inc))
	f = c.nodes[f.id]
	checkFor(t, 20*time.Second, func() error {
		if f.host.SnapshotsApplied() == 0 {
			return errors.New("no snapshot applied yet")
		}
		return nil
	})
	before := committed.Load()
	checkFor(t, 10*time.Second, func() error {
		if committed.Load() < before+20 {
			return fmt.Errorf("only %d proposals committed since the snapshot", committed.Load()-before)
		}
		return nil
	})
	halt()
	t.Logf("%d proposals committed, %d failed during leader changes", committed.Load(), failed.Load())
	c.converged(g)
	checkNoDoubleApply(t, c, g)
}

// TestSnapshotLargeInChunks: a state of many chunks travels chunk by chunk,
// and the group keeps committing proposals while the transfer is held
// mid-way.
func TestSnapshotLargeInChunks(t *testing.T) {
	if testing.Short() {
		t.Log("short mode: a smaller state")
	}
	const g = 1
	// LogRetain above the 50 proposals made during the transfer: the
	// follower then catches up from the log after the snapshot.
	// Slower ticks: apply and transfer rounds under -race must not often
	// look like a dead leader (when one does, the leader moves, which the
	// proposals below follow).
	// 256 KiB chunks: the 12.5 MB state below is ~50 chunks, as many as a
	// 50 MB state in the default 1 MiB chunks, for a quarter of the CPU
	// (the test runs under -race in CI, on a shared 2-core machine).
	c := newClusterOpts(t, 3, nodeOpts{tick: 50 * time.Millisecond, logRetain: 64, snapshotChunk: 256 << 10}, g)
	lead := c.leader(g)
	f := c.follower(g, lead)
	fSt, _ := f.host.Status(g)
	fs := c.stopNode(f.id)

	// 12,500 keys of 1 KiB, 250 per entry: small apply rounds keep the
	// loops ticking.
	keysPer, batches := 250, 50
	if testing.Short() {
		batches = 10
	}
	for i := range batches {
		c.proposeRetry(g, bulkPayload(keysPer, 1024, fmt.Sprint("t", i)))
	}
	c.proposeUntilTruncated(g, fSt.LastIndex+20)

	paused := make(chan struct{})
	release := make(chan struct{})
	var pauseOnce, releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	c.net.OnSnapshotChunk(func(env Envelope, chunk int) {
		if chunk == 2 {
			pauseOnce.Do(func() {
				close(paused)
				<-release
			})
		}
	})
	c.start(f.id, fs)
	f = c.nodes[f.id]
	select {
	case <-paused:
	case <-time.After(20 * time.Second):
		t.Fatal("snapshot transfer did not start")
	}
	// The transfer is held after its first chunk: the group still commits.
	start := time.Now()
	for i := range 50 {
		c.proposeRetry(g, fmt.Appendf(nil, "during-%d", i))
	}
	t.Logf("50 proposals during the transfer took %v", time.Since(start))
	if f.host.SnapshotsApplied() != 0 {
		t.Fatal("snapshot applied while its transfer was held")
	}
	releaseAll()
	start = time.Now()
	checkFor(t, 60*time.Second, func() error {
		if f.host.SnapshotsApplied() == 0 {
			return errors.New("snapshot not applied yet")
		}
		return nil
	})
	t.Logf("snapshot applied %v after the release", time.Since(start))
	c.converged(g)
	snaps, chunks := c.net.SnapshotCounts()
	t.Logf("snapshots %d, chunks %d", snaps, chunks)
	if snaps == 0 || chunks < uint64(batches)/2 {
		t.Fatalf("snapshots %d, chunks %d: want a snapshot in at least %d chunks", snaps, chunks, batches/2)
	}
	if f.host.SnapshotsApplied() == 0 {
		t.Fatal("no snapshot applied")
	}
}

// proposeRetry proposes data on the current leader, retrying on leader
// changes (data must be idempotent), and returns the leader that took it.
func (c *testCluster) proposeRetry(group uint64, data []byte) *testNode {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		lead := c.leader(group)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := lead.host.Propose(ctx, group, data)
		cancel()
		if err == nil {
			return lead
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("propose: %v", err)
		}
	}
}

// checkNoDoubleApply checks that no node applied an entry twice.
func checkNoDoubleApply(t *testing.T, c *testCluster, group uint64) {
	t.Helper()
	for id, n := range c.nodes {
		for idx, k := range counts(t, n.sdb, group) {
			if k != 1 {
				t.Fatalf("node %d applied entry %d %d times", id, idx, k)
			}
		}
	}
}

// sliceData is SnapshotData over fixed chunks.
type sliceData struct{ chunks [][]byte }

func (d *sliceData) Next() ([]byte, error) {
	if len(d.chunks) == 0 {
		return nil, io.EOF
	}
	c := d.chunks[0]
	d.chunks = d.chunks[1:]
	return c, nil
}

// TestSnapshotInstall checks the install itself: old state keys and log
// entries go, the snapshot's keys and truncation point arrive, a write
// after the install survives, other groups are untouched; bad data is
// refused; and an install interrupted after clearing the state is finished
// by the next AddGroup.
func TestSnapshotInstall(t *testing.T) {
	const g = 3
	fs := vfs.NewMem()
	db := openDB(t, fs)
	defer func() { _ = db.Close() }()
	newHost := func() *Host {
		h, err := NewHost(Config{NodeID: 1, DB: db, SnapshotFS: fs, SnapshotDir: "snap", Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	h := newHost()

	state := func(suffix byte) []byte { return append(keys.StatePrefix(g), 0x40, suffix) }
	// Old state: log 1..5 (term 1, committed), a stale state key, applied
	// 5; another group.
	b := db.NewBatch()
	for i := uint64(1); i <= 5; i++ {
		v, _ := proto.Marshal(&pb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(1)})
		_ = b.Set(keys.LogEntry(g, i), v, nil)
	}
	hs, _ := proto.Marshal(&pb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(5)})
	cs1, _ := proto.Marshal(&pb.ConfState{Voters: []uint64{1}})
	_ = b.Set(keys.HardState(g), hs, nil)
	_ = b.Set(keys.ConfState(g), cs1, nil)
	_ = b.Set(state('z'), []byte("stale"), nil)
	_ = b.Set(keys.AppliedIndex(g), binary.BigEndian.AppendUint64(nil, 5), nil)
	_ = b.Set(keys.AppliedIndex(g+1), binary.BigEndian.AppendUint64(nil, 7), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := h.AddGroup(g, nil, &testSM{group: g}); err != nil {
		t.Fatal(err)
	}

	meta := &pb.SnapshotMetadata{Index: proto.Uint64(100), Term: proto.Uint64(4), ConfState: &pb.ConfState{Voters: []uint64{1, 2}}}
	cs, _ := proto.Marshal(meta.GetConfState())
	chunk1 := appendRecord(nil, keys.AppliedIndex(g), binary.BigEndian.AppendUint64(nil, 100))
	chunk1 = appendRecord(chunk1, keys.ConfState(g), cs)
	chunk2 := appendRecord(nil, state('a'), []byte("new"))
	write := func() string {
		path, err := h.writeSnapshotFile(context.Background(), g, meta, &sliceData{chunks: [][]byte{chunk1, chunk2}})
		if err != nil {
			t.Fatal(err)
		}
		return path
	}

	if _, err := h.writeSnapshotFile(context.Background(), g, meta, &sliceData{chunks: [][]byte{chunk2, chunk1}}); err == nil {
		t.Fatal("out-of-order snapshot data accepted")
	}
	wrongIndex := proto.CloneOf(meta)
	wrongIndex.Index = proto.Uint64(99)
	if _, err := h.writeSnapshotFile(context.Background(), g, wrongIndex, &sliceData{chunks: [][]byte{chunk1}}); err == nil {
		t.Fatal("snapshot data at another applied index accepted")
	}

	grp, _ := h.lookup(g)
	grp.stepped = []*stagedSnap{{path: write(), index: 100, term: 4}}
	if err := h.installSnapshot(grp, &pb.Snapshot{Metadata: meta}); err != nil {
		t.Fatal(err)
	}
	grp.stepped = nil
	// An entry after the snapshot, written later, survives.
	v, _ := proto.Marshal(&pb.Entry{Index: proto.Uint64(101), Term: proto.Uint64(4)})
	if err := db.Set(keys.LogEntry(g, 101), v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s=%x\n%s=%x\n%s=%x\n",
		keys.Pretty(keys.AppliedIndex(g)), binary.BigEndian.AppendUint64(nil, 100),
		keys.Pretty(keys.ConfState(g)), cs,
		keys.Pretty(state('a')), "new")
	check := func(when string) {
		t.Helper()
		dump, err := stateDump(db, g)
		if err != nil {
			t.Fatal(err)
		}
		if dump != want {
			t.Fatalf("%s: state:\n%s\nwant:\n%s", when, dump, want)
		}
		s, _, err := loadStorage(db, db, g)
		if err != nil {
			t.Fatal(err)
		}
		first, last, applied := s.bounds()
		if first != 101 || last != 101 || applied != 100 || s.truncTerm != 4 || len(s.confState.GetVoters()) != 2 ||
			s.hardState.GetCommit() != 100 {
			t.Fatalf("%s: first %d last %d applied %d truncTerm %d cs %v hs %v", when, first, last, applied, s.truncTerm, s.confState, s.hardState)
		}
		if v, ok, _ := getValue(db, keys.AppliedIndex(g+1)); !ok || binary.BigEndian.Uint64(v) != 7 {
			t.Fatalf("%s: another group's state was touched", when)
		}
		if names, _ := fs.List("snap"); len(names) != 0 {
			t.Fatalf("%s: snapshot files left behind: %v", when, names)
		}
	}
	check("after install")
	_ = db.Delete(keys.RestoreMarker(g), pebble.Sync) // the round's batch does it
	h.Stop()

	// A crash after the clearing batch, before the ingest: the next
	// AddGroup ingests the install file.
	h = newHost()
	defer func() { h.Stop() }()
	if err := fs.Rename(write(), h.installFile(g)); err != nil {
		t.Fatal(err)
	}
	b = db.NewBatch()
	_ = b.DeleteRange(keys.StatePrefix(g), keys.StateEnd(g), nil)
	_ = b.Set(keys.RestoreMarker(g), binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, 100), 4), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := h.AddGroup(g, nil, &testSM{group: g}); err != nil {
		t.Fatal(err)
	}
	check("after recovery")
	if _, ok, _ := getValue(db, keys.RestoreMarker(g)); ok {
		t.Fatal("restore marker left behind")
	}
	h.Stop()

	// The same crash with the file lost: the group refuses to start.
	h = newHost()
	b = db.NewBatch()
	_ = b.DeleteRange(keys.StatePrefix(g), keys.StateEnd(g), nil)
	_ = b.Set(keys.RestoreMarker(g), binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, 100), 4), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := h.AddGroup(g, nil, &testSM{group: g}); err == nil {
		t.Fatal("group with an incomplete state started")
	}
}

// withIncarnation returns an empty filesystem whose data directory has only
// the given incarnation (a backup taken before the node held any data).
func withIncarnation(t *testing.T, inc uint64) vfs.FS {
	t.Helper()
	fs := vfs.NewMem()
	db := openDB(t, fs)
	if err := db.Set(keys.NodeIncarnation(), binary.BigEndian.AppendUint64(nil, inc), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return fs
}

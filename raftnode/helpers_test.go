package raftnode

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/quorumq/quorumq/internal/keys"
)

// checkFor polls cond until it returns nil or the deadline passes.
func checkFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		<-tick.C
	}
}

type quietPebble struct{}

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (quietPebble) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

func openDB(t testing.TB, fs vfs.FS) *pebble.DB {
	t.Helper()
	db, err := pebble.Open("db", &pebble.Options{FS: fs, Logger: quietPebble{}})
	if err != nil {
		t.Fatalf("open pebble: %v", err)
	}
	return db
}

// oneDB: the test hosts keep the state in the log's DB (Config.StateDB
// nil) instead of a second DB without a WAL, the node's layout. Set
// RAFTNODE_ONE_DB=1 to run the package's tests that way.
var oneDB = os.Getenv("RAFTNODE_ONE_DB") == "1"

// openStateDB opens a state DB without a WAL, as the node does.
func openStateDB(t testing.TB, fs vfs.FS) *pebble.DB {
	t.Helper()
	db, err := pebble.Open("state", &pebble.Options{FS: fs, Logger: quietPebble{}, DisableWAL: true})
	if err != nil {
		t.Fatalf("open pebble (state): %v", err)
	}
	return db
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// syncCountingFS counts syncs of WAL files (*.log).
type syncCountingFS struct {
	vfs.FS
	walSyncs atomic.Int64
}

func (fs *syncCountingFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return &countingFile{File: f, n: &fs.walSyncs}, nil
}

func (fs *syncCountingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs *syncCountingFS) ReuseForWrite(old, name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(old, name, c)
	return fs.wrap(name, f, err)
}

func (fs *syncCountingFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	return fs.wrap(name, f, err)
}

type countingFile struct {
	vfs.File
	n *atomic.Int64
}

func (f *countingFile) Sync() error     { f.n.Add(1); return f.File.Sync() }
func (f *countingFile) SyncData() error { f.n.Add(1); return f.File.SyncData() }
func (f *countingFile) SyncTo(l int64) (bool, error) {
	f.n.Add(1)
	return f.File.SyncTo(l)
}

// applyResult is what testSM.Apply returns.
type applyResult struct {
	Index uint64
	Data  string
}

// testSM is a deterministic state machine that persists, per group, the
// number of times each index was applied (0x10 index -> count) and the
// payload (0x11 index -> data). A count above 1 is a double apply.
//
// A payload "bulk:<n>:<size>:<tag>" also writes n keys (0x12 tag i) of size
// bytes each, to make large states cheaply.
type testSM struct {
	group  uint64
	failOn string // Apply returns an error for this payload
	// blockOn: Apply of this payload signals blocked, then waits for
	// unblock (set both before proposing it).
	blockOn          string
	blocked, unblock chan struct{}

	restored atomic.Int64 // Restored calls

	mu      sync.Mutex
	applied []applyResult // AfterApply results, in order
}

func (s *testSM) Restored() { s.restored.Add(1) }

func bulkPayload(n, size int, tag string) []byte {
	return fmt.Appendf(nil, "bulk:%d:%d:%s", n, size, tag)
}

func (s *testSM) countKey(index uint64) []byte {
	return keys.AppendUint64(append(keys.StatePrefix(s.group), 0x10), index)
}

func (s *testSM) Apply(b *pebble.Batch, index uint64, data []byte) (any, error) {
	if s.failOn != "" && string(data) == s.failOn {
		return nil, errors.New("injected storage failure")
	}
	if s.blockOn != "" && string(data) == s.blockOn {
		close(s.blocked)
		<-s.unblock
	}
	k := s.countKey(index)
	var n uint64
	v, closer, err := b.Get(k)
	switch {
	case err == nil:
		n = binary.BigEndian.Uint64(v)
		_ = closer.Close()
	case !errors.Is(err, pebble.ErrNotFound):
		return nil, err
	}
	if err := b.Set(k, binary.BigEndian.AppendUint64(nil, n+1), nil); err != nil {
		return nil, err
	}
	dk := keys.AppendUint64(append(keys.StatePrefix(s.group), 0x11), index)
	if err := b.Set(dk, data, nil); err != nil {
		return nil, err
	}
	var bn, bsize int
	var tag string
	if _, err := fmt.Sscanf(string(data), "bulk:%d:%d:%s", &bn, &bsize, &tag); err == nil {
		v := bytes.Repeat([]byte{byte(index)}, bsize)
		for i := range bn {
			k := keys.AppendUint64(keys.AppendString(append(keys.StatePrefix(s.group), 0x12), tag), uint64(i))
			if err := b.Set(k, v, nil); err != nil {
				return nil, err
			}
		}
	}
	return applyResult{Index: index, Data: string(data)}, nil
}

func (s *testSM) AfterApply(results []any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range results {
		s.applied = append(s.applied, r.(applyResult))
	}
}

func (s *testSM) results() []applyResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]applyResult(nil), s.applied...)
}

// counts reads the persisted apply counts of a group.
func counts(t testing.TB, db *pebble.DB, group uint64) map[uint64]uint64 {
	t.Helper()
	lo := append(keys.StatePrefix(group), 0x10)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: keys.PrefixEnd(lo)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	m := make(map[uint64]uint64)
	for ok := it.First(); ok; ok = it.Next() {
		m[binary.BigEndian.Uint64(it.Key()[len(lo):])] = binary.BigEndian.Uint64(it.Value())
	}
	return m
}

// stateDump renders a group's replicated key range, for convergence checks.
func stateDump(db *pebble.DB, group uint64) (string, error) {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: keys.StatePrefix(group), UpperBound: keys.StateEnd(group)})
	if err != nil {
		return "", err
	}
	defer it.Close()
	var b bytes.Buffer
	for ok := it.First(); ok; ok = it.Next() {
		fmt.Fprintf(&b, "%s=%x\n", keys.Pretty(it.Key()), it.Value())
	}
	return b.String(), it.Error()
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// testNode is one host on its own (in-memory) Pebble.
type testNode struct {
	id   uint64
	fs   vfs.FS
	db   *pebble.DB // the log
	sdb  *pebble.DB // the state: db itself if oneDB
	host *Host
	sms  map[uint64]*testSM
}

type nodeOpts struct {
	tick          time.Duration // default 10ms
	transport     Transport
	logRetain     uint64
	snapshotChunk int // Config.SnapshotChunkBytes (default 1 MiB)
	peers         []uint64
	groups        []uint64
	join          bool // JoinGroup instead of AddGroup
	split         bool // a state DB even if oneDB
	crashable     bool // newClusterOpts: nodes on vfs.NewCrashableMem
	// Config.StateFlushBytes and StateFlushInterval (defaults if 0).
	stateFlushBytes    int64
	stateFlushInterval time.Duration
	logFlushBytes      int64 // Config.LogFlushBytes
}

func startNode(t testing.TB, id uint64, fs vfs.FS, o nodeOpts) *testNode {
	t.Helper()
	n := &testNode{id: id, fs: fs, db: openDB(t, fs), sms: make(map[uint64]*testSM)}
	n.sdb = n.db
	if !oneDB || o.split {
		n.sdb = openStateDB(t, fs)
	}
	if o.tick == 0 {
		o.tick = 10 * time.Millisecond
	}
	if o.stateFlushInterval == 0 {
		// Truncation waits for a state flush: the tests expect it within
		// a few ticks, not the default 5 s.
		o.stateFlushInterval = 100 * time.Millisecond
	}
	h, err := NewHost(Config{
		NodeID:             id,
		DB:                 n.db,
		StateDB:            n.sdb,
		StateFlushBytes:    o.stateFlushBytes,
		StateFlushInterval: o.stateFlushInterval,
		LogFlushBytes:      o.logFlushBytes,
		Transport:          o.transport,
		TickInterval:       o.tick,
		LogRetain:          o.logRetain,
		SnapshotChunkBytes: o.snapshotChunk,
		Logger:             testLogger(t),
		SnapshotFS:         fs,
		SnapshotDir:        "snapshots",
	})
	if err != nil {
		t.Fatal(err)
	}
	n.host = h
	for _, g := range o.groups {
		sm := &testSM{group: g}
		n.sms[g] = sm
		add := func() error { return h.AddGroup(g, o.peers, sm) }
		if o.join {
			add = func() error { return h.JoinGroup(g, sm) }
		}
		if err := add(); err != nil {
			t.Fatal(err)
		}
	}
	h.Start()
	return n
}

// stop stops the host and closes its DB (the FS survives for a restart).
func (n *testNode) stop(t testing.TB) {
	t.Helper()
	if n.host == nil {
		return
	}
	n.host.Stop()
	if n.sdb != n.db {
		if err := n.sdb.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.db.Close(); err != nil {
		t.Fatal(err)
	}
	n.host, n.db, n.sdb = nil, nil, nil
}

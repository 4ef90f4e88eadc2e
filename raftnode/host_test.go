package raftnode

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// proposeAll proposes n payloads concurrently and returns the results by
// payload.
func proposeAll(t *testing.T, h *Host, group uint64, prefix string, n int) map[string]applyResult {
	t.Helper()
	ctx := ctxTimeout(t, 20*time.Second)
	var (
		mu   sync.Mutex
		out  = make(map[string]applyResult)
		errs []error
		wg   sync.WaitGroup
	)
	for i := range n {
		wg.Go(func() {
			data := fmt.Sprintf("%s-%d", prefix, i)
			v, err := h.Propose(ctx, group, []byte(data))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("propose %s: %w", data, err))
				return
			}
			out[data] = v.(applyResult)
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d proposals failed, first: %v", len(errs), errs[0])
	}
	return out
}

func checkResults(t *testing.T, res map[string]applyResult) {
	t.Helper()
	seen := make(map[uint64]string)
	for data, r := range res {
		if r.Data != data {
			t.Fatalf("proposal %q got the result of %q", data, r.Data)
		}
		if other, dup := seen[r.Index]; dup {
			t.Fatalf("index %d returned to %q and %q", r.Index, data, other)
		}
		seen[r.Index] = data
	}
}

func TestSingleNodeProposeRestart(t *testing.T) {
	fs := vfs.NewMem()
	opts := nodeOpts{peers: []uint64{1}, groups: []uint64{7}}
	n := startNode(t, 1, fs, opts)
	defer func() { n.stop(t) }()

	if _, err := n.host.WaitLeader(ctxTimeout(t, 5*time.Second), 7); err != nil {
		t.Fatal(err)
	}
	res := proposeAll(t, n.host, 7, "a", 300)
	checkResults(t, res)
	if got := n.host.Proposals(); got != 300 {
		t.Fatalf("Proposals() = %d, want 300", got)
	}
	// AfterApply saw every result, in log order.
	applied := n.sms[7].results()
	if len(applied) != 300 {
		t.Fatalf("AfterApply saw %d results, want 300", len(applied))
	}
	for i := 1; i < len(applied); i++ {
		if applied[i].Index <= applied[i-1].Index {
			t.Fatalf("AfterApply out of order: %d after %d", applied[i].Index, applied[i-1].Index)
		}
	}
	st, err := n.host.Status(7)
	if err != nil {
		t.Fatal(err)
	}
	if !st.IsLeader || st.LeaderID != 1 || st.Applied < applied[len(applied)-1].Index || len(st.Members) != 1 {
		t.Fatalf("unexpected status %+v", st)
	}
	appliedBefore := st.Applied

	// Restart on the same FS.
	n.stop(t)
	n = startNode(t, 1, fs, opts)
	st, err = n.host.Status(7)
	if err != nil {
		t.Fatal(err)
	}
	// At least what was applied before the stop: the leader may apply one
	// more entry of its own (a log truncation it proposes once the log is
	// long enough) between the status read above and the stop. Entries
	// applied twice are caught below.
	if st.Applied < appliedBefore {
		t.Fatalf("applied after restart = %d, want at least %d", st.Applied, appliedBefore)
	}
	if _, err := n.host.WaitLeader(ctxTimeout(t, 5*time.Second), 7); err != nil {
		t.Fatal(err)
	}
	res2 := proposeAll(t, n.host, 7, "b", 50)
	checkResults(t, res2)
	for _, r := range n.sms[7].results() {
		if r.Index <= appliedBefore {
			t.Fatalf("entry %d applied again after restart", r.Index)
		}
	}
	for idx, c := range counts(t, n.sdb, 7) {
		if c != 1 {
			t.Fatalf("entry %d applied %d times", idx, c)
		}
	}
	if got := len(counts(t, n.sdb, 7)); got != 350 {
		t.Fatalf("%d entries applied, want 350", got)
	}
}

// TestCrashKeepsAcknowledged crashes the node, keeping only what was synced,
// and checks that every acknowledged proposal is applied exactly once after
// recovery.
func TestCrashKeepsAcknowledged(t *testing.T) {
	fs := vfs.NewCrashableMem()
	opts := nodeOpts{peers: []uint64{1}, groups: []uint64{3}}
	n := startNode(t, 1, fs, opts)
	if _, err := n.host.WaitLeader(ctxTimeout(t, 5*time.Second), 3); err != nil {
		t.Fatal(err)
	}
	res := proposeAll(t, n.host, 3, "x", 200)
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	n.stop(t)

	n = startNode(t, 1, crashed, opts)
	defer n.stop(t)
	if _, err := n.host.WaitLeader(ctxTimeout(t, 5*time.Second), 3); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error {
		c := counts(t, n.sdb, 3)
		for data, r := range res {
			if c[r.Index] != 1 {
				return fmt.Errorf("acknowledged %q (index %d) applied %d times", data, r.Index, c[r.Index])
			}
		}
		return nil
	})
}

func TestGroupsShareSyncs(t *testing.T) {
	fs := &syncCountingFS{FS: vfs.NewMem()}
	groups := []uint64{1, 2, 3, 4}
	n := startNode(t, 1, fs, nodeOpts{peers: []uint64{1}, groups: groups})
	defer n.stop(t)
	for _, g := range groups {
		if _, err := n.host.WaitLeader(ctxTimeout(t, 5*time.Second), g); err != nil {
			t.Fatal(err)
		}
	}
	syncs0, wal0 := n.host.LogSyncs(), fs.walSyncs.Load()
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Go(func() { checkResults(t, proposeAll(t, n.host, g, "p", 200)) })
	}
	wg.Wait()
	syncs, wal := n.host.LogSyncs()-syncs0, fs.walSyncs.Load()-wal0
	t.Logf("800 proposals in 4 groups: %d synced log writes, %d WAL syncs", syncs, wal)
	if syncs == 0 || syncs >= 400 {
		t.Fatalf("synced log writes = %d, want in [1, 400)", syncs)
	}
	if wal == 0 || wal >= 400 {
		t.Fatalf("WAL syncs = %d, want in [1, 400)", wal)
	}
}

func TestLogTruncationAndRestart(t *testing.T) {
	fs := vfs.NewMem()
	opts := nodeOpts{peers: []uint64{1}, groups: []uint64{1}, logRetain: 20}
	n := startNode(t, 1, fs, opts)
	defer func() { n.stop(t) }()
	if _, err := n.host.WaitLeader(ctxTimeout(t, 5*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		proposeAll(t, n.host, 1, fmt.Sprint(i), 60)
	}
	var first uint64
	checkFor(t, 5*time.Second, func() error {
		st, err := n.host.Status(1)
		if err != nil {
			return err
		}
		if st.FirstIndex < 200 {
			return fmt.Errorf("first index %d, last %d", st.FirstIndex, st.LastIndex)
		}
		first = st.FirstIndex
		return nil
	})
	n.stop(t)
	n = startNode(t, 1, fs, opts)
	st, err := n.host.Status(1)
	if err != nil {
		t.Fatal(err)
	}
	if st.FirstIndex < first {
		t.Fatalf("first index after restart %d, before %d", st.FirstIndex, first)
	}
	if _, err := n.host.WaitLeader(ctxTimeout(t, 5*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	proposeAll(t, n.host, 1, "after", 20)
	c := counts(t, n.sdb, 1)
	if len(c) != 320 {
		t.Fatalf("%d entries applied, want 320", len(c))
	}
	for idx, k := range c {
		if k != 1 {
			t.Fatalf("entry %d applied %d times", idx, k)
		}
	}
}

func TestApplyErrorHaltsGroupOnly(t *testing.T) {
	n := startNode(t, 1, vfs.NewMem(), nodeOpts{peers: []uint64{1}, groups: []uint64{1, 2}})
	defer n.stop(t)
	for _, g := range []uint64{1, 2} {
		if _, err := n.host.WaitLeader(ctxTimeout(t, 5*time.Second), g); err != nil {
			t.Fatal(err)
		}
	}
	// Set before the proposal is queued; the loop reads it in Apply (ordered
	// by the proposal queue's mutex).
	n.sms[1].failOn = "boom"
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := n.host.Propose(ctx, 1, []byte("boom")); !errors.Is(err, ErrHalted) {
		t.Fatalf("propose on failing group: %v, want ErrHalted", err)
	}
	if _, err := n.host.Status(1); !errors.Is(err, ErrHalted) {
		t.Fatalf("status of halted group: %v", err)
	}
	if _, err := n.host.Propose(ctx, 1, []byte("again")); !errors.Is(err, ErrHalted) {
		t.Fatalf("propose on halted group: %v", err)
	}
	if _, err := n.host.Propose(ctx, 2, []byte("fine")); err != nil {
		t.Fatalf("other group: %v", err)
	}
}

func TestErrors(t *testing.T) {
	n := startNode(t, 1, vfs.NewMem(), nodeOpts{peers: []uint64{1}, groups: []uint64{1}})
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := n.host.Propose(ctx, 9, nil); !errors.Is(err, ErrGroupNotFound) {
		t.Fatalf("unknown group: %v", err)
	}
	if _, err := n.host.WaitLeader(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := n.host.ReadIndex(ctx, 1); err != nil {
		t.Fatalf("read index on single node: %v", err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.host.Propose(cctx, 1, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ctx: %v", err)
	}
	h := n.host
	n.stop(t)
	if _, err := h.Propose(ctx, 1, nil); !errors.Is(err, ErrStopped) {
		t.Fatalf("after stop: %v", err)
	}
	if err := h.AddGroup(2, []uint64{1}, &testSM{group: 2}); !errors.Is(err, ErrStopped) {
		t.Fatalf("add group after stop: %v", err)
	}
}

// The proposal queue is bounded in bytes per group: a proposal that does
// not fit fails at once with ErrOverloaded instead of queueing, a smaller
// one that fits is still taken, and a proposal into an empty queue is
// taken whatever its size. The host's loop does not run, so nothing drains.
func TestProposalQueueBoundedInBytes(t *testing.T) {
	fs := vfs.NewMem()
	db := openDB(t, fs)
	h, err := NewHost(Config{NodeID: 1, DB: db, Logger: testLogger(t), SnapshotFS: fs, SnapshotDir: "snapshots",
		MaxQueuedProposalBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	defer h.Stop()
	for _, g := range []uint64{1, 2} {
		if err := h.AddGroup(g, []uint64{1}, &testSM{group: g}); err != nil {
			t.Fatal(err)
		}
	}
	queued := make(chan error, 8)
	queue := func(g uint64, size int) {
		t.Helper()
		before := h.Proposals()
		go func() {
			_, err := h.Propose(context.Background(), g, make([]byte, size))
			queued <- err
		}()
		checkFor(t, 10*time.Second, func() error {
			if h.Proposals() == before {
				return errors.New("proposal not queued yet")
			}
			return nil
		})
	}
	for range 3 {
		queue(1, 20<<10) // 3 × (20 KiB + framing + overhead) fit in 64 KiB
	}
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := h.Propose(ctx, 1, make([]byte, 20<<10)); !errors.Is(err, ErrOverloaded) || !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("propose into a full queue: %v, want ErrOverloaded at once", err)
	}
	queue(1, 1<<10)   // still fits
	queue(2, 100<<10) // over the limit, but group 2's queue is empty
	if _, err := h.Propose(ctx, 2, []byte("x")); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("propose behind an oversized one: %v, want ErrOverloaded", err)
	}
	h.Stop()
	for range 5 {
		select {
		case err := <-queued:
			if !errors.Is(err, ErrStopped) {
				t.Fatalf("queued proposal: %v, want ErrStopped at Stop", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a queued proposal did not end at Stop")
		}
	}
}

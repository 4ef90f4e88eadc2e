package router

import (
	"context"
	"encoding/base64"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// layoutReads is a fake layout read: it records when each read started
// and answers with the layout it holds.
type layoutReads struct {
	mu      sync.Mutex
	starts  []time.Time
	layout  *storepb.ShardLayout
	err     error
	entered chan struct{} // a read started (buffered)
	release chan struct{} // closed: reads answer
}

func newLayoutReads(shards, base uint32) *layoutReads {
	rel := make(chan struct{})
	close(rel)
	return &layoutReads{layout: &storepb.ShardLayout{Shards: shards, BaseShards: base}, entered: make(chan struct{}, 100), release: rel}
}

func (f *layoutReads) read(ctx context.Context) (*storepb.ShardLayout, error) {
	f.mu.Lock()
	f.starts = append(f.starts, time.Now())
	rel := f.release
	f.mu.Unlock()
	f.entered <- struct{}{}
	select {
	case <-rel:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.layout, f.err
}

func (f *layoutReads) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.starts)
}

func testHandle(shard uint64, partition uint16) string {
	key := []byte("0123456789abcdef0123456789abcdef")
	return base64.RawURLEncoding.EncodeToString(store.EncodeHandle(store.Handle{Shard: shard, Partition: partition, Queue: 1, Seq: 1, ReceiveCount: 1}, key))
}

// noLeaders is a view that knows no leader (queue records cannot be read).
type noLeaders struct{}

func (noLeaders) Leader(context.Context, uint64) (uint64, error) {
	return 0, server.StatusError(codes.Unavailable, server.ReasonNoQuorum, "no leader", nil)
}
func (noLeaders) Hint(uint64, uint64) {}

func layoutRouter(shards int, reads *layoutReads) *Router {
	r := NewRouter(RouterConfig{Self: 1, Shards: shards, View: noLeaders{}})
	r.SetLayout(shards, shards)
	r.readLayout = reads.read
	return r
}

// A handle naming a shard the router does not know yet (added since its
// last view) makes it read the layout and route to that shard; concurrent
// callers share one read, and a call refreshes once however many of its
// handles name unknown shards.
func TestHandleOfNewShardRefreshesLayoutOnce(t *testing.T) {
	reads := newLayoutReads(5, 3)
	reads.release = make(chan struct{})
	r := layoutRouter(3, reads)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hr := handleRouter{r: r}
			tg, name, err := hr.target(context.Background(), "receipt_handle", "t", "q", testHandle(3+uint64(i%2), 2))
			if err == nil && (tg.shard != 3+uint64(i%2) || tg.partition != 2 || name != store.PartitionName("q", 2)) {
				err = errors.New("routed to " + name)
			}
			errs <- err
		}()
	}
	<-reads.entered
	close(reads.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := reads.count(); n != 1 {
		t.Fatalf("%d layout reads for 8 concurrent calls, want 1", n)
	}
	if r.shardCount() != 5 || r.baseShards() != 3 {
		t.Fatalf("layout %d (base %d) after the read, want 5 (base 3)", r.shardCount(), r.baseShards())
	}

	// One call, several unknown shards (still unknown after the read):
	// one read, and each goes to partition 0 (invalid there).
	hr := handleRouter{r: r}
	for _, shard := range []uint64{7, 8, 9} {
		tg, name, err := hr.target(context.Background(), "receipt_handle", "t", "q", testHandle(shard, 1))
		if err != nil || tg.shard != r.shardOf("t", "q", 0) || tg.partition != 0 || name != "q" {
			t.Fatalf("shard %d: %v %q %v", shard, tg, name, err)
		}
	}
	if n := reads.count(); n != 2 {
		t.Fatalf("%d layout reads, want 2 (one for the call of three unknown shards)", n)
	}
}

// What a client makes up never reads the layout: a handle that does not
// parse, or that names a shard no cluster can have. Parsable forged
// handles (the router cannot check their MAC) read it at most once per
// layoutGap.
func TestGarbageHandlesDoNotStormTheLayout(t *testing.T) {
	reads := newLayoutReads(5, 3)
	r := layoutRouter(5, reads)
	bad := []string{
		base64.RawURLEncoding.EncodeToString([]byte("not a handle at all, but base64url")),
		testHandle(store.MaxShards, 0),
		testHandle(1<<40, 0),
	}
	for _, h := range bad {
		hr := handleRouter{r: r}
		tg, _, err := hr.target(context.Background(), "receipt_handle", "t", "q", h)
		if err != nil || tg.shard != r.shardOf("t", "q", 0) {
			t.Fatalf("%q: %v %v", h, tg, err)
		}
	}
	if _, _, err := (&handleRouter{r: r}).target(context.Background(), "receipt_handle", "t", "q", "!!"); !errors.Is(err, store.ErrInvalidReceipt) {
		t.Fatalf("bad base64: %v", err)
	}
	if n := reads.count(); n != 0 {
		t.Fatalf("%d layout reads for garbage handles, want 0", n)
	}

	forged := testHandle(200, 0) // parses, names a shard that does not exist
	t0 := time.Now()
	for range 4 {
		hr := handleRouter{r: r}
		if tg, _, err := hr.target(context.Background(), "receipt_handle", "t", "q", forged); err != nil || tg.shard != r.shardOf("t", "q", 0) {
			t.Fatalf("forged: %v %v", tg, err)
		}
	}
	reads.mu.Lock()
	starts := reads.starts
	reads.mu.Unlock()
	if len(starts) != 4 {
		t.Fatalf("%d reads for 4 sequential calls of a forged handle, want 4", len(starts))
	}
	for i, s := range starts { // read i starts no sooner than i gaps after the first call
		if d := s.Sub(t0); d < time.Duration(i)*layoutGap {
			t.Fatalf("read %d started %v after the first call, want at least %v", i, d, time.Duration(i)*layoutGap)
		}
	}
}

// A layout read that fails leaves the handle unknown for want of an
// answer: the call fails with the read's error (the client retries), not
// with an invalid receipt handle.
func TestLayoutReadFailureIsNotInvalidReceipt(t *testing.T) {
	reads := newLayoutReads(0, 0)
	reads.err = server.StatusError(codes.Unavailable, server.ReasonNoQuorum, "metadata shard has no leader", nil)
	r := layoutRouter(3, reads)
	hr := handleRouter{r: r}
	for range 2 { // the second handle of the call fails alike, without another read
		_, _, err := hr.target(context.Background(), "receipt_handle", "t", "q", testHandle(4, 0))
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("handle of shard 4 with the layout unreadable: %v, want UNAVAILABLE", err)
		}
	}
	if n := reads.count(); n != 1 {
		t.Fatalf("%d reads, want 1", n)
	}
	// A metadata leader that does not serve the read (an older version,
	// an upgrade under way): the handle is routed as before the read was.
	old := newLayoutReads(0, 0)
	old.err = status.Error(codes.Unimplemented, "unknown method ShardLayout")
	r = layoutRouter(3, old)
	tg, name, err := (&handleRouter{r: r}).target(context.Background(), "receipt_handle", "t", "q", testHandle(4, 0))
	if err != nil || tg.shard != r.shardOf("t", "q", 0) || name != "q" {
		t.Fatalf("handle of shard 4, layout read unimplemented: %v %q %v", tg, name, err)
	}
}

// A read abandoned by its caller (its context ended) is made again by a
// caller that waited for it.
func TestAbandonedLayoutReadIsRetried(t *testing.T) {
	reads := newLayoutReads(5, 3)
	reads.release = make(chan struct{})
	r := layoutRouter(3, reads)
	first, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		hr := handleRouter{r: r}
		_, _, err := hr.target(first, "receipt_handle", "t", "q", testHandle(4, 0))
		firstErr <- err
	}()
	<-reads.entered
	since := time.Now()
	second := make(chan error, 1)
	go func() {
		// As a caller that arrived before the read started: it shares it.
		second <- r.refreshLayout(context.Background(), since.Add(-time.Hour), func() bool { return r.shardCount() > 4 })
	}()
	cancel()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoning caller: %v", err)
	}
	<-reads.entered // the waiter reads again
	close(reads.release)
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if r.shardCount() != 5 {
		t.Fatalf("shard count %d, want 5", r.shardCount())
	}
}

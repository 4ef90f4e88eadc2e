package store

import (
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// TestViewHotFollowsCommits: read-only views (GetQueue, Queue, Peek) answer
// catalog reads from the view cache, and never with a value other than what
// their own snapshot holds: not while an apply round that changed the
// queue is uncommitted or committed but not yet announced (Committed), nor
// for a view taken before the change, nor after a restore.
func TestViewHotFollowsCommits(t *testing.T) {
	h := newHarness(t)
	h.now = 1_000_000
	h.run("create q=a vis=30s")
	vis := func(info *QueueInfo, err error) int64 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return info.Record.GetAttributes().GetVisibilityTimeoutMs()
	}
	get := func() int64 { return vis(h.s.GetQueue("t", "a", h.now)) }
	for range 2 { // the second read is the cache's
		if got := get(); got != 30_000 {
			t.Fatalf("visibility %d, want 30000", got)
		}
	}
	if cachedNow(h.s) == 0 {
		t.Fatal("no view cache entry under the current generation after two reads")
	}

	// An update applied into a batch, as the Raft loop does.
	cur, err := h.s.Queue("t", "a")
	if err != nil {
		t.Fatal(err)
	}
	attrs := proto.Clone(cur.Record.GetAttributes()).(*storepb.QueueAttributes)
	attrs.VisibilityTimeoutMs = 60_000
	r, b := h.stage(&storepb.Command{Op: &storepb.Command_UpdateQueue{UpdateQueue: &storepb.UpdateQueue{
		Tenant: "t", Name: "a", Attributes: attrs}}})
	if r.Err != nil {
		t.Fatalf("apply: %v", r.Err)
	}
	if got := get(); got != 30_000 {
		t.Fatalf("uncommitted round: visibility %d, want the committed 30000", got)
	}
	before, done := h.s.snapshot(h.now) // a view taken before the commit
	defer done()
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != 60_000 {
		t.Fatalf("committed, not yet announced: visibility %d, want 60000", got)
	}
	h.s.Committed()
	for range 2 {
		if got := get(); got != 60_000 {
			t.Fatalf("after Committed: visibility %d, want 60000", got)
		}
	}
	q, err := before.queue("t", "a")
	if err != nil {
		t.Fatal(err)
	}
	if got := q.GetAttributes().GetVisibilityTimeoutMs(); got != 30_000 {
		t.Fatalf("view taken before the commit: visibility %d, want its snapshot's 30000", got)
	}

	// A state replaced under the cache (as a snapshot install does).
	h.s.Restoring()
	nb := h.db.NewBatch()
	if err := nb.DeleteRange([]byte{0}, []byte{0xff}, nil); err != nil {
		t.Fatal(err)
	}
	if err := nb.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if _, err := h.s.Queue("t", "a"); err != ErrQueueNotFound {
		t.Fatalf("restoring: Queue = %v, want ErrQueueNotFound", err)
	}
	h.s.Restored()
	if _, err := h.s.Queue("t", "a"); err != ErrQueueNotFound {
		t.Fatalf("restored: Queue = %v, want ErrQueueNotFound", err)
	}
}

// cachedNow counts the view cache's entries usable under the current
// generation.
func cachedNow(s *Store) int {
	g := s.views.gen.Load()
	s.views.mu.Lock()
	defer s.views.mu.Unlock()
	n := 0
	for _, e := range s.views.vals {
		if e.gen == g && g&1 == 0 {
			n++
		}
	}
	return n
}

package store

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// TestReadsRaceApply: Peek (filtered, so it reads records), GetQueue,
// NeedsTick and Depths run while send/receive/delete cycles apply. Each read
// sees one point-in-time view, so an index entry always has its message:
// no read may fail. (Reads used a point-in-time iterator with live Gets and
// failed with "index entry without message".)
func TestReadsRaceApply(t *testing.T) {
	h := newHarness(t)
	h.run("create q=a")
	if out := h.run("create q=f.fifo"); !strings.HasPrefix(out, "t/f.fifo") {
		t.Fatal(out)
	}
	none := &storepb.TagFilter{None: []string{"absent"}}
	stop := make(chan struct{})
	// step paces the reader at one pass per apply round: each pass still
	// overlaps the next round's applies, but the passes (which walk the
	// memtable's growing tombstones) cannot multiply without bound while a
	// loaded machine slows the writer.
	step := make(chan struct{}, 1)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   []error
		nReads int
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if len(errs) < 5 {
			errs = append(errs, err)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, q := range []string{"a", "f.fifo"} {
				if _, _, err := h.s.Peek("t", q, none, 1<<40, math.MaxInt64); err != nil {
					fail(err)
				}
				if _, err := h.s.GetQueue("t", q, 1<<40); err != nil {
					fail(err)
				}
			}
			if _, err := h.s.NeedsTick(1 << 40); err != nil {
				fail(err)
			}
			if err := h.s.Depths(1<<40, 0, func(QueueDepth) bool { return true }); err != nil {
				fail(err)
			}
			mu.Lock()
			nReads++
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-step:
			}
		}
	}()
	for i := 0; i < 1000; i++ {
		h.now += 10
		for _, q := range []string{"a", "f.fifo"} {
			var entries []*storepb.SendEntry
			for j := 0; j < 4; j++ {
				entries = append(entries, &storepb.SendEntry{Body: "x", DelayMs: -1, GroupId: "g", DeduplicationId: fmt.Sprint(i, "-", j)})
			}
			if q == "a" {
				for _, e := range entries {
					e.GroupId, e.DeduplicationId = "", ""
				}
			}
			s := h.apply(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: "t", Queue: q, Entries: entries}}})
			if s.Err != nil || s.Sent[0].Err != nil {
				t.Fatalf("send: %v %v", s.Err, s.Sent[0].Err)
			}
			r := h.apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: "t", Queue: q, MaxMessages: 10, VisibilityTimeoutMs: -1}}})
			if len(r.Received) != len(entries) {
				t.Fatalf("received %d of %d", len(r.Received), len(entries))
			}
			del := &storepb.Delete{Tenant: "t", Queue: q}
			for _, m := range r.Received {
				del.ReceiptHandles = append(del.ReceiptHandles, m.ReceiptHandle)
			}
			h.apply(&storepb.Command{Op: &storepb.Command_Delete{Delete: del}})
		}
		select {
		case step <- struct{}{}:
		default:
		}
		mu.Lock()
		failed := len(errs) > 0
		mu.Unlock()
		if failed {
			break
		}
	}
	close(stop)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("reads failed while applying (after %d read rounds): %v", nReads, errs)
	}
	if nReads == 0 {
		t.Fatal("no read ran")
	}
}

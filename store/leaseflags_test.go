package store

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// The lease flag byte packs three things: bit 0 plain, bit 1 lease closed,
// high nibble priority + 1. Each reader must see its own part only,
// whatever the others hold.
func TestLeaseFlagByteParts(t *testing.T) {
	for p := int32(-1); p <= MaxPriority; p++ {
		for _, plain := range []bool{false, true} {
			for _, closed := range []bool{false, true} {
				m := &storepb.MessageRecord{Seq: 7, Size: 3, LeaseClosed: closed, ReceiveCount: 2}
				if p >= 0 {
					m.Priority = proto.Int32(p)
				}
				if !plain {
					m.Tags = []string{"t"}
				}
				f := leasePriority(m)
				if plain {
					f |= leasePlain
				}
				if closed {
					f |= leaseClosed
				}
				got := priorityFromLease(f)
				if (got == nil) != (m.Priority == nil) || (got != nil && *got != *m.Priority) {
					t.Errorf("priority %d plain %v closed %v: flag %08b reads priority %v", p, plain, closed, f, got)
				}
				if (f&leasePlain != 0) != plain || (f&leaseClosed != 0) != closed {
					t.Errorf("priority %d plain %v closed %v: flag %08b", p, plain, closed, f)
				}
				v := make([]byte, leaseLen)
				v[28] = f
				back := &storepb.MessageRecord{Seq: 7}
				if err := applyLease(back, v); err != nil {
					t.Fatal(err)
				}
				if back.LeaseClosed != closed {
					t.Errorf("priority %d plain %v closed %v: applyLease reads closed %v", p, plain, closed, back.LeaseClosed)
				}
			}
		}
	}
}

// TestTaggedLeaseRecord: a received message with tags (no group, no ttl)
// gets a plain lease record that carries its tags, so a visibility change
// and a delete by handle, which read only the lease record, still move and
// remove its tag index entries; tags too long for a lease record stay in
// the message record only (not plain).
func TestTaggedLeaseRecord(t *testing.T) {
	h := newHarness(t)
	h.now = 1_000_000
	h.run("create q=a vis=1m")
	long := strings.Repeat("x", maxLeaseTagBytes)
	h.apply(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: "t", Queue: "a", Entries: []*storepb.SendEntry{
		{Body: "short", DelayMs: -1, Tags: []string{"red", "", "blue"}},
		{Body: "long", DelayMs: -1, Tags: []string{"red", long}},
	}}}})
	r := h.apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: "t", Queue: "a", MaxMessages: 2, VisibilityTimeoutMs: -1}}})
	if len(r.Received) != 2 {
		t.Fatalf("received %d", len(r.Received))
	}
	lease := func(seq uint64) []byte {
		v, closer, err := h.db.Get(keys.Lease(1, 1, seq))
		if err != nil {
			t.Fatalf("lease record of seq %d: %v", seq, err)
		}
		defer closer.Close()
		return append([]byte(nil), v...)
	}
	short, lng := lease(1), lease(2)
	if short[28]&(leasePlain|leaseTagged) != leasePlain|leaseTagged {
		t.Errorf("short tags: flag %08b, want plain and tagged", short[28])
	}
	if tags, err := leaseTags(short); err != nil || strings.Join(tags, ",") != "red,,blue" {
		t.Errorf("short tags: lease record tags %q %v", tags, err)
	}
	if lng[28]&(leasePlain|leaseTagged) != 0 || len(lng) != leaseLen {
		t.Errorf("long tags: flag %08b, %d bytes: want neither plain nor tagged, %d bytes", lng[28], len(lng), leaseLen)
	}
	// Back to visible through the lease record alone, then received again
	// through the tag index: the entries moved with it.
	for _, m := range r.Received {
		c := h.apply(&storepb.Command{Op: &storepb.Command_ChangeVisibility{ChangeVisibility: &storepb.ChangeVisibility{Tenant: "t", Queue: "a",
			Changes: []*storepb.VisibilityChange{{ReceiptHandle: m.ReceiptHandle}}}}})
		if c.Entries[0] != nil {
			t.Fatal(c.Entries[0])
		}
	}
	checkInvariants(t, h.s)
	h.now++
	r = h.apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: "t", Queue: "a", MaxMessages: 10, VisibilityTimeoutMs: -1,
		Filter: &storepb.TagFilter{All: []string{"blue"}}}}})
	if len(r.Received) != 1 || r.Received[0].Message.Body != "short" || r.Received[0].Message.ReceiveCount != 2 {
		t.Fatalf("filtered receive after the visibility change: %v", r.Received)
	}
	d := h.apply(&storepb.Command{Op: &storepb.Command_Delete{Delete: &storepb.Delete{Tenant: "t", Queue: "a", ReceiptHandles: [][]byte{r.Received[0].ReceiptHandle}}}})
	if d.Entries[0] != nil {
		t.Fatal(d.Entries[0])
	}
	checkInvariants(t, h.s)
	if qi, err := h.s.GetQueue("t", "a", h.now); err != nil || qi.Stats.Messages != 1 {
		t.Fatalf("after the delete: %+v %v", qi, err)
	}
}

// A tagged lease record cut short is an error, never a panic.
func TestLeaseTagsTruncated(t *testing.T) {
	v := make([]byte, leaseCountsLen, leaseCountsLen+8)
	v[28] = leasePlain | leaseTagged
	v = append(v, 0, 5, 'a', 'b')
	if _, err := leaseTags(v); err == nil {
		t.Error("a tag cut short decoded")
	}
	if _, err := leaseTags(v[:leaseLen+3]); err == nil {
		t.Error("a tagged record shorter than the long form decoded")
	}
	m := &storepb.MessageRecord{}
	if err := applyLease(m, v[:leaseLen+3]); err == nil {
		t.Error("applyLease took a tagged record shorter than the long form")
	}
}

package store

import (
	"testing"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// An UpdateQueue stamps the record with the command's time (SQS's
// LastModifiedTimestamp); creation leaves it unset and a refused update
// leaves it alone.
func TestUpdateQueueStampsUpdatedAt(t *testing.T) {
	h := newHarness(t)
	h.now = 1_000_000
	attrs := &storepb.QueueAttributes{VisibilityTimeoutMs: 30_000, MessageRetentionMs: 3_600_000, MaxMessageSize: 1024, Partitions: 1}
	r := h.apply(&storepb.Command{Op: &storepb.Command_CreateQueue{CreateQueue: &storepb.CreateQueue{
		Tenant: "t", Name: "q", Attributes: attrs, HandleKey: make([]byte, 32)}}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	get := func() *storepb.QueueRecord {
		qi, err := h.s.GetQueue("t", "q", h.now)
		if err != nil {
			t.Fatal(err)
		}
		return qi.Record
	}
	if rec := get(); rec.GetCreatedAtMs() != 1_000_000 || rec.GetUpdatedAtMs() != 0 {
		t.Fatalf("after create: created %d updated %d", rec.GetCreatedAtMs(), rec.GetUpdatedAtMs())
	}
	h.now = 1_005_000
	changed := &storepb.QueueAttributes{VisibilityTimeoutMs: 10_000, MessageRetentionMs: 3_600_000, MaxMessageSize: 1024, Partitions: 1}
	if r := h.apply(&storepb.Command{Op: &storepb.Command_UpdateQueue{UpdateQueue: &storepb.UpdateQueue{Tenant: "t", Name: "q", Attributes: changed}}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if rec := get(); rec.GetCreatedAtMs() != 1_000_000 || rec.GetUpdatedAtMs() != 1_005_000 {
		t.Fatalf("after update: created %d updated %d", rec.GetCreatedAtMs(), rec.GetUpdatedAtMs())
	}
	h.now = 1_009_000
	refused := &storepb.QueueAttributes{VisibilityTimeoutMs: 10_000, MessageRetentionMs: 3_600_000, MaxMessageSize: 1024, Partitions: 1, Fifo: true}
	if r := h.apply(&storepb.Command{Op: &storepb.Command_UpdateQueue{UpdateQueue: &storepb.UpdateQueue{Tenant: "t", Name: "q", Attributes: refused}}}); r.Err == nil {
		t.Fatal("an update making the queue FIFO was accepted")
	}
	if rec := get(); rec.GetUpdatedAtMs() != 1_005_000 {
		t.Fatalf("a refused update moved updated_at to %d", rec.GetUpdatedAtMs())
	}
}

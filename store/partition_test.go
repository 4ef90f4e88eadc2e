package store

import (
	"encoding/binary"
	"errors"
	"testing"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

func (h *harness) createCopy(name string, partition int32, incarnation int64, a *storepb.QueueAttributes) *Result {
	return h.apply(&storepb.Command{Op: &storepb.Command_CreateQueue{CreateQueue: &storepb.CreateQueue{
		Tenant: "t", Name: name, Attributes: a, HandleKey: make([]byte, 32),
		PartitionCopy: true, Partition: partition, Incarnation: incarnation}}})
}

func partAttrs(n int32) *storepb.QueueAttributes {
	a := DefaultAttributes()
	a.Partitions = n
	return a
}

// Partition copies live under name#i, are not counted against the queue
// quota (the metadata shard counted the queue once) and skip the
// dead-letter check (the DLQ lives on the metadata shard's catalog).
func TestPartitionCopies(t *testing.T) {
	h := newHarness(t)
	h.setQuota(&storepb.TenantQuota{MaxQueues: 1})
	a := partAttrs(4)
	a.DeadLetterQueue, a.MaxReceiveCount = "elsewhere", 3
	for i := int32(0); i < 4; i++ {
		if r := h.createCopy("q", i, 7, a); r.Err != nil {
			t.Fatalf("copy %d: %v", i, r.Err)
		}
	}
	if rec, _ := h.s.Tenant("t"); rec.Queues != 0 {
		t.Fatalf("copies counted as %d queues", rec.Queues)
	}
	if _, err := h.s.Queue("t", "q#3"); err != nil {
		t.Fatalf("copy 3 not under q#3: %v", err)
	}
	if r := h.createCopy("q", 4, 7, a); r.Err == nil {
		t.Fatal("a copy past attributes.partitions was made")
	}
	// Not a copy: partition must be 0.
	r := h.apply(&storepb.Command{Op: &storepb.Command_CreateQueue{CreateQueue: &storepb.CreateQueue{
		Tenant: "t", Name: "r", Attributes: partAttrs(2), HandleKey: make([]byte, 32), Partition: 1}}})
	if r.Err == nil {
		t.Fatal("a record of truth with partition 1 was made")
	}
	// Receipt handles name their partition.
	h.sendBody("q#3", "hello")
	rr := h.apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: "t", Queue: "q#3", MaxMessages: 1}}})
	if len(rr.Received) != 1 {
		t.Fatalf("received %d", len(rr.Received))
	}
	hd, err := ParseHandle(rr.Received[0].ReceiptHandle)
	if err != nil || hd.Partition != 3 {
		t.Fatalf("handle %+v %v, want partition 3", hd, err)
	}
}

// A copy left from an earlier queue of the same name (another incarnation)
// is replaced, messages and all; the same incarnation only takes new
// attributes (a retried create or an update).
func TestPartitionCopyIncarnation(t *testing.T) {
	h := newHarness(t)
	h.createCopy("q", 1, 100, partAttrs(2))
	h.sendBody("q#1", "old")
	b := partAttrs(3)
	b.VisibilityTimeoutMs = 5000
	if r := h.createCopy("q", 1, 100, b); r.Err != nil {
		t.Fatalf("same incarnation, new attributes: %v", r.Err)
	}
	info, _ := h.s.GetQueue("t", "q#1", h.now)
	if info.Stats.Visible != 1 || info.Record.GetAttributes().GetVisibilityTimeoutMs() != 5000 {
		t.Fatalf("update kept %d messages, visibility %d", info.Stats.Visible, info.Record.GetAttributes().GetVisibilityTimeoutMs())
	}
	if r := h.createCopy("q", 1, 200, partAttrs(2)); r.Err != nil {
		t.Fatalf("new incarnation: %v", r.Err)
	}
	info, _ = h.s.GetQueue("t", "q#1", h.now)
	if info.Stats.Visible != 0 {
		t.Fatalf("a new incarnation kept %d old messages", info.Stats.Visible)
	}
}

// TestPartitionCopyOlderIncarnationRefused: a delayed create of an older
// incarnation (a fan-out racing a delete + re-create) is refused and leaves
// the newer copy, its messages and attributes as they were.
func TestPartitionCopyOlderIncarnationRefused(t *testing.T) {
	h := newHarness(t)
	h.createCopy("q", 1, 200, partAttrs(2))
	h.sendBody("q#1", "new")
	old := partAttrs(2)
	old.VisibilityTimeoutMs = 7000
	r := h.createCopy("q", 1, 100, old)
	if !errors.Is(r.Err, ErrOlderIncarnation) || !errors.Is(r.Err, ErrQueueExists) {
		t.Fatalf("older incarnation: %v, want ErrOlderIncarnation", r.Err)
	}
	info, err := h.s.GetQueue("t", "q#1", h.now)
	if err != nil {
		t.Fatal(err)
	}
	if info.Stats.Visible != 1 || info.Record.GetIncarnation() != 200 || info.Record.GetAttributes().GetVisibilityTimeoutMs() == 7000 {
		t.Fatalf("after an older create: %d messages, incarnation %d, visibility %d",
			info.Stats.Visible, info.Record.GetIncarnation(), info.Record.GetAttributes().GetVisibilityTimeoutMs())
	}
}

func TestPartitionNames(t *testing.T) {
	if PartitionName("q", 0) != "q" || PartitionName("q", 12) != "q#12" || BaseName("q#12") != "q" || BaseName("q") != "q" {
		t.Fatal("partition names")
	}
	for _, ok := range []string{"q", "q#1", "q.fifo#63"} {
		if err := ValidatePartitionName(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"q#0", "q#64", "q#01", "q#", "#1", "q#1#2", "q#x"} {
		if err := ValidatePartitionName(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// Handles issued before partitions (version 1) still decode, as partition 0.
func TestHandleV1StillDecodes(t *testing.T) {
	key := make([]byte, 32)
	b := []byte{handleV1}
	b = binary.BigEndian.AppendUint64(b, 2)
	b = binary.BigEndian.AppendUint64(b, 9)
	b = binary.BigEndian.AppendUint64(b, 41)
	b = binary.BigEndian.AppendUint32(b, 3)
	b = append(b, newSigner(key).mac(b)...)
	h, err := DecodeHandle(b, key)
	if err != nil || h != (Handle{Shard: 2, Queue: 9, Seq: 41, ReceiveCount: 3}) {
		t.Fatalf("v1 handle: %+v %v", h, err)
	}
	v2 := EncodeHandle(Handle{Shard: 2, Partition: 5, Queue: 9, Seq: 41, ReceiveCount: 3}, key)
	if h, err := DecodeHandle(v2, key); err != nil || h.Partition != 5 {
		t.Fatalf("v2: %+v %v", h, err)
	}
	v2[len(v2)-1] ^= 1
	if _, err := DecodeHandle(v2, key); !errors.Is(err, ErrInvalidReceipt) {
		t.Fatalf("forged v2 accepted: %v", err)
	}
}

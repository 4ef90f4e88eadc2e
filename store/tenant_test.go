package store

import (
	"errors"
	"strings"
	"testing"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

func (h *harness) setQuota(q *storepb.TenantQuota) *Result {
	return h.apply(&storepb.Command{Op: &storepb.Command_SetTenantQuota{SetTenantQuota: &storepb.SetTenantQuota{Tenant: "t", Quota: q}}})
}

func (h *harness) sendBody(queue, body string) *Result {
	return h.apply(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: "t", Queue: queue,
		Entries: []*storepb.SendEntry{{Body: body, DelayMs: -1}}}}})
}

// The queue-count quota refuses the queue past the limit; deleting one makes
// room again.
func TestQuotaQueues(t *testing.T) {
	h := newHarness(t)
	if r := h.setQuota(&storepb.TenantQuota{MaxQueues: 2}); r.Err != nil {
		t.Fatal(r.Err)
	}
	h.run("create q=a")
	h.run("create q=b")
	r := h.apply(&storepb.Command{Op: &storepb.Command_CreateQueue{CreateQueue: &storepb.CreateQueue{
		Tenant: "t", Name: "c", Attributes: DefaultAttributes(), HandleKey: make([]byte, 32)}}})
	if !errors.Is(r.Err, ErrQuotaExceeded) {
		t.Fatalf("third queue: %v, want quota exceeded", r.Err)
	}
	h.apply(&storepb.Command{Op: &storepb.Command_DeleteQueue{DeleteQueue: &storepb.DeleteQueue{Tenant: "t", Name: "a"}}})
	r = h.apply(&storepb.Command{Op: &storepb.Command_CreateQueue{CreateQueue: &storepb.CreateQueue{
		Tenant: "t", Name: "c", Attributes: DefaultAttributes(), HandleKey: make([]byte, 32)}}})
	if r.Err != nil {
		t.Fatalf("after a delete: %v", r.Err)
	}
	if rec, _ := h.s.Tenant("t"); rec.Queues != 2 {
		t.Fatalf("queues = %d, want 2", rec.Queues)
	}
}

// The stored-bytes quota counts what is stored: sends past it fail, and
// deletes, purges and queue deletion give the room back.
func TestQuotaStoredBytes(t *testing.T) {
	h := newHarness(t)
	h.run("create q=a")
	h.setQuota(&storepb.TenantQuota{MaxStoredBytes: 250})
	body := strings.Repeat("x", 100)
	for i := 0; i < 2; i++ {
		if r := h.sendBody("a", body); r.Sent[0].Err != nil {
			t.Fatalf("send %d: %v", i, r.Sent[0].Err)
		}
	}
	if r := h.sendBody("a", body); !errors.Is(r.Sent[0].Err, ErrQuotaExceeded) {
		t.Fatalf("third send: %v, want quota exceeded", r.Sent[0].Err)
	}
	if rec, _ := h.s.Tenant("t"); rec.StoredBytes != 200 {
		t.Fatalf("stored bytes = %d, want 200", rec.StoredBytes)
	}
	h.apply(&storepb.Command{Op: &storepb.Command_PurgeQueue{PurgeQueue: &storepb.PurgeQueue{Tenant: "t", Name: "a"}}})
	if rec, _ := h.s.Tenant("t"); rec.StoredBytes != 0 {
		t.Fatalf("after purge stored bytes = %d", rec.StoredBytes)
	}
	if r := h.sendBody("a", body); r.Sent[0].Err != nil {
		t.Fatalf("send after purge: %v", r.Sent[0].Err)
	}
	h.apply(&storepb.Command{Op: &storepb.Command_DeleteQueue{DeleteQueue: &storepb.DeleteQueue{Tenant: "t", Name: "a"}}})
	if rec, _ := h.s.Tenant("t"); rec.StoredBytes != 0 || rec.Queues != 0 {
		t.Fatalf("after delete queue: %+v", rec)
	}
	if r := h.setQuota(&storepb.TenantQuota{MaxQueues: -1}); r.Err == nil {
		t.Fatal("negative quota accepted")
	}
}

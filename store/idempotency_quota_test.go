package store

import (
	"errors"
	"strings"
	"testing"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// TestRetryAtQuotaAnswersFirstSend: a retried send whose idempotency key
// (any queue) or deduplication id (FIFO) is known answers with the first
// message although the tenant is now at its byte quota or the queue's
// max_message_size shrank: the caller must learn that it was stored. A new
// send is still refused.
func TestRetryAtQuotaAnswersFirstSend(t *testing.T) {
	h := newHarness(t)
	h.run("create q=a")
	h.run("create q=f.fifo")
	h.setQuota(&storepb.TenantQuota{MaxStoredBytes: 250})
	body := strings.Repeat("x", 100)
	send := func(q string, e *storepb.SendEntry) SendOutcome {
		t.Helper()
		r := h.apply(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: "t", Queue: q, Entries: []*storepb.SendEntry{e}}}})
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return r.Sent[0]
	}
	first := send("a", &storepb.SendEntry{Body: body, DelayMs: -1, IdempotencyKey: "k1"})
	fifo := send("f.fifo", &storepb.SendEntry{Body: body, DelayMs: -1, GroupId: "g", DeduplicationId: "d1"})
	if first.Err != nil || fifo.Err != nil {
		t.Fatalf("first sends: %v %v", first.Err, fifo.Err)
	}
	// 200 of 250 bytes used: a third message does not fit.
	if o := send("a", &storepb.SendEntry{Body: body, DelayMs: -1, IdempotencyKey: "k2"}); !errors.Is(o.Err, ErrQuotaExceeded) {
		t.Fatalf("new send at the quota: %+v, want quota exceeded", o)
	}
	if o := send("a", &storepb.SendEntry{Body: body, DelayMs: -1, IdempotencyKey: "k1"}); o.Err != nil || !o.Duplicate || o.MessageID != first.MessageID {
		t.Fatalf("retry at the quota: %+v, want duplicate of %s", o, first.MessageID)
	}
	if o := send("f.fifo", &storepb.SendEntry{Body: body, DelayMs: -1, GroupId: "g", DeduplicationId: "d1"}); o.Err != nil || !o.Duplicate || o.MessageID != fifo.MessageID {
		t.Fatalf("FIFO retry at the quota: %+v, want duplicate of %s", o, fifo.MessageID)
	}
	// The queue's size limit shrank after the first send: the retry still
	// answers with the stored message.
	h.run("update q=a maxsize=1024")
	if o := send("a", &storepb.SendEntry{Body: strings.Repeat("x", 2000), DelayMs: -1, IdempotencyKey: "k1"}); o.Err != nil || !o.Duplicate {
		t.Fatalf("retry over max_message_size: %+v, want duplicate", o)
	}
	if rec, _ := h.s.Tenant("t"); rec.StoredBytes != 200 {
		t.Fatalf("stored bytes = %d, want 200 (retries store nothing)", rec.StoredBytes)
	}
}

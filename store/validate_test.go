package store

import (
	"errors"
	"strings"
	"testing"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

func TestValidateQueueName(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"A-z_09", true},
		{strings.Repeat("a", 80), true},
		{strings.Repeat("a", 81), false},
		{strings.Repeat("a", 75) + ".fifo", true},
		{strings.Repeat("a", 76) + ".fifo", false},
		{"", false},
		{".fifo", false},
		{"a.b", false},
		{"a.fifo.fifo", false},
		{"a b", false},
		{"ä", false},
		{"a\x00", false},
	} {
		err := ValidateQueueName(c.name)
		if (err == nil) != c.ok {
			t.Errorf("ValidateQueueName(%q) = %v, want ok=%v", c.name, err, c.ok)
		}
		var fe *FieldError
		if err != nil && (!errors.As(err, &fe) || fe.Field != "name" || !errors.Is(err, ErrInvalidArgument)) {
			t.Errorf("ValidateQueueName(%q) = %#v, want a FieldError on name", c.name, err)
		}
	}
}

func TestValidateAttributes(t *testing.T) {
	if err := ValidateAttributes(DefaultAttributes()); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	type mod func(a *storepb.QueueAttributes)
	for _, c := range []struct {
		field string // "" = valid
		mod   mod
	}{
		{"", func(a *storepb.QueueAttributes) { a.VisibilityTimeoutMs = 0 }},
		{"", func(a *storepb.QueueAttributes) { a.VisibilityTimeoutMs = MaxVisibilityTimeoutMs }},
		{"attributes.visibility_timeout", func(a *storepb.QueueAttributes) { a.VisibilityTimeoutMs = MaxVisibilityTimeoutMs + 1 }},
		{"attributes.visibility_timeout", func(a *storepb.QueueAttributes) { a.VisibilityTimeoutMs = -1 }},
		{"", func(a *storepb.QueueAttributes) { a.MessageRetentionMs = 60_000 }},
		{"attributes.message_retention", func(a *storepb.QueueAttributes) { a.MessageRetentionMs = 59_999 }},
		{"", func(a *storepb.QueueAttributes) { a.MessageRetentionMs = MaxRetentionMs }},
		{"attributes.message_retention", func(a *storepb.QueueAttributes) { a.MessageRetentionMs = MaxRetentionMs + 1 }},
		{"", func(a *storepb.QueueAttributes) { a.DeliveryDelayMs = 15 * 60_000 }},
		{"attributes.delivery_delay", func(a *storepb.QueueAttributes) { a.DeliveryDelayMs = 15*60_000 + 1 }},
		{"attributes.delivery_delay", func(a *storepb.QueueAttributes) { a.DeliveryDelayMs = -1 }},
		{"", func(a *storepb.QueueAttributes) { a.ReceiveWaitMs = 20_000 }},
		{"attributes.receive_wait", func(a *storepb.QueueAttributes) { a.ReceiveWaitMs = 20_001 }},
		{"", func(a *storepb.QueueAttributes) { a.MaxMessageSize = 1024 }},
		{"attributes.max_message_size", func(a *storepb.QueueAttributes) { a.MaxMessageSize = 1023 }},
		{"attributes.max_message_size", func(a *storepb.QueueAttributes) { a.MaxMessageSize = 1<<20 + 1 }},
		{"", func(a *storepb.QueueAttributes) { a.DeadLetterQueue, a.MaxReceiveCount = "d", 1 }},
		{"", func(a *storepb.QueueAttributes) { a.DeadLetterQueue, a.MaxReceiveCount = "d", 1000 }},
		{"attributes.dead_letter.max_receive_count", func(a *storepb.QueueAttributes) { a.DeadLetterQueue, a.MaxReceiveCount = "d", 0 }},
		{"attributes.dead_letter.max_receive_count", func(a *storepb.QueueAttributes) { a.DeadLetterQueue, a.MaxReceiveCount = "d", 1001 }},
		{"attributes.dead_letter.max_receive_count", func(a *storepb.QueueAttributes) { a.MaxReceiveCount = 3 }},
		{"attributes.dead_letter.queue", func(a *storepb.QueueAttributes) { a.DeadLetterQueue, a.MaxReceiveCount = "bad name", 3 }},
		{"", func(a *storepb.QueueAttributes) { a.Partitions = 64 }},
		{"attributes.partitions", func(a *storepb.QueueAttributes) { a.Partitions = 65 }},
		{"attributes.partitions", func(a *storepb.QueueAttributes) { a.Partitions = 0 }},
		{"attributes.content_based_deduplication", func(a *storepb.QueueAttributes) { a.ContentBasedDeduplication = true }},
		{"", func(a *storepb.QueueAttributes) { a.ContentBasedDeduplication, a.Fifo = true, true }},
	} {
		a := DefaultAttributes()
		c.mod(a)
		err := ValidateAttributes(a)
		var fe *FieldError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%v: unexpected %v", a, err)
		case c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field):
			t.Errorf("%v: got %v, want a FieldError on %s", a, err, c.field)
		case c.field != "" && !errors.Is(err, ErrInvalidArgument):
			t.Errorf("%v: %v is not ErrInvalidArgument", a, err)
		}
	}
	if err := ValidateAttributes(nil); err == nil {
		t.Error("nil attributes accepted")
	}
	fifo := DefaultAttributes()
	fifo.Fifo = true
	if err := ValidateQueue("q.fifo", fifo); err != nil {
		t.Error(err)
	}
	if err := ValidateQueue("q", fifo); err == nil {
		t.Error("fifo attributes on a standard name accepted")
	}
	if err := ValidateQueue("q.fifo", DefaultAttributes()); err == nil {
		t.Error("standard attributes on a .fifo name accepted")
	}
}

func TestHandleRoundTrip(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	h := Handle{Shard: 3, Queue: 9, Seq: 1 << 40, ReceiveCount: 7}
	b := EncodeHandle(h, key)
	if got, err := DecodeHandle(b, key); err != nil || got != h {
		t.Fatalf("DecodeHandle = %v, %v", got, err)
	}
	if _, err := DecodeHandle(b, []byte("another key, another queue......")); !errors.Is(err, ErrInvalidReceipt) {
		t.Errorf("other key: %v", err)
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x40
		if _, err := DecodeHandle(c, key); !errors.Is(err, ErrInvalidReceipt) {
			t.Errorf("flipped byte %d accepted", i)
		}
	}
	if _, err := DecodeHandle(append(b, 0), key); !errors.Is(err, ErrInvalidReceipt) {
		t.Error("trailing byte accepted")
	}
}

func TestMessageIDSorts(t *testing.T) {
	prev := ""
	for _, c := range []struct {
		now      int64
		shard, q uint64
		seq      uint64
	}{{0, 9, 9, 9}, {1, 0, 0, 0}, {1, 0, 0, 1}, {1, 0, 0, 256}, {1, 1, 0, 0}, {1 << 40, 0, 0, 0}} {
		id := messageID(c.now, c.shard, c.q, c.seq)
		if id <= prev || strings.ToLower(id) != id {
			t.Errorf("id %q after %q", id, prev)
		}
		prev = id
	}
}

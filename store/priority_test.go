package store

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// TestHighPriorityOvertakesMillionBacklog is issue 18's "done when" for
// priorities: with 1,000,000 low-priority messages queued, a high-priority
// message sent last is the next one received, and the receive reads
// O(returned) keys (the key counter): each priority has its own index, so
// the receive seeks the highest level in use and never passes over the
// backlog. A default-priority message sent after it comes next (the
// default's index is 'v', where every message was before priorities), then
// the backlog in send order.
func TestHighPriorityOvertakesMillionBacklog(t *testing.T) {
	h := newHarness(t)
	h.run("create q=a vis=1m")
	total, batch := 1_000_000, 10_000
	if raceEnabled {
		total = 50_000 // the same bounds; the plain run has the million
	}
	body := make([]*storepb.SendEntry, batch)
	for i := 0; i < total; i += batch {
		for j := range body {
			body[j] = &storepb.SendEntry{Body: "x", DelayMs: -1, Priority: proto.Int32(0)}
		}
		if r := h.apply(sendCmd("a", body...)); r.Err != nil || r.Sent[0].Err != nil {
			t.Fatal(r.Err, r.Sent[0].Err)
		}
	}
	h.apply(sendCmd("a", &storepb.SendEntry{Body: "high", DelayMs: -1, Priority: proto.Int32(9)}))
	h.apply(sendCmd("a", &storepb.SendEntry{Body: "default", DelayMs: -1}))

	receive := func(n int32) ([]string, uint64) {
		before := h.s.KeysRead()
		r := h.apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{
			Tenant: "t", Queue: "a", MaxMessages: n, VisibilityTimeoutMs: -1}}})
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		var got []string
		for _, m := range r.Received {
			got = append(got, fmt.Sprintf("%s/%d", m.Message.Body, PriorityOf(m.Message)))
		}
		return got, h.s.KeysRead() - before
	}
	// Per receive: shard meta, catalog, queue order, queue meta, the
	// level's low-water mark and head, the record; then one index step
	// and one record per further message, and the counters' settle walk.
	const fixed, perMessage = 12, 3
	for _, c := range []struct {
		n    int32
		want string
	}{
		{1, "[high/9]"},
		{1, "[default/4]"},
		{10, "[x/0 x/0 x/0 x/0 x/0 x/0 x/0 x/0 x/0 x/0]"},
	} {
		got, read := receive(c.n)
		t.Logf("receive %d: %v, %d keys read", c.n, got, read)
		if fmt.Sprint(got) != c.want {
			t.Fatalf("received %v, want %s", got, c.want)
		}
		if read > fixed+perMessage*uint64(c.n) {
			t.Errorf("receive of %d read %d keys, want <= %d", c.n, read, fixed+perMessage*uint64(c.n))
		}
	}
	if st := h.stats("a"); st.Messages != int64(total)+2 || st.InFlight != 12 || st.Visible != int64(total)-10 {
		t.Errorf("stats %+v", st)
	}
}

func sendCmd(queue string, es ...*storepb.SendEntry) *storepb.Command {
	return &storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: "t", Queue: queue, Entries: es}}}
}

func (h *harness) stats(queue string) Stats {
	qi, err := h.s.GetQueue("t", queue, h.now)
	if err != nil {
		h.t.Fatal(err)
	}
	return qi.Stats
}

// TestDefaultPriorityKeepsLayout: messages of the default priority, sent
// with or without it, are stored as before priorities existed (no
// priority field on the record, entries in 'v', no QueueOrder), so a data
// directory or snapshot from before reads the same, and a node from before
// reads what a queue without priorities writes now.
func TestDefaultPriorityKeepsLayout(t *testing.T) {
	h := newHarness(t)
	h.run("create q=a vis=1s")
	h.apply(sendCmd("a", &storepb.SendEntry{Body: "plain", DelayMs: -1}, &storepb.SendEntry{Body: "four", DelayMs: -1, Priority: proto.Int32(4), Tags: []string{"red"}}))
	h.run("receive q=a max=10")
	h.now += 2000
	h.run("receive q=a max=1")
	it, err := h.db.NewIter(&pebble.IterOptions{LowerBound: keys.StatePrefix(1), UpperBound: keys.StateEnd(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		n++
		if _, _, _, _, _, err := keys.DecodePriority(k); err == nil {
			t.Errorf("priority entry %s", keys.Pretty(k))
		}
		if bytes.HasPrefix(k, keys.OrderPrefix(1, 1)) {
			t.Errorf("order key %s", keys.Pretty(k))
		}
	}
	if n < 10 {
		t.Fatalf("only %d keys", n)
	}
	for seq := uint64(1); seq <= 2; seq++ {
		m, err := h.s.reader(h.now).record(1, seq)
		if err != nil || m == nil || m.Priority != nil {
			t.Errorf("seq %d: %v %v", seq, m, err)
		}
	}
}

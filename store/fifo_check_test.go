package store

import (
	"bytes"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// fifoChecker checks every receive of the random log on a FIFO queue
// (DESIGN §3 rule 8): for every group, the messages delivered come in seq
// order except redeliveries of the current head. Per receive that is: the
// messages a receive returns of a group are exactly the first ones (in seq
// order) of what the group still holds after it (so a dead-lettered head
// may be skipped, nothing else), and each was visible before it (never in
// flight: nothing behind an in-flight message is delivered). Across the log
// it counts a delivery of a seq at or below the group's highest delivered
// one as a redelivery; by the per-receive rule such a delivery starts at the
// group's current head.
type fifoChecker struct {
	last                             map[groupRef]uint64
	receives, delivered, redelivered int
	// cut counts groups whose delivered run stopped at a message in flight
	// with a visible message behind it: the case that tells "stop at the
	// first message in flight" from "skip messages in flight".
	cut int
}

type groupRef struct {
	queue uint64
	group string
}

// fifoSnapshot is a FIFO queue's messages by group, in seq order, before a
// receive.
type fifoSnapshot struct {
	qid    uint64
	groups map[string][]*storepb.MessageRecord
	bySeq  map[uint64]*storepb.MessageRecord
}

// snapshot reads a FIFO queue before a receive; nil for a standard or
// missing queue.
func (c *fifoChecker) snapshot(t *testing.T, s *Store, tenant, name string) *fifoSnapshot {
	r := s.reader(0)
	q, err := r.queue(tenant, name)
	if err != nil {
		t.Fatal(err)
	}
	if q == nil || !isFifo(q) {
		return nil
	}
	snap := &fifoSnapshot{qid: q.Id, groups: map[string][]*storepb.MessageRecord{}, bySeq: map[uint64]*storepb.MessageRecord{}}
	err = r.scanBySeq(q.Id, func(m *storepb.MessageRecord) bool {
		snap.groups[m.GroupId] = append(snap.groups[m.GroupId], m)
		snap.bySeq[m.Seq] = m
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func (c *fifoChecker) check(t *testing.T, s *Store, before *fifoSnapshot, res *Result) {
	t.Helper()
	if res.Err != nil || res.Replayed || len(res.Received) == 0 {
		return
	}
	if c.last == nil {
		c.last = map[groupRef]uint64{}
	}
	r := s.reader(0)
	sm := &storepb.ShardMeta{}
	if _, err := r.get(keys.ShardMeta(s.shard), sm); err != nil {
		t.Fatal(err)
	}
	now := sm.LastTimeMs
	c.receives++
	got := map[string][]uint64{}
	var order []string // groups in first-returned order (no map iteration)
	for _, m := range res.Received {
		prev, ok := before.bySeq[m.Message.Seq]
		switch {
		case !ok:
			t.Fatalf("fifo: receive returned seq %d the queue did not hold", m.Message.Seq)
		case prev.VisibleAtMs > now:
			t.Fatalf("fifo: seq %d of group %q delivered while not visible (visible_at %d, now %d)",
				prev.Seq, prev.GroupId, prev.VisibleAtMs, now)
		case prev.GroupId != m.Message.GroupId || prev.ReceiveCount+1 != m.Message.ReceiveCount:
			t.Fatalf("fifo: seq %d changed unexpectedly: %v -> %v", prev.Seq, prev, m.Message)
		}
		g := m.Message.GroupId
		if _, seen := got[g]; !seen {
			order = append(order, g)
		}
		got[g] = append(got[g], m.Message.Seq)
	}
	for _, g := range order {
		// What the group still holds after the receive, in seq order.
		var live []uint64
		for _, m := range before.groups[g] {
			ok, err := r.get(keys.Message(s.shard, before.qid, m.Seq), nil)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				live = append(live, m.Seq)
			}
		}
		seqs := got[g]
		if len(seqs) > len(live) || !slices.Equal(seqs, live[:len(seqs)]) {
			t.Fatalf("fifo: group %q delivered %v; it holds %v: not its first messages in seq order", g, seqs, live)
		}
		if n := len(seqs); n < len(live) && before.bySeq[live[n]].VisibleAtMs > now {
			for _, seq := range live[n+1:] {
				if before.bySeq[seq].VisibleAtMs <= now {
					c.cut++
					break
				}
			}
		}
		ref := groupRef{before.qid, g}
		for _, seq := range seqs {
			c.delivered++
			if last, ok := c.last[ref]; ok && seq <= last {
				c.redelivered++
			} else {
				c.last[ref] = seq
			}
		}
	}
}

// checkGroups verifies a queue's FIFO indexes against its records: on a
// FIFO queue one group entry per message and one head entry per group, at
// the (visible_at, seq) of its lowest-seq message with the group as value;
// on a standard queue none.
func checkGroups(t *testing.T, s *Store, q *storepb.QueueRecord, msgs, leases, groups, heads map[string][]byte) {
	t.Helper()
	if !isFifo(q) {
		if len(groups)+len(heads) > 0 {
			t.Errorf("%s: standard queue with %d group and %d head entries", q.Name, len(groups), len(heads))
		}
		return
	}
	first := map[string]*storepb.MessageRecord{}
	for _, v := range msgs {
		m := &storepb.MessageRecord{}
		if err := proto.Unmarshal(v, m); err != nil {
			t.Fatal(err)
		}
		if lv, ok := leases[string(keys.Lease(s.shard, q.Id, m.Seq))]; ok {
			if err := applyLease(m, lv); err != nil {
				t.Fatal(err)
			}
		}
		if _, ok := groups[string(keys.Group(s.shard, q.Id, m.GroupId, m.Seq))]; !ok {
			t.Errorf("%s: seq %d: no group entry", q.Name, m.Seq)
		}
		if f, ok := first[m.GroupId]; !ok || m.Seq < f.Seq {
			first[m.GroupId] = m
		}
	}
	for g, m := range first {
		v, ok := heads[string(keys.GroupHead(s.shard, q.Id, m.VisibleAtMs, m.Seq))]
		if !ok || !bytes.Equal(v, []byte(g)) {
			t.Errorf("%s: group %q: head entry for seq %d at %d: %v %q", q.Name, g, m.Seq, m.VisibleAtMs, ok, v)
		}
	}
	if len(groups) != len(msgs) || len(heads) != len(first) {
		t.Errorf("%s: %d group entries for %d messages, %d heads for %d groups", q.Name, len(groups), len(msgs), len(heads), len(first))
	}
}

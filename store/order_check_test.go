package store

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// checkOrder verifies the receive-order bookkeeping of queue q (see
// priority.go and fair.go): every priority index in use is flagged in
// QueueOrder.levels; on a fair queue each message has one entry in its
// group's index (with the visibility entry's value), and each group with
// messages has a GroupState counting them and those received at least once,
// and one ring entry at (outstanding, turn); nothing else.
func checkOrder(t *testing.T, s *Store, q *storepb.QueueRecord, msgs, leases map[string][]byte, all func([]byte) map[string][]byte) {
	t.Helper()
	r := s.reader(0)
	o, err := r.order(q.Id)
	if err != nil {
		t.Fatal(err)
	}
	for k := range all(keys.PrioritiesPrefix(s.shard, q.Id)) {
		_, _, rank, _, _, err := keys.DecodePriority([]byte(k))
		if err != nil || rank == defaultRank || o.Levels&(1<<rank) == 0 {
			t.Errorf("%s: priority entry %s, levels %b: %v", q.Name, keys.Pretty([]byte(k)), o.Levels, err)
		}
	}
	fair := all(keys.FairsPrefix(s.shard, q.Id))
	states := map[string]*storepb.GroupState{}
	for _, v := range msgs {
		m := &storepb.MessageRecord{}
		if err := proto.Unmarshal(v, m); err != nil {
			t.Fatal(err)
		}
		if lv, ok := leases[string(keys.Lease(s.shard, q.Id, m.Seq))]; ok {
			if err := applyLease(m, lv); err != nil {
				t.Fatal(err)
			}
			if p := priorityFromLease(lv[leaseLen-1]); !proto.Equal(wrap(p), wrap(m.Priority)) {
				t.Errorf("%s: seq %d: lease record priority %v, record %v", q.Name, m.Seq, p, m.Priority)
			}
		}
		if !isFair(q) {
			continue
		}
		k := keys.AppendFair(nil, s.shard, q.Id, m.GroupId, m.VisibleAtMs, m.Seq)
		if _, ok := fair[string(k)]; !ok {
			t.Errorf("%s: seq %d: no fair entry %s", q.Name, m.Seq, keys.Pretty(k))
		}
		delete(fair, string(k))
		st := states[m.GroupId]
		if st == nil {
			st = &storepb.GroupState{}
			states[m.GroupId] = st
		}
		st.Messages++
		if m.ReceiveCount > 0 {
			st.Outstanding++
		}
	}
	for k := range fair {
		t.Errorf("%s: fair entry %s without message", q.Name, keys.Pretty([]byte(k)))
	}
	ring := all(keys.GroupRingPrefix(s.shard, q.Id))
	for g, want := range states {
		got := &storepb.GroupState{}
		if _, err := r.get(keys.GroupState(s.shard, q.Id, g), got); err != nil {
			t.Fatal(err)
		}
		if got.Messages != want.Messages || got.Outstanding != want.Outstanding {
			t.Errorf("%s: group %q: state %v, want messages %d outstanding %d", q.Name, g, got, want.Messages, want.Outstanding)
		}
		rk := string(keys.GroupRing(s.shard, q.Id, uint64(got.Outstanding), got.Turn, g))
		if _, ok := ring[rk]; !ok {
			t.Errorf("%s: group %q: no ring entry %s", q.Name, g, keys.Pretty([]byte(rk)))
		}
		delete(ring, rk)
	}
	for k := range ring {
		t.Errorf("%s: ring entry %s of no group", q.Name, keys.Pretty([]byte(k)))
	}
	var stray int
	for k := range all(keys.OrderPrefix(s.shard, q.Id)) {
		if bytes.HasPrefix([]byte(k), keys.GroupState(s.shard, q.Id, "")[:len(keys.OrderPrefix(s.shard, q.Id))+1]) {
			stray++
		}
	}
	if stray != len(states) {
		t.Errorf("%s: %d group states, %d groups", q.Name, stray, len(states))
	}
}

func wrap(p *int32) *storepb.MessageRecord { return &storepb.MessageRecord{Priority: p} }

// checkPriorityOrder checks an unfiltered receive on a strict standard
// queue that is not fair: its messages come highest priority first.
func checkPriorityOrder(t *testing.T, s *Store, data []byte, res *Result) {
	t.Helper()
	var c storepb.Command
	if proto.Unmarshal(data, &c) != nil || c.GetReceive() == nil || len(res.Received) < 2 || res.Replayed {
		return
	}
	f := c.GetReceive().GetFilter()
	if len(f.GetAll())+len(f.GetAny())+len(f.GetNone()) > 0 {
		return
	}
	qi, err := s.Queue(res.Tenant, res.Queue)
	if err != nil || qi == nil {
		return
	}
	a := qi.Record.Attributes
	if a.Fifo || a.Fairness == FairnessGroup || a.PriorityMode == PriorityWeighted {
		return
	}
	for i := 1; i < len(res.Received); i++ {
		if PriorityOf(res.Received[i].Message) > PriorityOf(res.Received[i-1].Message) {
			t.Fatalf("%s: receive returned priority %d after %d", res.Queue, PriorityOf(res.Received[i].Message), PriorityOf(res.Received[i-1].Message))
		}
	}
}

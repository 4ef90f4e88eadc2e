package store

import (
	"slices"
	"strings"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Fair queues (see DESIGN.md, "Fair groups"). On a queue with fairness
// "group" each message group (group_id; messages without one are the
// group "") has:
//
//   - its own visibility index ('f' group visible_at seq), kept in step with
//     the priority levels like a tag index;
//   - a GroupState ('w' 0x03 group): outstanding = its messages received at
//     least once and not yet removed (the messages a consumer holds or will
//     get again), turn = when it was last served (QueueOrder.fair_turn),
//     messages = how many it stores;
//   - a ring entry ('w' 0x04 outstanding turn group) while it stores
//     messages.
//
// An unfiltered receive walks the ring from its start (fewest outstanding,
// then served longest ago) and serves one message at a time to the group
// that is first by (outstanding, turn) counting what this receive already
// gave it: a group flooding the queue piles up outstanding messages and
// yields to the others. Every count changes by commands only (receive,
// delete, dead-letter move, retention), never by time, so apply stays
// deterministic. A group whose messages are all in flight or delayed costs
// one seek when the ring reaches it; a receive passes over at most
// fairGroupBudget such groups.
const fairGroupBudget = 1_000

func isFair(q *storepb.QueueRecord) bool {
	return q.Attributes.GetFairness() == FairnessGroup
}

// fairMark is the low-water mark key of group's fair index.
func fairMark(shard, qid uint64, group string) []byte {
	return keys.LowMarkOf(keys.FairPrefix(shard, qid, group))
}

type groupKey struct {
	qid   uint64
	group string
}

type groupEntry struct {
	st      *storepb.GroupState
	existed bool // a ring entry at (out0, turn0) is stored
	out0    int64
	turn0   uint64
	dirty   bool
}

// group returns the state of group g of queue qid, loaded once per command.
func (t *txn) group(qid uint64, g string) (*groupEntry, error) {
	k := groupKey{qid, g}
	if e, ok := t.groups[k]; ok {
		return e, nil
	}
	st := &storepb.GroupState{}
	found, err := t.get(keys.GroupState(t.s.shard, qid, g), st)
	if err != nil {
		return nil, err
	}
	e := &groupEntry{st: st, existed: found && st.Messages > 0, out0: st.Outstanding, turn0: st.Turn}
	if t.groups == nil {
		t.groups = map[groupKey]*groupEntry{}
	}
	t.groups[k] = e
	return e, nil
}

// groupInserted counts a new message of a fair queue's group.
func (t *txn) groupInserted(qid uint64, m *storepb.MessageRecord) error {
	e, err := t.group(qid, m.GroupId)
	if err != nil {
		return err
	}
	if e.st.Messages == 0 {
		// A new group takes its turn after the groups served before.
		o, err := t.order(qid)
		if err != nil {
			return err
		}
		e.st.Turn = o.FairTurn
	}
	e.st.Messages++
	if m.ReceiveCount > 0 {
		e.st.Outstanding++
	}
	e.dirty = true
	return nil
}

// groupRemoved uncounts a removed message.
func (t *txn) groupRemoved(qid uint64, m *storepb.MessageRecord) error {
	e, err := t.group(qid, m.GroupId)
	if err != nil {
		return err
	}
	e.st.Messages--
	if m.ReceiveCount > 0 {
		e.st.Outstanding--
	}
	e.dirty = true
	return nil
}

// groupLeased records that a receive served m (wasNew: its first receive):
// the group gets the next turn.
func (t *txn) groupLeased(qid uint64, m *storepb.MessageRecord, wasNew bool) error {
	e, err := t.group(qid, m.GroupId)
	if err != nil {
		return err
	}
	o, err := t.order(qid)
	if err != nil {
		return err
	}
	o.FairTurn++
	t.putOrder(qid)
	e.st.Turn = o.FairTurn
	if wasNew {
		e.st.Outstanding++
	}
	e.dirty = true
	return nil
}

// flushGroups writes the group states and ring entries the command
// changed, in key order.
func (t *txn) flushGroups() error {
	ks := make([]groupKey, 0, len(t.groups))
	for k, e := range t.groups {
		if e.dirty {
			ks = append(ks, k)
		}
	}
	slices.SortFunc(ks, func(a, b groupKey) int {
		if a.qid != b.qid {
			if a.qid < b.qid {
				return -1
			}
			return 1
		}
		return strings.Compare(a.group, b.group)
	})
	sh := t.s.shard
	for _, k := range ks {
		e := t.groups[k]
		if e.existed {
			if err := t.del(keys.GroupRing(sh, k.qid, uint64(e.out0), e.turn0, k.group)); err != nil {
				return err
			}
		}
		if e.st.Messages <= 0 {
			if err := t.del(keys.GroupState(sh, k.qid, k.group)); err != nil {
				return err
			}
			continue
		}
		if err := t.set(keys.GroupState(sh, k.qid, k.group), e.st); err != nil {
			return err
		}
		if err := t.setRaw(keys.GroupRing(sh, k.qid, uint64(e.st.Outstanding), e.st.Turn, k.group), nil); err != nil {
			return err
		}
	}
	return nil
}

// fairCand is a group taking part in one fair receive.
type fairCand struct {
	out   int64
	turn  uint64
	group string
	c     *cursor
}

func (a *fairCand) less(b *fairCand) bool {
	if a.out != b.out {
		return a.out < b.out
	}
	if a.turn != b.turn {
		return a.turn < b.turn
	}
	return a.group < b.group
}

// scanFair visits visible messages of fair queue qid in fair order (see
// above) until visit returns true. It reads O(visited + groups with no
// visible message met, at most fairGroupBudget).
func (t *txn) scanFair(qid uint64, visit func(*storepb.MessageRecord) bool) (err error) {
	o, err := t.order(qid)
	if err != nil {
		return err
	}
	turn := o.FairTurn
	w := &walk{t: t}
	recs := &recordIter{t: t, qid: qid}
	rp := keys.GroupRingPrefix(t.s.shard, qid)
	ring, err := t.iter(rp, keys.PrefixEnd(rp))
	if err != nil {
		return err
	}
	defer func() {
		closeInto(ring, &err)
		w.close(&err)
		recs.close(&err)
	}()
	var (
		active []*fairCand // groups with a visible message, served in less order
		next   *fairCand   // the ring's next group, not loaded yet
		budget = fairGroupBudget
	)
	readRing := func(ok bool) error {
		next = nil
		if !ok {
			return nil
		}
		_, _, out, tn, g, err := keys.DecodeGroupRing(ring.Key())
		if err != nil {
			return err
		}
		next = &fairCand{out: int64(out), turn: tn, group: g}
		return nil
	}
	if err := readRing(ring.First()); err != nil {
		return err
	}
	for {
		// Load groups from the ring while one could come before the best
		// loaded group.
		for next != nil && budget > 0 && (len(active) == 0 || next.less(minCand(active))) {
			c, err := w.open(keys.FairPrefix(t.s.shard, qid, next.group), t.now)
			if err != nil {
				return err
			}
			if c.ok {
				next.c = c
				active = append(active, next)
			} else {
				budget--
			}
			if err := readRing(ring.Next()); err != nil {
				return err
			}
		}
		if len(active) == 0 {
			return nil
		}
		best := minCand(active)
		m, err := t.indexedRecord(qid, recs, best.c.cur, best.c.value)
		if err != nil {
			return err
		}
		if m.ReceiveCount == 0 {
			best.out++
		}
		turn++
		best.turn = turn
		if visit(m) {
			return nil
		}
		if err := best.c.load(best.c.it.Next()); err != nil {
			return err
		}
		if !best.c.ok {
			active = slices.DeleteFunc(active, func(c *fairCand) bool { return c == best })
		}
	}
}

func minCand(cs []*fairCand) *fairCand {
	best := cs[0]
	for _, c := range cs[1:] {
		if c.less(best) {
			best = c
		}
	}
	return best
}

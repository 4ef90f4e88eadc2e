package store

import (
	"errors"
	"slices"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// scheduleOp makes c a random CancelMessage or RescheduleMessage: mostly of a
// stored message on its own queue, sometimes on another queue or of an id
// that names nothing.
func (g *propGen) scheduleOp(c *storepb.Command) {
	ids := make([]string, 0, len(g.view.msgs))
	for id := range g.view.msgs {
		ids = append(ids, id)
	}
	slices.Sort(ids) // map order is random; the log must not be
	queue, id := propQueues[g.rng.IntN(len(propQueues))], "nothing"
	if len(ids) > 0 && g.rng.IntN(10) > 0 {
		id = ids[g.rng.IntN(len(ids))]
		if g.rng.IntN(8) > 0 {
			queue = g.view.msgs[id].q.Name
		}
	}
	if g.rng.IntN(2) == 0 {
		c.Op = &storepb.Command_CancelMessage{CancelMessage: &storepb.CancelMessage{Tenant: propTenant, Queue: queue, MessageId: id}}
		return
	}
	op := &storepb.RescheduleMessage{Tenant: propTenant, Queue: queue, MessageId: id}
	switch k := g.rng.IntN(6); {
	case k == 0:
		op.DelayMs = -1 // refused
	case k < 3:
		op.DeliverAtMs = g.now - 2000 + int64(g.rng.IntN(10_000))
	default:
		op.DelayMs = int64(g.rng.IntN(8000))
	}
	c.Op = &storepb.Command_RescheduleMessage{RescheduleMessage: op}
}

// checkSchedule checks a CancelMessage / RescheduleMessage against the
// state before (b) and after (a) and returns the ids it must have removed.
func (g *propGen) checkSchedule(i int, c *storepb.Command, res *Result, b, a *propView, changed map[string]bool) []string {
	var queue, id string
	var rs *storepb.RescheduleMessage
	switch op := c.Op.(type) {
	case *storepb.Command_CancelMessage:
		queue, id = op.CancelMessage.Queue, op.CancelMessage.MessageId
	case *storepb.Command_RescheduleMessage:
		rs = op.RescheduleMessage
		queue, id = rs.Queue, rs.MessageId
	}
	q, pm := b.queues[queue], b.msgs[id]
	var at int64
	if rs != nil {
		at = a.now + rs.DelayMs
		if rs.DeliverAtMs > 0 {
			at = max(rs.DeliverAtMs, a.now)
		}
	}
	var want error
	switch {
	case q == nil:
		want = ErrQueueNotFound
	case rs != nil && q.Attributes.Fifo, rs != nil && rs.DeliverAtMs <= 0 && rs.DelayMs < 0:
		want = ErrInvalidArgument
	case pm == nil || pm.q.Id != q.Id || !atItsSlot(pm):
		// A dead-lettered or redriven message keeps its id but not its
		// slot: it was received before and is no longer found by id.
		want = ErrMessageNotFound
	case pm.rec.ReceiveCount > 0:
		want = ErrMessageAlreadyReceived
	case rs != nil && at > pm.rec.EnqueuedAtMs+q.Attributes.MessageRetentionMs:
		want = ErrInvalidArgument
	}
	if !errors.Is(res.Err, want) || (want == nil && res.Err != nil) {
		g.fail(i, c, "outcome %v, want %v", res.Err, want)
	}
	switch {
	case want != nil:
		g.cov["schedule refused"]++
		return nil
	case rs == nil:
		g.cov["cancelled"]++
		return []string{id}
	}
	g.cov["rescheduled"]++
	changed[id] = true
	if m := a.msgs[id]; m == nil || m.rec.VisibleAtMs != at || res.VisibleAtMs != at {
		g.fail(i, c, "%s: visible_at after the reschedule %v (result %d), want %d", id, m, res.VisibleAtMs, at)
	}
	return nil
}

// atItsSlot: the message lives where its id says (queue id and seq).
func atItsSlot(pm *propMsg) bool {
	ref, ok := ParseMessageID(pm.rec.Id)
	return ok && ref.Shard == propShard && ref.Queue == pm.q.Id && ref.Seq == pm.rec.Seq
}

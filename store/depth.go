package store

import (
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// QueueDepth is one queue's depth for metrics.
type QueueDepth struct {
	Tenant, Queue string
	Stats         Stats
	// OldestEnqueuedMs is when the oldest stored message (lowest seq)
	// arrived in the queue, Unix ms; 0 when the queue is empty.
	OldestEnqueuedMs int64
}

// Depths calls fn with the depth of up to limit queues of this replica
// (every queue if limit <= 0), in catalog order (tenant, then name). It
// reads local state only (no read barrier: metrics may lag) and costs, per
// queue, two reads: its meta (counters) and its oldest message (at
// low_seq). The in-flight and delayed counts are those of the queue's last
// settle (its last command, or the Tick that follows every lease end and
// delay end), so they may lag nowMs by a tick; GetQueue is exact.
// fn returning false stops the walk.
func (s *Store) Depths(nowMs int64, limit int, fn func(QueueDepth) bool) (err error) {
	t, done := s.snapshot(nowMs)
	defer done()
	qs, err := t.queues()
	if err != nil {
		return err
	}
	for n, q := range qs {
		if limit > 0 && n >= limit {
			return nil
		}
		meta, err := t.queueMeta(q.Id)
		if err != nil {
			return err
		}
		st := Stats{Messages: meta.Messages, Bytes: meta.Bytes, InFlight: meta.InFlight, Delayed: meta.Delayed}
		st.Visible = max(meta.Messages-st.InFlight-st.Delayed, 0)
		if !meta.Counted {
			// A queue from before the counters: count.
			if st, err = t.stats(q.Id); err != nil {
				return err
			}
		}
		d := QueueDepth{Tenant: q.Tenant, Queue: q.Name, Stats: st}
		if st.Messages > 0 {
			err := t.scanBySeq(q.Id, func(m *storepb.MessageRecord) bool {
				d.OldestEnqueuedMs = m.EnqueuedAtMs
				return true
			})
			if err != nil {
				return err
			}
		}
		if !fn(d) {
			return nil
		}
	}
	return nil
}

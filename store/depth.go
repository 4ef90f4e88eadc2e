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
// (every queue if limit <= 0), in catalog order (tenant, then name), as of
// nowMs. It reads local state only (no read barrier: metrics may lag) and
// costs, per queue, a scan of its in-flight and delayed messages plus one
// seek. fn returning false stops the walk.
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
		st, err := t.stats(q.Id)
		if err != nil {
			return err
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

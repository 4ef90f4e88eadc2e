package server

import (
	"context"
	"time"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// outboxBatch bounds the entries moved by one relay round.
const outboxBatch = 100

// housekeeping runs on every node and acts only where this node leads the
// shard: it proposes expiry ticks when something has expired and relays
// outbox entries (dead-letter moves, redrives) to their target queues.
func (s *Server) housekeeping() {
	t := time.NewTicker(s.cfg.HousekeepingInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-s.stop; cancel() }()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.expire(ctx)
			s.relayOutbox(ctx)
		case <-s.relay:
			s.relayOutbox(ctx)
		}
	}
}

func (s *Server) leading() bool {
	st, err := s.raft.Status(s.shard)
	return err == nil && st.IsLeader
}

// expire proposes ticks while the store reports expired records, each
// bounded by TickLimit so one apply round stays short.
func (s *Server) expire(ctx context.Context) {
	for ctx.Err() == nil && s.leading() {
		need, err := s.store.NeedsTick(s.cfg.Now().UnixMilli())
		if err != nil {
			s.cfg.Logger.Error("expiry check failed", "shard", s.shard, "err", err)
			return
		}
		if !need {
			return
		}
		res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_Tick{Tick: &storepb.Tick{Limit: s.cfg.TickLimit}}})
		if err != nil {
			s.cfg.Logger.Warn("expiry tick failed", "shard", s.shard, "err", err)
			return
		}
		if res.Removed < int(s.cfg.TickLimit) {
			return
		}
	}
}

// DeliverOutbox inserts outbox entries (of any shard) into their target
// queues on this shard, each once, and returns the ids of those delivered
// now or before. An entry whose target is missing stays undelivered.
func (s *Server) DeliverOutbox(ctx context.Context, entries []*storepb.OutboxEntry) ([]uint64, error) {
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_DeliverOutbox{DeliverOutbox: &storepb.DeliverOutbox{Entries: entries}}})
	if err != nil {
		return nil, err
	}
	var done []uint64
	for i, e := range entries {
		if i < len(res.Entries) && res.Entries[i] != nil {
			s.cfg.Logger.Warn("outbox entry not delivered", "shard", s.shard, "source_shard", e.GetSourceShard(),
				"target", e.GetTargetQueue(), "err", res.Entries[i])
			continue
		}
		done = append(done, e.GetId())
	}
	return done, nil
}

// relayOutbox delivers pending outbox entries and then acknowledges the
// delivered ones. Delivery is idempotent per (source shard, outbox id), so a
// crash between the two steps only repeats a delivery that the target
// ignores.
func (s *Server) relayOutbox(ctx context.Context) {
	for ctx.Err() == nil && s.leading() {
		entries, err := s.store.PendingOutbox(outboxBatch)
		if err != nil {
			s.cfg.Logger.Error("outbox read failed", "shard", s.shard, "err", err)
			return
		}
		if len(entries) == 0 {
			return
		}
		deliver := s.deliver
		if deliver == nil {
			deliver = s.DeliverOutbox
		}
		done, err := deliver(ctx, entries)
		if err != nil {
			s.cfg.Logger.Warn("outbox delivery failed", "shard", s.shard, "err", err)
		}
		if len(done) == 0 {
			return // only undeliverable entries are left; retried on the next tick
		}
		if _, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_AckOutbox{AckOutbox: &storepb.AckOutbox{Ids: done}}}); err != nil {
			s.cfg.Logger.Warn("outbox ack failed", "shard", s.shard, "err", err)
			return
		}
		if err != nil || len(entries) < outboxBatch {
			return
		}
	}
}

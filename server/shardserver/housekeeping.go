package shardserver

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

const (
	// outboxBatch bounds the entries read and moved by one relay round, and
	// outboxPageBytes their size: a round costs two proposals in sequence
	// (deliver, ack) whatever it holds, so a fan-out backlog moves in big
	// rounds.
	outboxBatch     = 1000
	outboxPageBytes = 1 << 20
	// relayPagesPerPass bounds the outbox pages one relay pass reads; the
	// next pass goes on from where this one stopped.
	relayPagesPerPass = 50
	// relayRetryMin and relayRetryMax bound the backoff of a target queue
	// whose delivery failed for a passing reason (its shard has no leader,
	// the network): its entries wait, every other target's go ahead.
	relayRetryMin = 100 * time.Millisecond
	relayRetryMax = 30 * time.Second
)

// housekeeper is the state of a shard's housekeeping goroutine. deliver and
// catalog may be set at any time; the rest belongs to the goroutine.
type housekeeper struct {
	deliver atomic.Pointer[Deliverer]
	catalog atomic.Pointer[Catalog]

	// cursor is the relay's place in the outbox: the last id of the page
	// before (0: the start). A pass reads on from it, so entries that
	// cannot be delivered now never hide those behind them.
	cursor uint64
	// tail is an outbox id at and below which every entry was settled
	// when a sweep (clean: nothing left behind) passed it; ids only grow,
	// so a pass woken by new entries starts there instead of reading past
	// the tombstones of everything already delivered. The ticker's passes
	// still sweep from the start.
	tail       uint64
	sweepClean bool
	// term is the leadership term the sweep runs in: a sweep never spans
	// two terms (another leader may have left entries behind meanwhile).
	term uint64
	// retry holds the targets (tenant, queue) whose delivery failed and
	// when to try them again. Per target, not per entry, so a target's
	// entries still arrive in outbox order (a FIFO group's order).
	retry map[string]retryAt
	// blocked holds the targets passed over in this sweep (delivery failed,
	// or backing off): they stay passed over until the sweep ends, even if
	// their backoff ends meanwhile, because entries of theirs behind the
	// cursor are still pending and must arrive first.
	blocked map[string]bool
	// reconciled is when the reconciler last ran, reconcileAfter the last
	// partition copy it looked at (zero: the catalog's start).
	reconciled     time.Time
	reconcileAfter store.QueueRef
	// discarded counts outbox entries dropped because neither their
	// target nor their source queue exists any more.
	discarded metric.Int64Counter
}

type retryAt struct {
	failures int
	at       time.Time
}

// housekeeping runs on every node and acts only where this node leads the
// shard: it proposes expiry ticks when something has expired, relays
// outbox entries (dead-letter moves, redrives) to their target queues and
// reconciles partition copies with their records of truth.
func (s *Server) housekeeping() {
	t := time.NewTicker(s.cfg.HousekeepingInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-s.stop; cancel() }()
	s.hk.retry = map[string]retryAt{}
	s.hk.discarded = discardCounter(s.cfg.Meter)
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if st, err := s.raft.Status(s.shard); err == nil {
				s.topics.coord.abandon(st.Term, st.IsLeader)
			}
			s.expire(ctx)
			s.trimTopics(ctx)
			s.relayOutbox(ctx, false)
			if time.Since(s.hk.reconciled) >= s.cfg.ReconcileInterval {
				s.hk.reconciled = time.Now()
				s.reconcile(ctx)
			}
		case <-s.relay:
			s.relayOutbox(ctx, true)
		}
	}
}

func discardCounter(m metric.Meter) metric.Int64Counter {
	if m == nil {
		m = metricNoop().Meter("quorumq")
	}
	c, err := m.Int64Counter("outbox.discarded",
		metric.WithDescription("Dead-letter moves and redrives dropped because their target and source queues were both deleted"),
		metric.WithUnit("{message}"))
	if err != nil { // only on an invalid name: a bug caught by any test
		panic(err)
	}
	return c
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
// queues on this shard, each once. The answer lists in Ids the entries
// delivered now or before, and in ReturnIds those refused because their
// target queue does not exist (a refusal is final: the target shard
// remembers it, so the source may send the entry elsewhere).
func (s *Server) DeliverOutbox(ctx context.Context, entries []*storepb.OutboxEntry) (*storepb.AckOutbox, error) {
	res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_DeliverOutbox{DeliverOutbox: &storepb.DeliverOutbox{Entries: entries}}})
	if err != nil {
		return nil, err
	}
	ack := &storepb.AckOutbox{}
	for i, e := range entries {
		if i < len(res.Entries) && res.Entries[i] != nil {
			s.cfg.Logger.Warn("outbox entry refused", "shard", s.shard, "source_shard", e.GetSourceShard(),
				"tenant", e.GetTargetTenant(), "target", e.GetTargetQueue(), "err", res.Entries[i])
			ack.ReturnIds = append(ack.ReturnIds, e.GetId())
			continue
		}
		ack.Ids = append(ack.Ids, e.GetId())
	}
	return ack, nil
}

// relayOutbox delivers pending outbox entries and then acknowledges them
// on this shard: delivered ones are deleted, refused ones (target queue
// gone) are sent back to the queue they left. Delivery is idempotent per
// (source shard, outbox id), so a crash between the two steps only repeats
// a delivery that the target answers as before. A pass reads the outbox
// in pages from a cursor and skips targets in backoff, so no entry — of
// any tenant — waits behind one that cannot be delivered.
func (s *Server) relayOutbox(ctx context.Context, woken bool) {
	hk := &s.hk
	st, err := s.raft.Status(s.shard)
	if err != nil || !st.IsLeader {
		return
	}
	if st.Term != hk.term { // a new term: the sweep starts over
		hk.term, hk.cursor = st.Term, 0
	}
	if hk.cursor == 0 { // a new sweep
		hk.sweepClean = true
		hk.blocked = map[string]bool{}
		if woken {
			hk.cursor = hk.tail
		}
	}
	for pages := 0; pages < relayPagesPerPass && ctx.Err() == nil && s.leading(); pages++ {
		entries, err := s.store.PendingOutboxAfter(hk.cursor, outboxBatch)
		if err != nil {
			s.cfg.Logger.Error("outbox read failed", "shard", s.shard, "err", err)
			return
		}
		if len(entries) == 0 {
			hk.endSweep()
			return
		}
		full := len(entries) == outboxBatch
		if n := pageBytes(entries, outboxPageBytes); n < len(entries) {
			entries, full = entries[:n], true
		}
		clean, ok := s.relayPage(ctx, entries)
		if !ok {
			return // the page is read again by the next pass
		}
		hk.sweepClean = hk.sweepClean && clean
		hk.cursor = entries[len(entries)-1].GetId()
		if !full {
			hk.endSweep()
			return
		}
	}
}

// endSweep closes a sweep at the cursor: the next pass starts over.
func (hk *housekeeper) endSweep() {
	if hk.sweepClean {
		hk.tail = max(hk.tail, hk.cursor)
	}
	hk.cursor = 0
}

// pageBytes is how many of entries (at least one) fit in max bytes.
func pageBytes(entries []*storepb.OutboxEntry, max int) int {
	total := 0
	for i, e := range entries {
		total += proto.Size(e)
		if total > max && i > 0 {
			return i
		}
	}
	return len(entries)
}

// relayPage delivers the entries of one page whose targets are not
// blocked in this sweep and acks the outcome; it reports whether every
// entry was settled (delivered or refused), and false for ok when the ack
// could not be proposed.
func (s *Server) relayPage(ctx context.Context, entries []*storepb.OutboxEntry) (clean, ok bool) {
	hk := &s.hk
	now := s.cfg.Now()
	var due []*storepb.OutboxEntry
	for _, e := range entries {
		k := targetKey(e)
		if r, ok := hk.retry[k]; hk.blocked[k] || (ok && now.Before(r.at)) {
			hk.blocked[k] = true // its backoff may end before the sweep does
			continue
		}
		due = append(due, e)
	}
	clean = len(due) == len(entries)
	if len(due) == 0 {
		return clean, true
	}
	deliver := s.DeliverOutbox
	if d := hk.deliver.Load(); d != nil {
		deliver = *d
	}
	ack, err := deliver(ctx, due)
	if ack == nil {
		ack = &storepb.AckOutbox{}
	}
	if err != nil {
		s.cfg.Logger.Warn("outbox delivery failed", "shard", s.shard, "err", err)
	}
	settled := map[uint64]bool{}
	for _, id := range ack.Ids {
		settled[id] = true
	}
	for _, id := range ack.ReturnIds {
		settled[id] = true
	}
	for _, e := range due {
		k := targetKey(e)
		clean = clean && settled[e.GetId()]
		switch {
		case settled[e.GetId()]:
			if !hk.blocked[k] {
				delete(hk.retry, k)
			}
		case !hk.blocked[k]: // back off once per sweep, however many entries failed
			hk.blocked[k] = true
			r := hk.retry[k]
			r.failures++
			r.at = now.Add(min(relayRetryMin<<min(r.failures-1, 20), relayRetryMax))
			hk.retry[k] = r
		}
	}
	if len(ack.Ids) == 0 && len(ack.ReturnIds) == 0 {
		return clean, true
	}
	s.noteReturns(ctx, due, ack.ReturnIds)
	s.unsubscribeRefused(ctx, due, ack.ReturnIds)
	if _, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_AckOutbox{AckOutbox: ack}}); err != nil {
		s.cfg.Logger.Warn("outbox ack failed", "shard", s.shard, "err", err)
		return false, false
	}
	return clean, true
}

// noteReturns logs the entries refused by their targets and counts those
// that have nowhere left to go (the store discards them).
func (s *Server) noteReturns(ctx context.Context, entries []*storepb.OutboxEntry, ids []uint64) {
	if len(ids) == 0 {
		return
	}
	byID := make(map[uint64]*storepb.OutboxEntry, len(entries))
	for _, e := range entries {
		byID[e.GetId()] = e
	}
	for _, id := range ids {
		e := byID[id]
		if e == nil {
			continue
		}
		if e.GetReturned() || returnTarget(e) == "" {
			s.cfg.Logger.Warn("outbox entry discarded: its target and source queues no longer exist", "shard", s.shard,
				"tenant", e.GetTargetTenant(), "target", e.GetTargetQueue(), "source", e.GetSourceQueue(),
				"message_id", e.GetMessage().GetId())
			s.hk.discarded.Add(ctx, 1)
			continue
		}
		s.cfg.Logger.Info("outbox entry returned to its source: the target queue no longer exists", "shard", s.shard,
			"tenant", e.GetTargetTenant(), "target", e.GetTargetQueue(), "source", returnTarget(e))
	}
}

// returnTarget mirrors the store's choice of where a refused entry goes.
func returnTarget(e *storepb.OutboxEntry) string {
	if e.GetSourceQueue() != "" {
		return e.GetSourceQueue()
	}
	if !e.GetRedrive() {
		return e.GetMessage().GetDeadLetterSource()
	}
	return ""
}

func targetKey(e *storepb.OutboxEntry) string {
	return e.GetTargetTenant() + "\x00" + e.GetTargetQueue()
}

// errNoCatalog: the server has no view of the records of truth (a Server
// used without a node).
var errNoCatalog = errors.New("no catalog configured")

// catalog returns the records of truth this shard's housekeeping and
// redrive consult.
func (s *Server) catalog() (Catalog, error) {
	if c := s.hk.catalog.Load(); c != nil {
		return *c, nil
	}
	return nil, errNoCatalog
}

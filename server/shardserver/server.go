// Package shardserver is the per-shard service behind the API tier
// (server/router): for one shard it checks each call, turns it into a store
// command stamped with the leader's clock, proposes it to the shard's Raft
// group and maps the outcome to a gRPC status; its leader also runs the
// shard's housekeeping (expiry, outbox relay, reconciler, topic group
// coordinators). It knows nothing of Pebble or Raft internals: it uses the
// shard through the small Raft interface below. It never imports the
// router: what it needs of the cluster comes in as interfaces (Catalog,
// Deliverer, TopicProposer).
package shardserver

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Raft is what the server needs from the Raft host.
type Raft interface {
	Propose(ctx context.Context, group uint64, data []byte) (any, error)
	ReadIndex(ctx context.Context, group uint64) error
	Status(group uint64) (raftnode.GroupStatus, error)
	WaitLeader(ctx context.Context, group uint64) (uint64, error)
}

var _ Raft = (*raftnode.Host)(nil)

// Config tunes a Server. Zero values take the defaults.
type Config struct {
	Logger *slog.Logger
	// Now is the leader's clock, stamped into every command (tests replace it).
	Now func() time.Time
	// ProposeTimeout bounds one proposal; past it the call fails with
	// UNAVAILABLE / NO_QUORUM. Default 5s.
	ProposeTimeout time.Duration
	// HousekeepingInterval is how often the leader checks for expired
	// messages and undelivered outbox entries. Default 1s.
	HousekeepingInterval time.Duration
	// TickLimit bounds the removals of one expiry command. Default 1000.
	TickLimit int32
	// Meter records the per-queue message counters and depth gauges; nil:
	// not recorded.
	Meter metric.Meter
	// MaxQueueLabels caps the (tenant, queue) pairs with their own series
	// (default DefaultMaxQueueLabels); the rest are summed under "_other".
	MaxQueueLabels int
	// TracerProvider makes the propose, forward and long-poll spans; nil:
	// no spans.
	TracerProvider trace.TracerProvider
	// ReconcileInterval is how often the leader brings its partition
	// copies in line with their records of truth. Default 30 housekeeping
	// intervals.
	ReconcileInterval time.Duration
}

func (c *Config) fill() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ProposeTimeout <= 0 {
		c.ProposeTimeout = 5 * time.Second
	}
	if c.HousekeepingInterval <= 0 {
		c.HousekeepingInterval = time.Second
	}
	if c.TickLimit <= 0 {
		c.TickLimit = 1000
	}
	if c.ReconcileInterval <= 0 {
		c.ReconcileInterval = 30 * c.HousekeepingInterval
	}
}

// Server serves QueueService for one shard.
type Server struct {
	qv1.UnimplementedQueueServiceServer

	cfg   Config
	raft  Raft
	store *store.Store
	shard uint64

	polls   *pollRegistry
	limiter *sendLimiter
	relay   chan struct{} // wakes the outbox relay
	metrics *metrics
	tracer  trace.Tracer

	stopOnce sync.Once
	stop     chan struct{}
	wg       sync.WaitGroup

	sends sendLanes // sends to one queue sharing commands

	receivesProposed atomic.Uint64
	// metadataOnly: the shard keeps queue records of truth but no messages
	// (shard 0 of a cluster with data shards).
	metadataOnly atomic.Bool
	// hk is the housekeeping goroutine's state (outbox relay, reconciler).
	hk housekeeper
	// topics: readers of partition logs waiting for appends, and what
	// unsubscribes a deleted queue (topic_shard.go).
	topics topicState
}

// Deliverer delivers outbox entries to the shards of their target queues.
// The answer lists the ids delivered (now or before) in Ids and those
// refused because their target queue does not exist in ReturnIds; an entry
// in neither was not delivered (retry later).
type Deliverer func(ctx context.Context, entries []*storepb.OutboxEntry) (*storepb.AckOutbox, error)

// SetMetadataOnly marks the shard as holding no messages (no depth gauges).
func (s *Server) SetMetadataOnly() { s.metadataOnly.Store(true) }

// SetDeliverer routes the outbox relay through d (safe at any time).
func (s *Server) SetDeliverer(d Deliverer) { s.hk.deliver.Store(&d) }

// SetCatalog gives the shard's housekeeping the cluster's records of truth
// (the reconciler) and the redrive its source check (safe at any time).
func (s *Server) SetCatalog(c Catalog) { s.hk.catalog.Store(&c) }

// Shard is the Raft group this server serves.
func (s *Server) Shard() uint64 { return s.shard }

// Raft is the Raft host the server proposes through.
func (s *Server) Raft() Raft { return s.raft }

// Store is the shard's state.
func (s *Server) Store() *store.Store { return s.store }

// New returns a server for shard `shard` whose state is st and whose Raft
// group is reached through raft. Register StateMachine() with the Raft host
// for that group, then call Start.
func New(cfg Config, raft Raft, st *store.Store, shard uint64) *Server {
	cfg.fill()
	s := &Server{
		cfg:     cfg,
		raft:    raft,
		store:   st,
		shard:   shard,
		polls:   newPollRegistry(),
		limiter: newSendLimiter(),
		metrics: newMetrics(cfg.Meter, cfg.MaxQueueLabels),
		tracer:  server.NewTracer(cfg.TracerProvider),
		relay:   make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	s.registerDepth(cfg.Meter)
	s.registerTopicGauges(cfg.Meter)
	return s
}

// StateMachine is the shard's Raft state machine: the store, plus wake-ups
// of long polls and of the outbox relay after each applied round.
func (s *Server) StateMachine() raftnode.StateMachine {
	return &stateMachine{Store: s.store, srv: s}
}

type stateMachine struct {
	*store.Store
	srv *Server
}

// Restored runs after the shard's state was replaced by a snapshot: every
// long poll looks again.
func (m *stateMachine) Restored() {
	m.Store.Restored() // its caches of the old state
	m.srv.polls.wakeAll()
	m.srv.topics.waits.wakeAll()
	m.srv.limiter.forget("")
}

// AfterApply runs on the Raft loop after a round is committed: it must not
// block.
func (m *stateMachine) AfterApply(results []any) {
	m.Store.Committed()
	for _, r := range results {
		res, ok := r.(*store.Result)
		if !ok || res == nil {
			continue
		}
		m.srv.polls.wakeFor(res)
		m.srv.topicApplied(res)
		if res.TenantRecord != nil { // a quota changed
			m.srv.limiter.forget(res.Tenant)
		}
		if res.OutboxAdded {
			select {
			case m.srv.relay <- struct{}{}:
			default:
			}
		}
	}
}

// Start starts the leader's housekeeping (expiry, outbox relay). Stop ends it.
func (s *Server) Start() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.housekeeping()
	}()
}

// Stop stops the housekeeping goroutine and waits for it; in-flight calls
// end through their own contexts.
func (s *Server) Stop() {
	s.stopOnce.Do(func() { close(s.stop) })
	s.wg.Wait()
}

// propose stamps cmd with the leader's time, replicates it and returns the
// store's result; a whole-command outcome comes back as the error.
func (s *Server) propose(ctx context.Context, cmd *storepb.Command) (res *store.Result, err error) {
	ctx, span := s.startPropose(ctx, cmd)
	defer func() { s.endPropose(ctx, span, res, err) }()
	cmd.Version = 1
	cmd.TimeMs = s.cfg.Now().UnixMilli()
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ProposeTimeout)
	defer cancel()
	switch cmd.GetOp().(type) {
	case *storepb.Command_Receive, *storepb.Command_Delete, *storepb.Command_ChangeVisibility:
		// Their own share of each Raft round: a send backlog cannot
		// starve the consumers that drain it.
		ctx = raftnode.WithClass(ctx, raftnode.ClassConsume)
	}
	r, err := s.raft.Propose(ctx, s.shard, data)
	if errors.Is(err, raftnode.ErrLeadershipLost) {
		// The leader stepped down with the entry pending. If no new leader
		// appears before the deadline the shard has lost its quorum.
		if _, werr := s.raft.WaitLeader(ctx, s.shard); werr != nil {
			return nil, fmt.Errorf("propose: %w (%w)", server.ErrNoQuorum, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("propose: %w", err)
	}
	res, ok := r.(*store.Result)
	if !ok || res == nil {
		return nil, fmt.Errorf("propose: unexpected apply result %T", r)
	}
	if res.Err != nil {
		return res, withQueue(res.Err, commandQueue(cmd))
	}
	return res, nil
}

// withQueue names the queue in an outcome's message ("queue not found:
// orders"); field errors already name their field.
func withQueue(err error, queue string) error {
	var fe *store.FieldError
	if err == nil || queue == "" || errors.As(err, &fe) {
		return err
	}
	return fmt.Errorf("%w: %s", err, queue)
}

// commandQueue is the queue a command is about, for error messages.
func commandQueue(cmd *storepb.Command) string {
	switch op := cmd.GetOp().(type) {
	case *storepb.Command_CreateQueue:
		return op.CreateQueue.GetName()
	case *storepb.Command_UpdateQueue:
		return op.UpdateQueue.GetName()
	case *storepb.Command_DeleteQueue:
		return op.DeleteQueue.GetName()
	case *storepb.Command_PurgeQueue:
		return op.PurgeQueue.GetName()
	case *storepb.Command_Send:
		return op.Send.GetQueue()
	case *storepb.Command_Receive:
		return op.Receive.GetQueue()
	case *storepb.Command_Delete:
		return op.Delete.GetQueue()
	case *storepb.Command_ChangeVisibility:
		return op.ChangeVisibility.GetQueue()
	case *storepb.Command_Redrive:
		return op.Redrive.GetQueue()
	case *storepb.Command_Nack:
		return op.Nack.GetQueue()
	}
	return ""
}

// readBarrier makes a following local read linearizable: it returns once
// this replica has applied everything committed before the call.
func (s *Server) readBarrier(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ProposeTimeout)
	defer cancel()
	err := s.raft.ReadIndex(ctx, s.shard)
	if errors.Is(err, raftnode.ErrLeadershipLost) {
		// A read has no effect to be unsure of: wait for the next leader
		// and let the router ask it, or report the lost quorum.
		if _, werr := s.raft.WaitLeader(ctx, s.shard); werr != nil {
			return fmt.Errorf("read index: %w (%w)", server.ErrNoQuorum, err)
		}
		return fmt.Errorf("read index: %w", raftnode.ErrNotLeader)
	}
	if err != nil {
		return fmt.Errorf("read index: %w", err)
	}
	return nil
}

// Ready reports whether this node can serve: its shard has a leader.
func (s *Server) Ready() error {
	st, err := s.raft.Status(s.shard)
	if err != nil {
		return err
	}
	if st.LeaderID == 0 {
		return errors.New("shard has no leader")
	}
	return nil
}

// ReceivesProposed counts receive commands proposed (long polls must not
// propose while they wait).
func (s *Server) ReceivesProposed() uint64 { return s.receivesProposed.Load() }

func newHandleKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("receipt handle key: %w", err)
	}
	return k, nil
}

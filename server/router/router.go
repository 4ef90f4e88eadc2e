package router

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// ForwardedToHeader is a response header naming the node a call (or part
// of it) was forwarded to: the node called does not lead the queue's shard.
// Clients that know several endpoints use it to call the leader directly.
const ForwardedToHeader = "x-quorumq-forwarded-to"

// queueMethod prefixes QueueService's full method names.
const queueMethod = "/quorumq.v1.QueueService/"

var (
	_ shardserver.Catalog       = (*Router)(nil)
	_ shardserver.TopicProposer = (*Router)(nil)
)

// MetadataShard holds tenants and the queue catalog of record.
const MetadataShard = 0

// ShardView tells the router which node leads each shard.
type ShardView interface {
	// Leader returns the leader of shard, waiting (bounded by ctx) while
	// none is known.
	Leader(ctx context.Context, shard uint64) (uint64, error)
	// Hint records a leader named by a NOT_LEADER answer.
	Hint(shard, leader uint64)
}

// RouterConfig assembles a Router.
type RouterConfig struct {
	// Self is this node's id.
	Self uint64
	// Shards is the number of Raft groups of the cluster (it grows with
	// AddShards: SetLayout); 0 on an API-tier node until SetShards.
	Shards int
	// Local are the shard servers of a storage node, one per shard: a
	// shard's replica may be on this node or not (IsMember), as its replica
	// set changes (none on an API node). AddLocal adds added shards'.
	Local map[uint64]*shardserver.Server
	// View finds shard leaders.
	View ShardView
	// Forwarder reaches other nodes; nil on a single-node cluster.
	Forwarder *Forwarder
	Logger    *slog.Logger
	// Timeout bounds one routed call when its context has no deadline
	// (default 5s, like a proposal).
	Timeout time.Duration
	// TracerProvider makes the forward spans; nil: none.
	TracerProvider trace.TracerProvider
	// CacheTTL is how long a queue's partition count is trusted before it
	// is read again from the metadata shard (default 2s): a queue whose
	// partitions grew is spread over the new ones within this time.
	CacheTTL time.Duration
}

// Router serves QueueService on every node: it finds the shards of a queue
// (shard 0 keeps the queue records of truth, data shards keep the queue
// partitions), calls each shard's leader — here, or on another node by
// forwarding — and merges the answers. It keeps no state of its own beyond
// caches, so any number of API-tier nodes may run behind a load balancer.
type Router struct {
	qv1.UnimplementedQueueServiceServer
	cfg    RouterConfig
	log    *slog.Logger
	cache  sync.Map // tenant "\x00" name -> *queueEntry
	rr     sync.Map // tenant "\x00" name -> *queueCounters
	tracer trace.Tracer
	shards atomic.Int64 // 0 until an API-tier node has seen the cluster
	base   atomic.Int64 // shard count before the first AddShards; 0: shards
	local  atomic.Pointer[map[uint64]*shardserver.Server]
	addMu  sync.Mutex // AddLocal's writers

	// quotas: send-rate leases and stored-bytes spreads (quota_lease.go).
	quotas tenantQuotas

	// layout: the layout reads of handles naming a shard not known yet
	// (handle_layout.go); readLayout replaces the read in tests (nil:
	// metadataLayout).
	layout     layoutFlight
	readLayout func(context.Context) (*storepb.ShardLayout, error)
}

// afterFailure handles a failed try of a call on shard's leader: false if
// err is final or ctx ended; else it tells the view the leader err names
// (or that leader could not be reached), waits *backoff (then doubles it,
// to at most 500 ms) and returns the leader to try next (0: ask the view).
func (r *Router) afterFailure(ctx context.Context, shard, leader uint64, err error, backoff *time.Duration) (next uint64, again bool) {
	hint, retry := retryable(err)
	if !retry || ctx.Err() != nil {
		return 0, false
	}
	if hint != 0 && hint != leader {
		r.cfg.View.Hint(shard, hint)
		next = hint
	} else {
		r.cfg.View.Hint(shard, 0) // forget the leader we could not reach
	}
	select {
	case <-ctx.Done():
		return 0, false
	case <-time.After(*backoff):
	}
	*backoff = min(2**backoff, 500*time.Millisecond)
	return next, true
}

// SetLayout tells the router the cluster's shard count and the count
// before the first AddShards (base; 0: never added), which places the
// queues and topics made before it. Neither ever shrinks.
func (r *Router) SetLayout(shards, base int) {
	if base > 0 {
		r.base.Store(int64(base)) // first: legacy placement never sees the new count
	}
	if int64(shards) > r.shards.Load() {
		r.shards.Store(int64(shards))
	}
}

func (r *Router) shardCount() int { return int(r.shards.Load()) }

// baseShards is the shard count queues and topics without a recorded
// placement were placed over.
func (r *Router) baseShards() int {
	if b := r.base.Load(); b > 0 {
		return int(b)
	}
	return r.shardCount()
}

// localServer is this node's server of shard (nil: none).
func (r *Router) localServer(shard uint64) *shardserver.Server {
	if m := r.local.Load(); m != nil {
		return (*m)[shard]
	}
	return nil
}

// AddLocal registers the server of a shard this storage node started
// after the router was made (AddShards).
func (r *Router) AddLocal(shard uint64, srv *shardserver.Server) {
	r.addMu.Lock()
	defer r.addMu.Unlock()
	m := map[uint64]*shardserver.Server{}
	if old := r.local.Load(); old != nil {
		maps.Copy(m, *old)
	}
	m[shard] = srv
	r.local.Store(&m)
}

// NewRouter returns a router.
func NewRouter(cfg RouterConfig) *Router {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 2 * time.Second
	}
	r := &Router{cfg: cfg, log: cfg.Logger, tracer: server.NewTracer(cfg.TracerProvider)}
	r.shards.Store(int64(cfg.Shards))
	local := maps.Clone(cfg.Local)
	r.local.Store(&local)
	return r
}

// ShardOf places partition i of a queue over shards shards
// (store.ShardOf): the placement of queues made before the cluster first
// added shards, over the base count; later ones record theirs.
func ShardOf(shards int, tenant, name string, i int) uint64 {
	return store.ShardOf(shards, tenant, name, i)
}

// PartitionOfKey is the partition of a queue of n partitions that a send
// keyed by key goes to (its partition key, FIFO group or idempotency key).
func PartitionOfKey(key string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// shardOf is the shard of partition i of a queue without a recorded
// placement (see partitionShard).
func (r *Router) shardOf(tenant, name string, i int) uint64 {
	return ShardOf(r.baseShards(), tenant, name, i)
}

// partitionShard is the shard of partition i of q: the one its record of
// truth names, else (a queue made before shards were added) the base
// placement.
func (r *Router) partitionShard(tenant string, q *qv1.Queue, i int) uint64 {
	if ps := q.GetPartitionShards(); i < len(ps) {
		return ps[i]
	}
	return r.shardOf(tenant, q.GetName(), i)
}

// direct reports whether the call addresses one shard (it was routed by a
// router) and which.
func direct(ctx context.Context) (uint64, bool) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return 0, false
	}
	v := md.Get(server.ShardHeader)
	if len(v) == 0 {
		return 0, false
	}
	id, err := strconv.ParseUint(v[0], 10, 64)
	if err != nil {
		return 0, false
	}
	return id, true
}

// serving returns the local server of shard if this node leads it.
func (r *Router) serving(ctx context.Context, shard uint64) (*shardserver.Server, error) {
	srv := r.localServer(shard)
	if srv == nil || !IsMember(srv.Raft(), r.cfg.Self, shard) {
		// The shard's replicas live elsewhere (or this one was moved away):
		// no hint, the caller asks its view again.
		return nil, server.StatusError(codes.Unavailable, server.ReasonNotLeader,
			fmt.Sprintf("node %d has no replica of shard %d", r.cfg.Self, shard), nil)
	}
	leader, err := srv.Leader(ctx)
	if errors.Is(err, raftnode.ErrHalted) {
		// Name the healthy leader, so the caller forwards there at once.
		var meta map[string]string
		if hint := r.peerLeader(ctx, shard); hint != 0 {
			meta = map[string]string{"leader": fmt.Sprint(hint), "shard": fmt.Sprint(shard)}
		}
		return nil, server.StatusError(codes.Unavailable, server.ReasonNotLeader, fmt.Sprintf("node %d's replica of shard %d is halted: %v", r.cfg.Self, shard, err), meta)
	}
	if err != nil {
		return nil, err
	}
	if leader != r.cfg.Self {
		return nil, server.StatusError(codes.Unavailable, server.ReasonNotLeader,
			fmt.Sprintf("node %d does not lead shard %d (leader: node %d)", r.cfg.Self, shard, leader),
			map[string]string{"leader": fmt.Sprint(leader), "shard": fmt.Sprint(shard)})
	}
	return srv, nil
}

// target names a call to one shard: the headers beyond the shard travel
// with a forwarded call and are set on the context of a local one.
type target struct {
	shard       uint64
	partition   int
	incarnation int64
	recordOnly  bool
	waitOnly    bool
	maxBytes    int64
}

func (t target) headers() []string {
	h := []string{server.ShardHeader, strconv.FormatUint(t.shard, 10)}
	if t.partition != 0 {
		h = append(h, server.PartitionHeader, strconv.Itoa(t.partition))
	}
	if t.incarnation != 0 {
		h = append(h, server.IncarnationHeader, strconv.FormatInt(t.incarnation, 10))
	}
	if t.recordOnly {
		h = append(h, server.RecordHeader, "1")
	}
	if t.waitOnly {
		h = append(h, server.WaitOnlyHeader, "1")
	}
	if t.maxBytes > 0 {
		h = append(h, server.MaxBytesHeader, strconv.FormatInt(t.maxBytes, 10))
	}
	return h
}

// localContext makes ctx look like a routed call to t, so the shard
// handler reads the same headers whether the call was forwarded or not.
func localContext(ctx context.Context, t target) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	md = md.Copy()
	delete(md, server.MaxBytesHeader) // only the router sets it
	h := t.headers()
	for i := 0; i < len(h); i += 2 {
		md.Set(h[i], h[i+1])
	}
	return metadata.NewIncomingContext(ctx, md)
}

// call runs one QueueService method on the leader of t.shard: the local
// shard server when this node leads it, else the leader's node. A
// NOT_LEADER answer or a node that cannot be dialled (nothing was sent)
// is retried on the new leader until the deadline.
func call[Req, Resp proto.Message](ctx context.Context, r *Router, t target, method string, req Req,
	local func(*shardserver.Server, context.Context, Req) (Resp, error)) (Resp, error) {
	var zero Resp
	if r.shardCount() == 0 {
		return zero, server.StatusError(codes.Unavailable, server.ReasonNoQuorum, "no storage node has answered this API node yet", nil)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.cfg.Timeout)
		defer cancel()
	}
	backoff := 10 * time.Millisecond
	var hinted uint64 // leader named by the last NOT_LEADER answer
	for {
		leader := hinted
		if leader == 0 {
			var err error
			if leader, err = r.leaderOf(ctx, t.shard); err != nil {
				return zero, err
			}
		}
		var err error
		var resp Resp
		if srv := r.localServer(t.shard); srv != nil && leader == r.cfg.Self {
			lctx := ctx
			if t.incarnation != 0 || t.waitOnly || t.maxBytes != 0 { // only partition calls and receives read their headers
				lctx = localContext(ctx, t)
			}
			resp, err = local(srv, lctx, req)
			err = server.ToStatus(err)
		} else if r.cfg.Forwarder == nil {
			return zero, server.StatusError(codes.Unavailable, server.ReasonNotLeader, fmt.Sprintf("no route to shard %d", t.shard), nil)
		} else {
			var out any
			fctx, span := r.tracer.Start(ctx, server.SpanForward, trace.WithAttributes(attribute.String("rpc.method", method),
				attribute.Int64("quorumq.shard", int64(t.shard)), attribute.Int64("quorumq.leader", int64(leader))))
			out, err = r.cfg.Forwarder.forward(fctx, leader, method, req, t.headers()...)
			shardserver.EndSpan(span, err)
			// Tell the client: it may call the leader's node directly next
			// time (the SDK then tries another endpoint for this queue).
			// Outside a gRPC call (no stream) this does nothing.
			_ = grpc.SetHeader(ctx, metadata.Pairs(ForwardedToHeader, strconv.FormatUint(leader, 10)))
			if err == nil {
				resp = out.(Resp)
			}
		}
		if err == nil {
			return resp, nil
		}
		var again bool
		if hinted, again = r.afterFailure(ctx, t.shard, leader, err, &backoff); !again {
			return zero, err
		}
	}
}

// retryable says whether a routed call may be repeated on another node
// without risking a second effect: a NOT_LEADER answer (the receiver did
// nothing) or a dial failure (nothing was sent). It returns the new
// leader's id when the answer names one.
func retryable(err error) (hint uint64, ok bool) {
	st, isStatus := status.FromError(err)
	if !isStatus {
		return 0, false
	}
	if st.Code() == codes.Unavailable && strings.Contains(st.Message(), "Error while dialing") {
		return 0, true
	}
	info := server.ErrorInfo(st)
	if info == nil || info.GetReason() != server.ReasonNotLeader {
		return 0, false
	}
	id, _ := strconv.ParseUint(info.GetMetadata()["leader"], 10, 64)
	return id, true
}

// queueEntry is a cached queue record of truth.
type queueEntry struct {
	queue   *qv1.Queue
	fetched time.Time
}

func cacheKey(tenant, name string) string { return tenant + "\x00" + name }

// queue returns the record of truth of (tenant, name), from the cache when
// it is fresh.
func (r *Router) queue(ctx context.Context, tenant, name string) (*qv1.Queue, error) {
	if v, ok := r.cache.Load(cacheKey(tenant, name)); ok {
		e := v.(*queueEntry)
		if time.Since(e.fetched) < r.cfg.CacheTTL {
			return e.queue, nil
		}
	}
	resp, err := call(ctx, r, target{shard: MetadataShard, recordOnly: true}, queueMethod+"GetQueue", &qv1.GetQueueRequest{Name: name},
		func(s *shardserver.Server, ctx context.Context, req *qv1.GetQueueRequest) (*qv1.GetQueueResponse, error) {
			return s.GetQueueRecord(ctx, req)
		})
	if err != nil {
		if server.ReasonOf(err) == server.ReasonQueueNotFound {
			r.cache.Delete(cacheKey(tenant, name))
		}
		return nil, err
	}
	r.cache.Store(cacheKey(tenant, name), &queueEntry{queue: resp.GetQueue(), fetched: time.Now()})
	return resp.GetQueue(), nil
}

func (r *Router) forget(tenant, name string) { r.cache.Delete(cacheKey(tenant, name)) }

// remember caches a record of truth just written through this router.
func (r *Router) remember(tenant string, q *qv1.Queue) {
	if q != nil {
		r.cache.Store(cacheKey(tenant, q.GetName()), &queueEntry{queue: q, fetched: time.Now()})
	}
}

func partitions(q *qv1.Queue) int { return max(int(q.GetAttributes().GetPartitions()), 1) }

// isRecord reports whether partition i of the queue is stored in the
// record of truth itself (one-shard clusters keep partition 0 there).
func (r *Router) isRecord(tenant string, q *qv1.Queue, i int) bool {
	return i == 0 && r.partitionShard(tenant, q, 0) == MetadataShard
}

// partitionTarget addresses partition i of a queue.
func (r *Router) partitionTarget(tenant string, q *qv1.Queue, i int) target {
	return target{shard: r.partitionShard(tenant, q, i), partition: i, incarnation: q.GetCreatedAt().AsTime().UnixMilli()}
}

// withPartition runs f on partition i of the queue; when the partition is
// missing although the record of truth exists (a create or a growth whose
// fan-out did not finish), it makes the partition and runs f again.
func withPartition[Resp any](ctx context.Context, r *Router, tenant string, q *qv1.Queue, i int, f func() (Resp, error)) (Resp, error) {
	resp, err := f()
	if err == nil || server.ReasonOf(err) != server.ReasonQueueNotFound {
		return resp, err
	}
	r.forget(tenant, q.GetName())
	fresh, qerr := r.queue(ctx, tenant, q.GetName())
	if qerr != nil || partitions(fresh) <= i {
		return resp, err // the queue is gone (or shrank by a re-create)
	}
	if perr := r.ensurePartition(ctx, tenant, fresh, i); perr != nil {
		return resp, perr
	}
	return f()
}

// onPartition runs one QueueService method on partition i of q (see
// withPartition for a partition found missing).
func onPartition[Req, Resp proto.Message](ctx context.Context, r *Router, tenant string, q *qv1.Queue, i int, method string, req Req,
	local func(*shardserver.Server, context.Context, Req) (Resp, error)) (Resp, error) {
	t := r.partitionTarget(tenant, q, i)
	return withPartition(ctx, r, tenant, q, i, func() (Resp, error) { return call(ctx, r, t, queueMethod+method, req, local) })
}

// resolve is the prologue of a call on a named queue: the caller's tenant
// (one of scopes), the name checked as request field `field`, and the
// queue's record of truth.
func (r *Router) resolve(ctx context.Context, field, name string, scopes ...string) (string, *qv1.Queue, error) {
	tenant, err := server.Require(ctx, scopes...)
	if err != nil {
		return "", nil, err
	}
	if err := checkName(field, name); err != nil {
		return "", nil, err
	}
	q, err := r.queue(ctx, tenant, name)
	return tenant, q, err
}

// ensurePartition creates (or brings up to date) partition i of q on its
// shard; the create is idempotent.
func (r *Router) ensurePartition(ctx context.Context, tenant string, q *qv1.Queue, i int) error {
	if r.isRecord(tenant, q, i) {
		return nil
	}
	req := &qv1.CreateQueueRequest{Name: q.GetName(), Attributes: q.GetAttributes(), Tags: q.GetTags()}
	_, err := call(ctx, r, r.partitionTarget(tenant, q, i), queueMethod+"CreateQueue", req, (*shardserver.Server).CreateQueue)
	if err != nil {
		return fmt.Errorf("create partition %d of %s: %w", i, q.GetName(), err)
	}
	return nil
}

// ensurePartitions brings every partition of q in line with it, in parallel.
func (r *Router) ensurePartitions(ctx context.Context, tenant string, q *qv1.Queue) error {
	_, err := fanOut(q, func(i int) (struct{}, error) { return struct{}{}, r.ensurePartition(ctx, tenant, q, i) })
	return err
}

// fanOut runs f for each partition of q in parallel and returns the
// results in partition order.
func fanOut[T any](q *qv1.Queue, f func(i int) (T, error)) ([]T, error) {
	return parallel(partitions(q), f)
}

// parallel runs f(0) … f(n-1) at once and returns the results in order,
// with the first error.
func parallel[T any](n int, f func(i int) (T, error)) ([]T, error) {
	out := make([]T, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = f(i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

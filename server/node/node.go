// Package node assembles one quorumq process: Pebble, the Raft host, the
// queue state machine, the gRPC API and the HTTP gateway, and shuts them
// down in the reverse order. The binary and the tests share it.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/gateway"
	"github.com/quorumq/quorumq/internal/history"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/sqs"
	"github.com/quorumq/quorumq/store"
	"github.com/quorumq/quorumq/ui"
)

// Config describes a node. Zero values take the defaults of `quorumq serve`.
type Config struct {
	DataDir  string
	NodeID   uint64
	HTTPAddr string
	GRPCAddr string
	RaftAddr string
	// Peers maps node ids to Raft addresses; empty: a single-node cluster.
	Peers map[uint64]string
	// Shards is the number of Raft groups when the cluster is
	// bootstrapped: shard 0 keeps tenants and queue records, the others
	// queue partitions (one shard: both). Default 1. `cluster add-shards`
	// adds more later (recorded in the metadata shard, addshards.go); a
	// restart may give the bootstrap count or the current one.
	Shards int
	// Role is "storage" (default: hosts every shard) or "api" (stateless:
	// no data dir, no Raft; routes every call to the storage nodes in Peers).
	Role   string
	Logger *slog.Logger
	// Server tunes the gRPC services (tests shorten intervals).
	Server shardserver.Config
	// RaftTransport replaces the gRPC Raft transport (in-process fault
	// tests); AttachHost then receives the host so the transport can
	// deliver to it. The peer listener still serves forwarded calls.
	RaftTransport raftnode.Transport
	AttachHost    func(*raftnode.Host)
	// TickInterval is the Raft tick (default 100ms).
	TickInterval time.Duration
	// Authenticator verifies callers; nil: dev mode (tenant "default",
	// every scope).
	Authenticator server.Authenticator
	// TLS names certificate files; empty: plain TCP. With peer TLS, every
	// call on the peer listener needs a verified peer certificate naming a
	// node (tls.go).
	TLS TLSFiles
	// MetricsAddr is the listen address of GET /metrics (Prometheus);
	// empty: no metrics listener. Not on HTTPAddr: series name queues of
	// every tenant.
	MetricsAddr string
	// Pprof serves /debug/pprof/ on the HTTP listener.
	Pprof bool
	// CacheBytes is Pebble's block cache for reads (default 32 MiB). The
	// cache made is larger: Pebble reserves every memtable's size from it,
	// and two 64 MiB memtables per instance (the mutable one and the one
	// kept for reuse) would otherwise leave no room for blocks at all.
	CacheBytes int64
	// StateWithoutWAL creates a new data directory with two Pebble
	// instances: raftlog/ (the Raft log, WAL synced every round) and
	// pebble/ (the shards' state, without a WAL, flushed by raftnode), so
	// a message body is written to a WAL once per replica instead of
	// twice. Off: one instance, pebble/, holds both. A data directory
	// keeps the layout it was created with, whatever this says.
	StateWithoutWAL bool
	// TracerProvider makes the node's spans (tests inject one); nil: one
	// built from Tracing, or none.
	TracerProvider trace.TracerProvider
	// Tracing configures the spans when TracerProvider is nil.
	Tracing TracingConfig
	// BalanceInterval is how often a storage node checks the spread of
	// shard leaders (default 5s).
	BalanceInterval time.Duration
	// FaultInjection serves the fault-test control endpoint (faults.go);
	// only a binary built with -tags chaos accepts it.
	FaultInjection bool
	// SQSAddr is the listen address of the SQS endpoint (AWS JSON 1.0 and
	// Query protocols); empty: none.
	SQSAddr string
	// SQSAuthenticator verifies SQS requests; nil: every request is tenant
	// "default" in dev mode, and SigV4 against the access keys of the
	// metadata shard when Authenticator is set (sqsauth.go).
	SQSAuthenticator sqs.Authenticator
	// SQSRegion is the region in queue ARNs (default sqs.DefaultRegion).
	SQSRegion string
	// SQSTagsAttribute is the SQS message attribute that carries message
	// tags (default sqs.DefaultTagsAttribute).
	SQSTagsAttribute string
	// Join is the peer address of any member of a running cluster: a node
	// with empty data asks it for admission and gets its node id (NodeID
	// and Peers are then ignored: they come from the cluster). Later
	// starts read the id back from the data directory.
	Join string
	// MembershipInterval is how often a storage node applies the
	// membership records (default 500ms; see membership.go).
	MembershipInterval time.Duration
	// DropRemovedAfter is how long a replica of a shard this node was
	// removed from must look removed before its storage is dropped
	// (default three election timeouts; see dropRemoved).
	DropRemovedAfter time.Duration
	// ReplicationFactor is how many nodes hold each shard (default 3; a
	// cluster of fewer nodes puts every shard on every node). Recorded at
	// bootstrap: the bootstrap nodes must agree, as on --shards.
	ReplicationFactor int
	// AutoRepair: a node the coordinator has not heard from for this long
	// is drained (its replicas recreated on the other nodes) and removed;
	// it can come back only as a new node (--join). 0: never.
	AutoRepair time.Duration
	// MoveTimeout: a replica added to a shard that has not caught up after
	// this long is removed again (the move rolled back). Default 2m.
	MoveTimeout time.Duration
	// SnapshotBytesPerSecond bounds the snapshot data (replica copies) a
	// node sends per second, over all its streams (0 or negative:
	// unlimited, the default): moves leave disk and network to foreground
	// traffic. Unlimited by default: a paced copy of a large shard under
	// write load can fall further behind than the leader keeps its log
	// for (LogLagLimit), and then needs another snapshot, and another.
	SnapshotBytesPerSecond int64
	// Rebalance moves replicas until every active node holds its share of
	// the data shards' replicas (± 1), one move at a time in the cluster
	// (default true; see membership_plan.go).
	Rebalance *bool
}

// Node is a running quorumq process.
type Node struct {
	cfg     Config
	log     *slog.Logger
	db      *pebble.DB // the Raft log and the node's own records (WAL on)
	sdb     *pebble.DB // the shards' replicated state (no WAL; raftnode flushes it)
	host    *raftnode.Host
	parts   atomic.Pointer[shardParts] // the stores and servers by shard; grows (addshards.go)
	growMu  sync.Mutex                 // growShards' writers
	srvCfg  shardserver.Config         // what every shard server is made with
	router  *router.Router
	keys    *router.AccessKeys  // SigV4 access key lookup of the SQS endpoint
	topics  *router.TopicServer // TopicService; also unsubscribes deleted queues for the relays
	remote  *router.RemoteView  // API-tier nodes
	others  *router.RemoteView  // storage nodes: the shards hosted elsewhere (MemberView)
	cluster *router.ClusterServer
	joined  bool            // this node joined a running cluster (Config.Join)
	booted  map[uint64]bool // groups this start bootstrapped (AddGroup); set before the loops start
	// seen: when the coordinator last heard from each node (auto-repair),
	// since it began coordinating in term seenTerm; membership loop only.
	seen     map[uint64]time.Time
	seenTerm uint64
	// dropping: since when each group looked droppable (hosting.go);
	// membership loop only.
	dropping map[uint64]time.Time
	stalls   [2]*writeStalls    // Pebble write stalls (log, state), counted from openDB
	misuse   *apiMisuse         // Pebble's API misuse reports (both DBs), counted from openDB
	cancel   context.CancelFunc // stops the node's own loops (view, balancer)
	loops    sync.WaitGroup
	grpc     *grpc.Server
	peer     *grpc.Server // Raft transport + forwarded calls, on RaftAddr
	tr       *raftnode.GRPCTransport
	faults   *raftnode.FaultFilter // nil unless Config.FaultInjection
	fwd      *router.Forwarder
	http     *http.Server
	conn     *grpc.ClientConn

	health     *health.Server // grpc.health.v1 on the client listener (grpcconv.go)
	healthStop chan struct{}  // closed by Stop: ends Watch streams

	sqs         *sqsEndpoint // nil without Config.SQSAddr
	metricsHTTP *http.Server // nil without Config.MetricsAddr
	metricsLn   net.Listener
	tp          *sdktrace.TracerProvider // built by Start (shut down by Stop), nil if injected or off
	mp          *sdkmetric.MeterProvider
	grpcLn      net.Listener
	listenAddr  atomic.Pointer[string] // grpcLn's address once it listens (read by the membership loop)
	httpLn      net.Listener
	peerLn      net.Listener

	stopOnce sync.Once
	stopErr  error
	serveWG  sync.WaitGroup
}

// Start opens the data directory, starts Raft and serves gRPC and HTTP. It
// returns once the listeners are open; the groups elect their leaders in the
// background (see /readyz).
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.NodeID == 0 {
		cfg.NodeID = 1
	}
	if cfg.Shards == 0 {
		cfg.Shards = 1
	}
	if cfg.CacheBytes <= 0 {
		cfg.CacheBytes = 32 << 20
	}
	switch cfg.Role {
	case "", "all", "storage":
		cfg.Role = "storage"
	case "api":
	default:
		return nil, fmt.Errorf("--role %q: want storage or api", cfg.Role)
	}
	if cfg.Shards < 1 || cfg.Shards > maxShards {
		return nil, fmt.Errorf("--shards %d: must be 1 to %d", cfg.Shards, maxShards)
	}
	if cfg.Role == "api" {
		if len(cfg.Peers) == 0 {
			return nil, errors.New("--role api needs --peers (the storage nodes)")
		}
		if _, ok := cfg.Peers[cfg.NodeID]; ok {
			return nil, fmt.Errorf("--role api: node id %d is a storage node in --peers; give the API node an id of its own", cfg.NodeID)
		}
	} else if len(cfg.Peers) > 0 {
		if _, ok := cfg.Peers[cfg.NodeID]; !ok {
			return nil, fmt.Errorf("--peers does not name this node (%d)", cfg.NodeID)
		}
	}
	cfg.Logger = slog.New(NewTraceLogHandler(cfg.Logger.Handler()))
	if cfg.Server.Logger == nil {
		cfg.Server.Logger = cfg.Logger
	}
	n := &Node{cfg: cfg, log: cfg.Logger} // not the result: goroutines started below outlive a failed Start
	if cfg.Join != "" {
		if err := n.checkJoin(cfg); err != nil {
			return nil, err
		}
		if err := n.joinCluster(ctx, &cfg); err != nil {
			n.closeAll()
			return nil, err
		}
		n.cfg = cfg
	}
	if n.faults, err = newFaultFilter(cfg); err != nil {
		return nil, err
	}
	metricsHandler, mp, err := newMetrics()
	if err != nil {
		return nil, err
	}
	n.mp = mp
	meter := mp.Meter("github.com/quorumq/quorumq")
	if cfg.Server.Meter == nil {
		cfg.Server.Meter = meter
	}
	defer func() {
		if err != nil {
			n.closeAll()
		}
	}()
	loopCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	tp := cfg.TracerProvider
	if tp == nil {
		n.tp, err = newTracerProvider(ctx, cfg.Tracing, cfg.NodeID)
		if err != nil {
			return nil, err
		}
		if n.tp != nil {
			tp = n.tp
		}
	}
	if cfg.Server.TracerProvider == nil {
		cfg.Server.TracerProvider = tp
	}
	clientTLS, err := cfg.TLS.clientTLS()
	if err != nil {
		return nil, err
	}
	peerServerTLS, peerClientTLS, err := cfg.TLS.peerTLS(cfg.Role, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	peerDial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if peerClientTLS != nil {
		peerDial = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(peerClientTLS))}
	}
	peerDial = append(peerDial, server.ClientStatsHandler(tp, mp))
	peerDial = append(peerDial, peerFlowDialOptions()...)
	peerDial = append(peerDial, faultDialOptions(n.faults, cfg.Peers)...)
	var peerDialFor func(id uint64) []grpc.DialOption
	if peerClientTLS != nil {
		peerDialFor = func(id uint64) []grpc.DialOption {
			return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(peerDialTLS(peerClientTLS, id)))}
		}
	}
	if n.multiNode() || cfg.Role == "api" {
		n.fwd = router.NewForwarder(cfg.NodeID, cfg.Peers, peerDial...)
		if peerDialFor != nil {
			n.fwd.SetDialOptionsFor(peerDialFor)
		}
	}

	var cluster *router.ClusterServer
	if cfg.Role == "api" {
		n.remote = router.NewRemoteView(n.fwd, n.members())
		n.router = router.NewRouter(router.RouterConfig{Self: cfg.NodeID, View: n.remote, Forwarder: n.fwd,
			Logger: cfg.Logger, Timeout: cfg.Server.ProposeTimeout, TracerProvider: tp})
		n.remote.OnShards(n.router.SetLayout)
		n.remote.LearnNodes()
		n.keys = router.NewAccessKeys(n.router, router.AccessKeysConfig{})
		n.topics = router.NewTopicServer(n.router)
		cluster = router.NewClusterServer(router.ClusterConfig{Self: cfg.NodeID, Peers: cfg.Peers, Remote: n.remote, Router: n.router})
		n.loops.Add(1)
		go func() {
			defer n.loops.Done()
			n.remote.Run(loopCtx)
		}()
	} else {
		if cluster, err = n.startStorage(ctx, cfg, meter, tp, mp, peerServerTLS, peerDial, peerDialFor); err != nil {
			return nil, err
		}
		n.cluster = cluster
		n.loops.Add(1)
		go func() {
			defer n.loops.Done()
			n.balanceLeaders(loopCtx)
		}()
		if n.others != nil {
			n.loops.Add(1)
			go func() {
				defer n.loops.Done()
				n.others.Run(loopCtx)
			}()
		}
		if n.multiNode() { // a single node has no peer listener to join through
			n.loops.Add(1)
			go func() {
				defer n.loops.Done()
				n.runMembership(loopCtx)
			}()
		}
	}

	var authenticator server.Authenticator = server.DevAuthenticator{}
	if cfg.Authenticator != nil {
		authenticator = cfg.Authenticator
	}
	hist := history.New(history.MaxQueues)
	n.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("listen grpc: %w", err)
	}
	listenAddr := advertisedAddr(cfg.GRPCAddr, n.grpcLn.Addr().String())
	n.listenAddr.Store(&listenAddr)
	apiOpts := []grpc.ServerOption{
		// history counts the client calls' messages for the console's charts.
		grpc.ChainUnaryInterceptor(router.StripInternalHeaders(), server.UnaryInterceptor(authenticator, cfg.Logger),
			history.Interceptor(hist, time.Now)),
		grpc.ChainStreamInterceptor(server.StreamInterceptor(authenticator, cfg.Logger), history.StreamInterceptor(hist, time.Now)),
		grpc.MaxRecvMsgSize(clientMaxRecvBytes), server.ServerStatsHandler(tp, mp),
	}
	apiOpts = append(apiOpts, keepaliveOptions()...)
	selfCreds := insecure.NewCredentials()
	if clientTLS != nil {
		apiOpts = append(apiOpts, grpc.Creds(credentials.NewTLS(clientTLS)))
		selfCreds = credentials.NewTLS(selfDialTLS(clientTLS))
	}
	n.grpc = grpc.NewServer(apiOpts...)
	if cfg.SQSAddr != "" {
		// Same options as the client listener but its own interceptors
		// (sqs.go) and no TLS: the connection stays in the process.
		sqsOpts := []grpc.ServerOption{grpc.MaxRecvMsgSize(clientMaxRecvBytes), server.ServerStatsHandler(tp, mp)}
		if err := n.startSQS(cfg, sqsOpts, []grpc.DialOption{server.ClientStatsHandler(tp, mp)}, clientTLS); err != nil {
			return nil, err
		}
	}
	qv1.RegisterQueueServiceServer(n.grpc, n.router)
	qv1.RegisterClusterServiceServer(n.grpc, history.Service{ClusterServiceServer: cluster, Ring: hist, Node: cfg.NodeID, Now: time.Now})
	qv1.RegisterCredentialsServiceServer(n.grpc, router.NewCredentialsServer(n.router, n.keys))
	qv1.RegisterTopicServiceServer(n.grpc, n.topics)
	n.registerConventions(n.grpc)
	n.loops.Add(1)
	go func() {
		defer n.loops.Done()
		n.healthLoop(loopCtx)
	}()
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		if err := n.grpc.Serve(n.grpcLn); err != nil {
			n.log.Error("grpc server stopped", "err", err)
		}
	}()

	n.conn, err = grpc.NewClient(n.grpcLn.Addr().String(),
		grpc.WithTransportCredentials(selfCreds), server.ClientStatsHandler(tp, mp),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(server.MaxReplyBytes), grpc.MaxCallSendMsgSize(clientMaxRecvBytes)))
	if err != nil {
		return nil, fmt.Errorf("gateway client: %w", err)
	}
	handler, err := gateway.New(ctx, gateway.Config{Conn: n.conn, Ready: n.Ready, Pprof: cfg.Pprof})
	if err != nil {
		return nil, err
	}
	handler = ui.Route(handler, ui.Options{Auth: cfg.Authenticator != nil}) // the web console at /ui/
	handler = faultHandler(n.faults, n.syncWAL, handler)
	n.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen http: %w", err)
	}
	if clientTLS != nil {
		n.httpLn = tls.NewListener(n.httpLn, clientTLS)
	}
	n.http = newHTTPServer(handler)
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		if err := n.http.Serve(n.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server stopped", "err", err)
		}
	}()
	if cfg.MetricsAddr != "" {
		if err := n.serveMetrics(cfg.MetricsAddr, metricsHandler); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// HTTP server limits: a slow client may take a minute to send the largest
// legal body (4 MiB), no longer; idle keep-alive connections are closed.
// net/http also cancels a request's context when ReadTimeout passes (its
// background read hits the deadline), so it must stay well above the
// longest REST call, a 20 s long poll.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 60 * time.Second
	httpIdleTimeout       = 120 * time.Second
	httpMaxHeaderBytes    = 64 << 10
)

func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: httpReadHeaderTimeout, ReadTimeout: httpReadTimeout,
		IdleTimeout: httpIdleTimeout, MaxHeaderBytes: httpMaxHeaderBytes}
}

// serveMetrics serves GET /metrics on its own listener (plain HTTP: keep
// it on loopback or a monitoring network).
func (n *Node) serveMetrics(addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen metrics (--metrics-addr): %w", err)
	}
	n.metricsLn = ln
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	n.metricsHTTP = newHTTPServer(mux)
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		if err := n.metricsHTTP.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("metrics server stopped", "err", err)
		}
	}()
	return nil
}

// maxShards bounds --shards (a node may host every shard).
const maxShards = store.MaxShards

// startStorage opens Pebble, starts one Raft group and queue server per
// shard and the peer listener; it returns the node's ClusterService.
func (n *Node) startStorage(ctx context.Context, cfg Config, meter metric.Meter, tp trace.TracerProvider, mp *sdkmetric.MeterProvider,
	peerServerTLS *tls.Config, peerDial []grpc.DialOption, peerDialFor func(uint64) []grpc.DialOption) (*router.ClusterServer, error) {
	raftMetrics, err := newRaftMetrics(meter)
	if err != nil {
		return nil, fmt.Errorf("raft metrics: %w", err)
	}
	if n.db == nil {
		if err := n.openDB(cfg); err != nil {
			return nil, err
		}
	}
	layout, err := store.New(n.sdb, router.MetadataShard).ShardLayout()
	if err != nil {
		return nil, fmt.Errorf("read shard layout: %w", err)
	}
	if err := checkShardCount(n.db, cfg.Shards, int(layout.GetShards())); err != nil {
		return nil, err
	}
	base := cfg.Shards // the count before the first AddShards
	if layout != nil {
		base = int(layout.GetBaseShards())
	}
	hostCfg := raftnode.Config{NodeID: cfg.NodeID, DB: n.db, StateDB: n.sdb, StateFlushBytes: stateFlushBytes,
		LogFlushBytes: logMemTableBytes / 2, Logger: cfg.Logger, TickInterval: cfg.TickInterval,
		SnapshotDir: filepath.Join(cfg.DataDir, "snapshots"), Metrics: raftMetrics,
		SnapshotBytesPerSecond: max(cfg.SnapshotBytesPerSecond, 0)}
	if n.multiNode() {
		if cfg.RaftTransport != nil {
			hostCfg.Transport = cfg.RaftTransport
		} else {
			tc := raftnode.TransportConfig{NodeID: cfg.NodeID, Peers: cfg.Peers, Logger: cfg.Logger, DialOptions: peerDial,
				PeerDialOptions: peerDialFor, Faults: n.faults}
			if peerServerTLS != nil {
				tc.PeerID = server.PeerNodeID // a stream speaks only for the node its certificate names
			}
			n.tr = raftnode.NewGRPCTransport(tc)
			hostCfg.Transport = n.tr
		}
	}
	n.host, err = raftnode.NewHost(hostCfg)
	if err != nil {
		return nil, fmt.Errorf("raft host: %w", err)
	}
	if n.tr != nil {
		n.tr.Attach(n.host)
	}
	if cfg.AttachHost != nil {
		cfg.AttachHost(n.host)
	}
	n.srvCfg = cfg.Server
	count := max(cfg.Shards, int(layout.GetShards()))
	parts := &shardParts{}
	local := map[uint64]*shardserver.Server{}
	for g := range uint64(count) {
		st := store.New(n.sdb, g)
		srv := shardserver.New(cfg.Server, n.host, st, g)
		if g == router.MetadataShard && base > 1 {
			srv.SetMetadataOnly()
		}
		parts.stores = append(parts.stores, st)
		parts.srvs = append(parts.srvs, srv)
		local[g] = srv
	}
	n.parts.Store(parts)
	var view router.ShardView = router.LocalView{Raft: n.host, Timeout: cfg.Server.ProposeTimeout}
	if n.fwd != nil { // shards may live on other nodes only (replica sets)
		var others []uint64
		for _, id := range n.members() {
			if id != cfg.NodeID {
				others = append(others, id)
			}
		}
		n.others = router.NewRemoteView(n.fwd, others)
		view = router.MemberView{Self: cfg.NodeID, Local: view.(router.LocalView), Remote: n.others}
	}
	n.router = router.NewRouter(router.RouterConfig{Self: cfg.NodeID, Shards: count, Local: local,
		View: view, Forwarder: n.fwd,
		Logger: cfg.Logger, Timeout: cfg.Server.ProposeTimeout, TracerProvider: tp})
	n.router.SetLayout(count, base)
	n.keys = router.NewAccessKeys(n.router, router.AccessKeysConfig{})
	n.topics = router.NewTopicServer(n.router)
	for _, srv := range parts.srvs {
		n.wire(srv)
	}
	if err := registerGroupGauges(meter, n.host, n.groups); err != nil {
		return nil, fmt.Errorf("raft metrics: %w", err)
	}
	dbs, stalls := []*pebble.DB{n.db, n.sdb}, n.stalls[:]
	if n.sdb == n.db {
		dbs, stalls = dbs[:1], stalls[:1]
	}
	if err := registerPebbleMetrics(meter, dbs, stalls, n.misuse); err != nil {
		return nil, fmt.Errorf("pebble metrics: %w", err)
	}
	if n.tr != nil {
		if err := registerTransportMetrics(meter, n.tr); err != nil {
			return nil, fmt.Errorf("raft metrics: %w", err)
		}
	}
	if err := n.startGroups(); err != nil {
		return nil, err
	}
	var peerStatus router.PeerStatusFunc
	if n.tr != nil {
		peerStatus = n.tr.PeerStatus
	}
	cluster := router.NewClusterServer(router.ClusterConfig{Self: cfg.NodeID, Peers: n.peerAddrs(), Status: peerStatus,
		Raft: n.host, Shards: n.groups(), Router: n.router, ReplicaSets: n.replicaSetsAPI})
	n.cluster = cluster // growShards updates its shards
	if n.multiNode() {
		// The peer listener carries Raft traffic, calls routed to this
		// node's shard leaders, outbox deliveries and API-tier views. It
		// starts before Raft so peers reach us.
		n.peerLn, err = net.Listen("tcp", cfg.RaftAddr)
		if err != nil {
			return nil, fmt.Errorf("listen raft: %w", err)
		}
		var authenticator server.Authenticator = server.DevAuthenticator{}
		if cfg.Authenticator != nil {
			authenticator = cfg.Authenticator
		}
		unary := []grpc.UnaryServerInterceptor{server.UnaryInterceptor(authenticator, cfg.Logger)}
		peerOpts := []grpc.ServerOption{grpc.MaxRecvMsgSize(peerMaxRecvBytes), server.ServerStatsHandler(tp, mp)}
		peerOpts = append(peerOpts, keepaliveOptions()...)
		peerOpts = append(peerOpts, peerFlowServerOptions()...)
		if peerServerTLS != nil {
			// Every call, unary or streaming, needs a peer certificate
			// naming a node; Raft and outbox calls a storage node's.
			peerUnary, peerStream := server.PeerAuthInterceptors()
			unary = append([]grpc.UnaryServerInterceptor{peerUnary}, unary...)
			peerOpts = append(peerOpts, grpc.Creds(credentials.NewTLS(peerServerTLS)), grpc.ChainStreamInterceptor(peerStream))
		}
		peerOpts = append(peerOpts, grpc.ChainUnaryInterceptor(unary...))
		n.peer = grpc.NewServer(peerOpts...)
		if n.tr != nil {
			n.tr.Register(n.peer)
		}
		qv1.RegisterQueueServiceServer(n.peer, n.router)
		qv1.RegisterClusterServiceServer(n.peer, cluster)
		qv1.RegisterCredentialsServiceServer(n.peer, router.NewCredentialsServer(n.router, n.keys))
		router.NewPeerServer(n.router, cluster).Register(n.peer)
		n.serveWG.Add(1)
		go func() {
			defer n.serveWG.Done()
			if err := n.peer.Serve(n.peerLn); err != nil {
				n.log.Error("peer server stopped", "err", err)
			}
		}()
	}
	n.host.Start()
	for _, srv := range parts.srvs {
		srv.Start()
	}
	return cluster, nil
}

// The data directory holds two Pebble instances sharing one block cache:
// raftlog/ (the Raft log, HardStates, the node's own records; WAL synced
// every Raft round) and pebble/ (the shards' replicated state, without a
// WAL: each message body is written once per replica, in the log's WAL,
// and the state reaches disk at flushes raftnode makes, which bound how
// far each replica may truncate its log). See raftnode/DESIGN.md.
const (
	logDBDir   = "raftlog"
	stateDBDir = "pebble"
	// logMemTableBytes: the log's entries are deleted (truncated) while
	// still in the memtable; the state is flushed every stateFlushBytes
	// of log (a quarter of the log's memtable), each replica truncates
	// behind it, and raftnode flushes the log DB itself after every
	// second state flush (LogFlushBytes, half its memtable), right after
	// those truncations: a log memtable reaches disk holding the retained
	// entries only.
	logMemTableBytes   = 64 << 20
	stateMemTableBytes = 64 << 20
	stateFlushBytes    = logMemTableBytes / 4
)

// splitLayout reports whether the data directory holds (or, new, is to
// hold) the two-instance layout: raftlog/ exists; or neither raftlog/ nor
// pebble/ does and want says so. pebble/ alone is the one-instance layout.
// The log instance is created first, so a crash while a new directory is
// made never leaves pebble/ alone in a directory meant to be split.
func splitLayout(logDir, stateDir string, want bool) (bool, error) {
	for _, d := range []string{logDir, stateDir} {
		_, err := os.Stat(d)
		switch {
		case err == nil:
			return d == logDir, nil
		case !errors.Is(err, os.ErrNotExist):
			return false, fmt.Errorf("data dir: %w", err)
		}
	}
	return want, nil
}

// openDB opens the data directory's Pebble instances: with the
// two-instance layout (Config.StateWithoutWAL) the log into n.db and the
// state into n.sdb; with one instance, both are it.
func (n *Node) openDB(cfg Config) error {
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	logDir, stateDir := filepath.Join(cfg.DataDir, logDBDir), filepath.Join(cfg.DataDir, stateDBDir)
	split, err := splitLayout(logDir, stateDir, cfg.StateWithoutWAL)
	if err != nil {
		return err
	}
	if split != cfg.StateWithoutWAL {
		cfg.Logger.Warn("the data directory keeps the layout it was created with", "dir", cfg.DataDir,
			"state_without_wal", split, "requested", cfg.StateWithoutWAL)
	}
	// Pebble reserves each memtable's size from the block cache (db.go,
	// newMemTable) and keeps one spent memtable for reuse, reserved too:
	// the cache made holds CacheBytes of blocks besides two memtables of
	// each instance. Before, a 128 MiB cache held no block at all (every
	// receive's index seek read sstable blocks from the file: 5.7 block
	// reads per message, 0 % hits, in an open-loop run at 5,000 msgs/s).
	reserved := int64(2 * stateMemTableBytes)
	if split {
		reserved += 2 * logMemTableBytes
	}
	cache := pebble.NewCache(cfg.CacheBytes + reserved)
	defer cache.Unref() // each DB holds its own reference
	n.stalls = [2]*writeStalls{{}, {}}
	n.misuse = &apiMisuse{log: cfg.Logger}
	options := func(stalls *writeStalls, memtable uint64) *pebble.Options {
		opts := &pebble.Options{
			Logger:        pebbleLogger{cfg.Logger},
			EventListener: stalls.listener(n.misuse),
			// Reads of recent messages come from the block cache, not pread.
			Cache: cache,
			// Messages consumed while still in the memtable are never
			// written to an sstable: the flush drops a set shadowed by its
			// delete (and log entries under the truncation's range delete).
			// The state's 64 MiB rather than 32: a third fewer flush +
			// compaction bytes per message (987 -> 659, all replicas,
			// batch-1 bench of 40,000 1 KiB messages, one DB then); 16 MiB
			// was tried again after idempotency keys went into buckets:
			// closed loop 0.19 against 0.155 ms of server CPU and 2.3
			// against 0.6 KiB of compactions per message. At most
			// three memtables per DB before writes stall. L0 thresholds and
			// compaction concurrency (1, on 2 cores) stay at Pebble's
			// defaults (quorumq_pebble_write_stalls_total). No
			// WALBytesPerSync: every Raft round ends with a synced write.
			MemTableSize:                memtable,
			MemTableStopWritesThreshold: 3,
		}
		// Bloom filters on every level (L1+ inherit L0's): the hot path's
		// most frequent point read looks for a key that does not exist
		// (every send's idempotency key); without a filter each miss read a
		// data block of every sstable overlapping the key. The store reads
		// those keys through an iterator with UseL6Filters (a Get skips
		// L6's).
		opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
		return opts
	}
	if !split {
		db, err := pebble.Open(stateDir, options(n.stalls[0], stateMemTableBytes))
		if err != nil {
			return fmt.Errorf("open pebble: %w", err)
		}
		n.db, n.sdb = db, db
		return nil
	}
	// The log first (splitLayout).
	db, err := pebble.Open(logDir, options(n.stalls[0], logMemTableBytes))
	if err != nil {
		return fmt.Errorf("open pebble (log): %w", err)
	}
	sopts := options(n.stalls[1], stateMemTableBytes)
	sopts.DisableWAL = true
	sdb, err := pebble.Open(stateDir, sopts)
	if err != nil {
		_ = db.Close()
		return fmt.Errorf("open pebble (state): %w", err)
	}
	n.db, n.sdb = db, sdb
	return nil
}

// PebbleAPIMisuse returns how many possible misuses of Pebble's API (a
// single delete that broke its rule, see apiMisuse) its flushes and
// compactions reported so far, on both DBs. Tests fail on any.
func (n *Node) PebbleAPIMisuse() int64 { return n.misuse.total() }

// GRPCAddr is the address the gRPC API listens on.
func (n *Node) GRPCAddr() string { return n.grpcLn.Addr().String() }

// HTTPAddr is the address REST and the probes listen on.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// MetricsAddr is the address GET /metrics listens on; "" if none.
func (n *Node) MetricsAddr() string {
	if n.metricsLn == nil {
		return ""
	}
	return n.metricsLn.Addr().String()
}

// Server is the queue server of shard 0 (tests read counters).
func (n *Node) Server() *shardserver.Server { return n.srv(0) }

// ShardServer is the queue server of a shard (nil: not a shard of the
// cluster as this node knows it).
func (n *Node) ShardServer(shard uint64) *shardserver.Server { return n.srv(shard) }

// Host is the node's Raft host.
func (n *Node) Host() *raftnode.Host { return n.host }

// AccessKeys is the node's SigV4 access key lookup (the SQS endpoint's
// verifier uses it).
func (n *Node) AccessKeys() *router.AccessKeys { return n.keys }

// Store is the state machine of shard 0.
func (n *Node) Store() *store.Store { return n.shardStore(0) }

// ShardStore is the state machine of a shard (nil: not a shard of the
// cluster as this node knows it).
func (n *Node) ShardStore(shard uint64) *store.Store { return n.shardStore(shard) }

// WaitReady blocks until the node's shards have a leader.
func (n *Node) WaitReady(ctx context.Context) error {
	if n.host == nil {
		for n.Ready() != nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
		return nil
	}
	for _, g := range n.hostedGroups() {
		if _, err := n.host.WaitLeader(ctx, g); err != nil {
			return fmt.Errorf("shard %d: %w", g, err)
		}
	}
	return nil
}

// Stop drains the node: it stops accepting calls, lets in-flight calls
// finish (up to ctx), then stops Raft and closes Pebble.
func (n *Node) Stop(ctx context.Context) error {
	n.stopOnce.Do(func() {
		if n.http != nil {
			_ = n.http.Shutdown(ctx)
		}
		if n.metricsHTTP != nil {
			_ = n.metricsHTTP.Shutdown(ctx)
		}
		if n.sqs != nil {
			n.sqs.shutdown(ctx)
		}
		n.stopHealth() // probes see NOT_SERVING while the node drains
		if n.grpc != nil {
			gracefulStop(ctx, n.grpc)
		}
		if n.cancel != nil {
			n.cancel() // no rebalancing while leaderships move away
			n.loops.Wait()
		}
		n.transferLeadership(ctx)
		if n.peer != nil {
			// Peer streams never end by themselves: give forwarded calls a
			// moment, then close.
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			gracefulStop(pctx, n.peer)
			cancel()
		}
		n.serveWG.Wait()
		n.stopErr = n.closeAll()
	})
	return n.stopErr
}

func gracefulStop(ctx context.Context, s *grpc.Server) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.Stop()
		<-done
	}
}

// transferLeadership hands this node's leaderships to other members
// before it stops, so no shard waits out an election timeout. Shards go
// round robin over the other members, so the load stays spread.
func (n *Node) transferLeadership(ctx context.Context) {
	if !n.multiNode() || n.host == nil {
		return
	}
	next := 0
	for _, g := range n.groups() {
		st, err := n.host.Status(g)
		if err != nil || !st.IsLeader {
			continue
		}
		var others []uint64
		for _, m := range st.Voters { // a learner cannot lead
			if m != n.cfg.NodeID {
				others = append(others, m)
			}
		}
		for k := range others {
			m := others[(next+k)%len(others)]
			tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			err := n.host.TransferLeadership(tctx, g, m)
			cancel()
			if err == nil {
				n.log.Info("transferred leadership before stopping", "shard", g, "to", m)
				next++
				break
			}
			n.log.Warn("leadership transfer failed", "shard", g, "to", m, "err", err)
		}
	}
}

// multiNode reports whether --peers names other nodes.
func (n *Node) multiNode() bool { return len(n.cfg.Peers) > 1 }

// members are the initial voters: every peer, or this node alone.
func (n *Node) members() []uint64 {
	if len(n.cfg.Peers) == 0 {
		return []uint64{n.cfg.NodeID}
	}
	ids := make([]uint64, 0, len(n.cfg.Peers))
	for id := range n.cfg.Peers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// peerAddrs is the address book shown by GetCluster.
func (n *Node) peerAddrs() map[uint64]string {
	if len(n.cfg.Peers) > 0 {
		return n.cfg.Peers
	}
	return map[uint64]string{n.cfg.NodeID: ""}
}

// closeAll releases what Start opened, in reverse order.
func (n *Node) closeAll() error {
	n.stopHealth()
	if n.sqs != nil {
		n.sqs.close()
	}
	if n.grpc != nil {
		n.grpc.Stop()
	}
	if n.peer != nil {
		n.peer.Stop()
	}
	if n.fwd != nil {
		n.fwd.Close()
	}
	if n.http != nil {
		_ = n.http.Close()
	}
	if n.metricsHTTP != nil {
		_ = n.metricsHTTP.Close()
	}
	if n.conn != nil {
		_ = n.conn.Close()
	}
	if n.cancel != nil {
		n.cancel()
		n.loops.Wait()
	}
	if p := n.parts.Load(); p != nil {
		for _, srv := range p.srvs {
			srv.Stop()
		}
	}
	if n.host != nil {
		n.host.Stop()
	}
	if n.tr != nil {
		n.tr.Close()
	}
	var err error
	if n.sdb != nil && n.sdb != n.db {
		// The host flushed the state at Stop; flush again for what was
		// written without it (a node that failed to start).
		err = errors.Join(n.sdb.Flush(), n.sdb.Close())
		n.sdb = nil
	}
	if n.db != nil {
		err = errors.Join(err, n.db.Close())
		n.db, n.sdb = nil, nil
	}
	// Flush the spans still batched (bounded: a dead collector must not
	// hold the shutdown).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n.tp != nil {
		_ = n.tp.Shutdown(ctx)
	}
	if n.mp != nil {
		_ = n.mp.Shutdown(ctx)
	}
	return err
}

// pebbleLogger sends Pebble's log lines to slog at debug level ("Found 0
// WALs" and friends are noise for operators); errors stay errors.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
	os.Exit(1)
}

// syncWAL makes everything written so far durable (FaultsSyncPath).
func (n *Node) syncWAL() error {
	if n.db == nil || n.sdb == nil {
		return errors.New("storage not open")
	}
	if n.sdb == n.db {
		return n.db.LogData([]byte("sync"), pebble.Sync)
	}
	// The state first: flushed, it is durable without the log's help.
	return errors.Join(n.sdb.Flush(), n.db.LogData([]byte("sync"), pebble.Sync))
}

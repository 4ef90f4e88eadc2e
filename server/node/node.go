// Package node assembles one quorumq process: Pebble, the Raft host, the
// queue state machine, the gRPC API and the HTTP gateway, and shuts them
// down in the reverse order. The binary and the tests share it.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/gateway"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
)

// Config describes a node. Zero values take the defaults of `quorumq serve`.
type Config struct {
	DataDir  string
	NodeID   uint64
	HTTPAddr string
	GRPCAddr string
	RaftAddr string
	// Peers maps node ids to Raft addresses; empty: a single-node cluster.
	Peers  map[uint64]string
	Shards int
	Logger *slog.Logger
	// Server tunes the gRPC services (tests shorten intervals).
	Server server.Config
}

// Node is a running quorumq process.
type Node struct {
	cfg    Config
	log    *slog.Logger
	db     *pebble.DB
	host   *raftnode.Host
	store  *store.Store
	srv    *server.Server
	grpc   *grpc.Server
	http   *http.Server
	conn   *grpc.ClientConn
	grpcLn net.Listener
	httpLn net.Listener

	stopOnce sync.Once
	stopErr  error
	serveWG  sync.WaitGroup
}

// dataShard is the one Raft group of this version: queues are not yet
// spread over several groups.
const dataShard = 0

// Start opens the data directory, starts Raft and serves gRPC and HTTP. It
// returns once the listeners are open; the group elects its leader in the
// background (see /readyz).
func Start(ctx context.Context, cfg Config) (n *Node, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.NodeID == 0 {
		cfg.NodeID = 1
	}
	if cfg.Shards == 0 {
		cfg.Shards = 1
	}
	if cfg.Shards != 1 {
		return nil, fmt.Errorf("--shards %d: this version runs one Raft group per cluster", cfg.Shards)
	}
	for id := range cfg.Peers {
		if id != cfg.NodeID {
			return nil, fmt.Errorf("--peers names node %d: this version runs single-node clusters only", id)
		}
	}
	if cfg.Server.Logger == nil {
		cfg.Server.Logger = cfg.Logger
	}
	n = &Node{cfg: cfg, log: cfg.Logger}
	metricsHandler, meter, err := newMetrics()
	if err != nil {
		return nil, err
	}
	if cfg.Server.Meter == nil {
		cfg.Server.Meter = meter
	}
	defer func() {
		if err != nil {
			n.closeAll()
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	n.db, err = pebble.Open(filepath.Join(cfg.DataDir, "pebble"), &pebble.Options{
		Logger: pebbleLogger{cfg.Logger},
	})
	if err != nil {
		return nil, fmt.Errorf("open pebble: %w", err)
	}
	n.host, err = raftnode.NewHost(raftnode.Config{NodeID: cfg.NodeID, DB: n.db, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("raft host: %w", err)
	}
	n.store = store.New(n.db, dataShard)
	n.srv = server.New(cfg.Server, n.host, n.store, dataShard)
	if err := n.host.AddGroup(dataShard, []uint64{cfg.NodeID}, n.srv.StateMachine()); err != nil {
		return nil, fmt.Errorf("start shard %d: %w", dataShard, err)
	}
	n.host.Start()
	n.srv.Start()

	n.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("listen grpc: %w", err)
	}
	n.grpc = grpc.NewServer(
		grpc.UnaryInterceptor(server.UnaryInterceptor(server.DevAuthenticator{}, cfg.Logger)),
		grpc.MaxRecvMsgSize(8<<20),
	)
	qv1.RegisterQueueServiceServer(n.grpc, n.srv)
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		if err := n.grpc.Serve(n.grpcLn); err != nil {
			n.log.Error("grpc server stopped", "err", err)
		}
	}()

	n.conn, err = grpc.NewClient(n.grpcLn.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.MaxCallSendMsgSize(8<<20)))
	if err != nil {
		return nil, fmt.Errorf("gateway client: %w", err)
	}
	handler, err := gateway.New(ctx, gateway.Config{Conn: n.conn, Ready: n.srv.Ready, Metrics: metricsHandler})
	if err != nil {
		return nil, err
	}
	n.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen http: %w", err)
	}
	n.http = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		if err := n.http.Serve(n.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server stopped", "err", err)
		}
	}()
	return n, nil
}

// GRPCAddr is the address the gRPC API listens on.
func (n *Node) GRPCAddr() string { return n.grpcLn.Addr().String() }

// HTTPAddr is the address REST, /metrics and the probes listen on.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// Server is the node's gRPC service implementation (tests read counters).
func (n *Node) Server() *server.Server { return n.srv }

// Host is the node's Raft host.
func (n *Node) Host() *raftnode.Host { return n.host }

// Store is the node's queue state machine.
func (n *Node) Store() *store.Store { return n.store }

// WaitReady blocks until the node's shards have a leader.
func (n *Node) WaitReady(ctx context.Context) error {
	_, err := n.host.WaitLeader(ctx, dataShard)
	return err
}

// Stop drains the node: it stops accepting calls, lets in-flight calls
// finish (up to ctx), then stops Raft and closes Pebble.
func (n *Node) Stop(ctx context.Context) error {
	n.stopOnce.Do(func() {
		if n.http != nil {
			_ = n.http.Shutdown(ctx)
		}
		if n.grpc != nil {
			done := make(chan struct{})
			go func() { n.grpc.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				n.grpc.Stop()
				<-done
			}
		}
		n.serveWG.Wait()
		n.stopErr = n.closeAll()
	})
	return n.stopErr
}

// closeAll releases what Start opened, in reverse order.
func (n *Node) closeAll() error {
	if n.grpc != nil {
		n.grpc.Stop()
	}
	if n.http != nil {
		_ = n.http.Close()
	}
	if n.conn != nil {
		_ = n.conn.Close()
	}
	if n.srv != nil {
		n.srv.Stop()
	}
	if n.host != nil {
		n.host.Stop()
	}
	var err error
	if n.db != nil {
		err = n.db.Close()
		n.db = nil
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

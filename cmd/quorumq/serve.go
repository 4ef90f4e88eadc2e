package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/quorumq/quorumq/server/auth"
	"github.com/quorumq/quorumq/server/node"
)

func newServeCmd() *cobra.Command {
	var (
		cfg       node.Config
		peers     string
		role      string
		logLevel  string
		hsSecret  string
		jwks      string
		pubKeys   []string
		issuer    string
		audience  string
		leeway    time.Duration
		reload    time.Duration
		insecure  bool
		insecureP bool
		snapRate  int64
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a quorumq node (default: a single-node dev cluster on 127.0.0.1)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			cfg.Logger = log
			p, err := parsePeers(peers)
			if err != nil {
				return err
			}
			cfg.Peers = p
			cfg.SnapshotBytesPerSecond = snapRate
			switch role {
			case "all", "storage":
				cfg.Role = "storage"
			case "api":
				cfg.Role = "api"
			default:
				return fmt.Errorf("--role %s: want all or api", role)
			}
			if hsSecret != "" || jwks != "" || len(pubKeys) > 0 {
				a, err := auth.New(auth.Config{HS256SecretFile: hsSecret, JWKSFile: jwks, PublicKeyFiles: pubKeys,
					Issuer: issuer, Audience: audience, Leeway: leeway, ReloadInterval: reload, Logger: log})
				if err != nil {
					return fmt.Errorf("authentication: %w", err)
				}
				defer a.Close()
				cfg.Authenticator = a
				if err := checkPeerAuth(cfg, insecureP, log); err != nil {
					return err
				}
			} else if err := checkDevMode(cfg, insecure, log); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			node.TuneGC()
			n, err := node.Start(ctx, cfg)
			if err != nil {
				return err
			}
			scheme := "http"
			if cfg.TLS.CertFile != "" {
				scheme = "https"
			}
			h := scheme + "://" + n.HTTPAddr()
			metrics := "off (--metrics-addr)"
			if a := n.MetricsAddr(); a != "" {
				metrics = "http://" + a + "/metrics"
			}
			sqsURL := "off (--sqs-addr)"
			if a := n.SQSAddr(); a != "" {
				sqsURL = scheme + "://" + a
			}
			fmt.Fprint(cmd.OutOrStdout(), banner(n.NodeID(), cfg.Role, cfg.DataDir, h, n.GRPCAddr(), metrics, sqsURL))
			<-ctx.Done()
			log.Info("shutting down: draining in-flight calls")
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return n.Stop(sctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "./data", "directory of the node's Pebble data")
	f.Uint64Var(&cfg.NodeID, "node-id", 1, "this node's id (1 or more)")
	f.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:8080", "REST, /healthz and /readyz listen address")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "127.0.0.1:9100", "Prometheus GET /metrics listen address, plain HTTP without authentication (series name every tenant's queues: keep it private); empty: off")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", "127.0.0.1:9090", "gRPC API listen address")
	f.StringVar(&cfg.SQSAddr, "sqs-addr", "127.0.0.1:9324", "SQS-compatible endpoint (AWS JSON 1.0 and Query protocols) listen address; empty: off")
	f.StringVar(&cfg.SQSRegion, "sqs-region", "us-east-1", "region named in the SQS endpoint's queue ARNs (arn:aws:sqs:<region>:<tenant>:<queue>)")
	f.StringVar(&cfg.SQSTagsAttribute, "sqs-tags-attribute", "quorumq.tags", "SQS message attribute (a comma-separated String) that carries a message's quorumq tags")
	f.StringVar(&cfg.RaftAddr, "raft-addr", "127.0.0.1:7000", "peer (Raft) listen address")
	f.StringVar(&peers, "peers", "", "initial members as id=host:port,... (empty: single node)")
	f.StringVar(&cfg.Join, "join", "", "peer (Raft) address of any member of a running cluster: this node, with an empty --data-dir, asks to be admitted and gets a new node id (--node-id and --peers are then not used)")
	f.IntVar(&cfg.Shards, "shards", 1, "Raft groups at bootstrap: shard 0 keeps tenants and queues, the others queue partitions (fixed once the data dir exists)")
	f.IntVar(&cfg.ReplicationFactor, "replication-factor", 3, "nodes per shard at bootstrap (each shard on this many of the --peers nodes; fewer nodes: every shard on every node); the bootstrap nodes must agree")
	f.DurationVar(&cfg.AutoRepair, "auto-repair", 0, "a storage node down for longer than this is drained: its replicas are recreated on the other nodes and it is removed (it can return only with --join, as a new node); 0: never")
	f.StringVar(&role, "role", "all", "all: a storage node hosting the shards its replica sets name | api: a stateless node that routes to the storage nodes in --peers")
	f.StringVar(&logLevel, "log-level", "info", "debug | info | warn | error")
	f.StringVar(&hsSecret, "auth-hs256-secret-file", "", "HS256 secret file (none: dev mode)")
	f.StringVar(&jwks, "auth-jwks-file", "", "JWKS file (none: dev mode)")
	f.StringSliceVar(&pubKeys, "auth-public-key-file", nil, "PEM public key file(s) (RS256, ES256 or EdDSA by key type; kid = file name)")
	f.StringVar(&issuer, "auth-issuer", "", "required JWT iss")
	f.StringVar(&audience, "auth-audience", "", "required JWT aud")
	f.DurationVar(&leeway, "auth-leeway", 30*time.Second, "clock skew allowed for exp, nbf and iat")
	f.DurationVar(&reload, "auth-reload-interval", 5*time.Second, "how often key files are checked for rotation")
	f.StringVar(&cfg.TLS.CertFile, "tls-cert-file", "", "certificate (PEM) of the client listeners (gRPC and HTTP); empty: plain TCP")
	f.StringVar(&cfg.TLS.KeyFile, "tls-key-file", "", "key (PEM) of --tls-cert-file")
	f.StringVar(&cfg.TLS.PeerCertFile, "peer-tls-cert-file", "", "this node's certificate for mutual TLS between nodes; it must carry the URI SAN quorumq://node/<node-id> (--role api: quorumq://api/<node-id>)")
	f.StringVar(&cfg.TLS.PeerKeyFile, "peer-tls-key-file", "", "key of --peer-tls-cert-file")
	f.StringVar(&cfg.TLS.PeerCAFile, "peer-tls-ca-file", "", "CA that signs every node's peer certificate")
	f.Int64Var(&cfg.CacheBytes, "cache-bytes", 32<<20, "Pebble block cache for reads, in bytes (besides the memtables Pebble reserves from the cache)")
	f.BoolVar(&cfg.StateWithoutWAL, "state-without-wal", false, "create a new data directory with the shards' state in a Pebble instance without a write-ahead log (raftlog/ + pebble/): each message body reaches a WAL once per replica instead of twice, about half the disk bytes for a little more CPU; an existing data directory keeps its layout")
	f.Int64Var(&snapRate, "snapshot-bytes-per-sec", 0, "snapshot data (replica copies: moves, new replicas) a node sends per second over all its streams, so moves leave disk and network to foreground traffic; 0: unlimited (a copy paced slower than the shard's writes can need another snapshot)")
	f.BoolVar(&cfg.Pprof, "pprof", false, "serve the Go profiler at /debug/pprof/ on --http-addr")
	f.BoolVar(&cfg.FaultInjection, "fault-injection", false,
		"fault tests only, in a binary built with -tags chaos (others refuse it): serve "+node.FaultsPath+" on a loopback --http-addr to cut this node off from peers")
	f.BoolVar(&insecure, "insecure", false, "allow dev mode (no authentication) on non-loopback addresses")
	f.BoolVar(&insecureP, "insecure-peers", false, "with --auth-*: allow peer traffic without mutual TLS (anyone reaching a peer port can then forge Raft messages and outbox deliveries)")
	f.Float64Var(&cfg.Tracing.SampleRatio, "trace-sample-ratio", node.DefaultTraceSampleRatio,
		"share of new traces recorded, 0 to 1 (calls from a sampled caller are always recorded); needs a trace exporter")
	f.StringVar(&cfg.Tracing.Exporter, "trace-exporter", node.ExporterAuto,
		"otlp | none | discard (default: otlp when OTEL_EXPORTER_OTLP_ENDPOINT is set, else none; discard builds spans and drops them)")
	return cmd
}

// parsePeers parses "1=host:7000,2=host:7001".
func parsePeers(s string) (map[uint64]string, error) {
	out := map[uint64]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || addr == "" {
			return nil, fmt.Errorf("--peers: %q is not id=host:port", part)
		}
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("--peers: %q: id must be a positive integer", part)
		}
		out[n] = addr
	}
	return out, nil
}

// checkPeerAuth refuses client authentication with an open peer port: the
// peer port takes Raft messages and outbox deliveries, so without mutual
// TLS anyone reaching it could bypass every token. A node without peers
// (single node) has no peer port.
func checkPeerAuth(cfg node.Config, insecurePeers bool, log *slog.Logger) error {
	peered := len(cfg.Peers) > 1 || cfg.Role == "api"
	if !peered || cfg.TLS.PeerCertFile != "" || cfg.TLS.PeerKeyFile != "" || cfg.TLS.PeerCAFile != "" {
		return nil // an incomplete peer TLS configuration fails in node.Start
	}
	if !insecurePeers {
		return errors.New("client authentication (--auth-*) is configured but peer traffic is not authenticated: " +
			"give --peer-tls-cert-file, --peer-tls-key-file and --peer-tls-ca-file (mutual TLS between nodes), or pass --insecure-peers")
	}
	log.Warn("INSECURE PEERS: client authentication is on but the peer port is not (--insecure-peers): " +
		"anyone who reaches --raft-addr can forge Raft messages and deliver messages into any tenant's queue. Firewall it.")
	return nil
}

// checkDevMode allows running without authentication only on loopback
// listeners (or with --insecure), and says so loudly.
func checkDevMode(cfg node.Config, insecure bool, log *slog.Logger) error {
	if !insecure {
		for _, a := range []struct{ flag, addr string }{{"--http-addr", cfg.HTTPAddr}, {"--grpc-addr", cfg.GRPCAddr}, {"--raft-addr", cfg.RaftAddr}, {"--sqs-addr", cfg.SQSAddr}} {
			if !isLoopback(a.addr) && (a.addr != "" || a.flag != "--sqs-addr") {
				return fmt.Errorf("%s %s: without authentication (dev mode) quorumq listens on loopback only; configure --auth-* or pass --insecure", a.flag, a.addr)
			}
		}
	}
	log.Warn("DEV MODE: no authentication configured; every call acts as tenant \"default\" with every scope. Keep the listeners on loopback.")
	return nil
}

// isLoopback reports whether a listen address is on the loopback interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// banner is what serve prints once it listens. An API-tier node keeps no
// data (its --data-dir is unused), so it says what it is instead.
func banner(nodeID uint64, role, dataDir, httpURL, grpcAddr, metrics, sqsURL string) string {
	what := "data in " + dataDir
	if role == "api" {
		what = "API tier, no data"
	}
	return fmt.Sprintf("quorumq node %d serving (%s)\n  REST     %s/v1/queues\n  gRPC     %s\n  SQS      %s\n  metrics  %s\n  console  %s/ui/\n  health   %s/healthz  %s/readyz\n",
		nodeID, what, httpURL, grpcAddr, sqsURL, metrics, httpURL, httpURL, httpURL)
}

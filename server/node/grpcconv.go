package node

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// gRPC limits and keepalive, documented in README.md ("gRPC"). A client
// may ping every 10 s, even without an active call (long-poll clients keep
// idle connections warm); faster pings get a GOAWAY (too_many_pings). The
// server pings a connection silent for a minute and drops it if no answer
// comes in 20 s (a peer that vanished without a FIN); a connection with no
// call for 15 minutes is closed (clients reconnect transparently).
const (
	clientMaxRecvBytes = 8 << 20  // a 4 MiB batch plus its framing, with room to spare
	peerMaxRecvBytes   = 16 << 20 // Raft batches and snapshot chunks
	keepaliveMinTime   = 10 * time.Second
	keepaliveTime      = 60 * time.Second
	keepaliveTimeout   = 20 * time.Second
	maxConnectionIdle  = 15 * time.Minute
)

// Flow-control windows between nodes, static: with gRPC's default dynamic
// windows the receiver of every data frame pings to estimate the
// bandwidth-delay product, and acknowledges consumed bytes with small
// window updates; between nodes that is a write and a wakeup of the other
// process for most Raft batches and forwarded calls, more of them the
// more node pairs share the work (issue 17: 6 nodes against 3). With a
// static window the receiver only acknowledges each quarter of it.
// Peer traffic is bounded anyway (Raft batches of 1 MiB, forwarded
// replies under MaxReplyBytes), so these are credit, not memory in use.
const (
	peerStreamWindow = 8 << 20
	peerConnWindow   = 16 << 20
)

// peerFlowServerOptions and peerFlowDialOptions set the peer listener's
// and the peer connections' static windows.
func peerFlowServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.StaticStreamWindowSize(peerStreamWindow), grpc.StaticConnWindowSize(peerConnWindow)}
}

func peerFlowDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStaticStreamWindowSize(peerStreamWindow), grpc.WithStaticConnWindowSize(peerConnWindow)}
}

// keepaliveOptions are the server keepalive settings of both listeners.
func keepaliveOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: maxConnectionIdle,
			Time: keepaliveTime, Timeout: keepaliveTimeout}),
	}
}

// healthServices are the names grpc.health.v1.Health answers for: "" is
// the node as a whole. All share /readyz's meaning (Node.Ready).
var healthServices = []string{"", qv1.QueueService_ServiceDesc.ServiceName, qv1.ClusterService_ServiceDesc.ServiceName}

// healthInterval is how often the health loop re-reads Node.Ready.
const healthInterval = 500 * time.Millisecond

// healthService is grpc-go's health server whose Watch streams end when
// the node stops (GracefulStop would otherwise wait for them).
type healthService struct {
	*health.Server
	stop <-chan struct{}
}

// Watch implements healthpb.HealthServer.
func (h healthService) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() { // ends with the call (cancel above) or the node
		select {
		case <-h.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return h.Server.Watch(req, ctxWatchStream{stream, ctx})
}

type ctxWatchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (s ctxWatchStream) Context() context.Context { return s.ctx }

// registerConventions adds server reflection (v1 and v1alpha) and
// grpc.health.v1.Health to the client listener; reflection resolves every
// registered file, google.rpc error details included.
func (n *Node) registerConventions(s *grpc.Server) {
	n.health = health.NewServer()
	n.healthStop = make(chan struct{})
	n.setHealth()
	healthpb.RegisterHealthServer(s, healthService{Server: n.health, stop: n.healthStop})
	reflection.Register(s)
}

// setHealth publishes Node.Ready to the health server.
func (n *Node) setHealth() {
	st := healthpb.HealthCheckResponse_SERVING
	if n.Ready() != nil {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	for _, svc := range healthServices {
		n.health.SetServingStatus(svc, st)
	}
}

// healthLoop keeps the health statuses current until ctx ends.
func (n *Node) healthLoop(ctx context.Context) {
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.setHealth()
		}
	}
}

// stopHealth answers NOT_SERVING from now on and ends Watch streams.
func (n *Node) stopHealth() {
	if n.health == nil {
		return
	}
	n.health.Shutdown()
	select {
	case <-n.healthStop:
	default:
		close(n.healthStop)
	}
}

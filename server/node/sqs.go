package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"

	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/sqs"
	"github.com/quorumq/quorumq/sqs/sigv4"
)

// sqsEndpoint is the SQS listener and the in-process gRPC server behind
// it: the same QueueService (the router) with the same interceptors as the
// client listener, except that the caller was authenticated by the SQS
// handler (SigV4), which hands the principal over in metadata on a
// connection that never leaves the process.
type sqsEndpoint struct {
	ln      net.Listener
	http    *http.Server
	grpc    *grpc.Server
	mem     *bufconn.Listener
	conn    *grpc.ClientConn
	handler *sqs.Handler
}

// startSQS serves the SQS endpoint on cfg.SQSAddr.
func (n *Node) startSQS(cfg Config, opts []grpc.ServerOption, dial []grpc.DialOption, clientTLS *tls.Config) error {
	auth := cfg.SQSAuthenticator
	if auth == nil {
		auth = sqs.DevAuthenticator{}
		if cfg.Authenticator != nil {
			auth = sigv4Auth{sigv4.New(n.keys)}
		}
	}
	e := &sqsEndpoint{mem: bufconn.Listen(1 << 20)}
	n.sqs = e
	opts = append(opts, grpc.ChainUnaryInterceptor(router.StripInternalHeaders(), server.UnaryInterceptor(sqs.InProcessAuthenticator{}, cfg.Logger)))
	e.grpc = grpc.NewServer(opts...)
	qv1.RegisterQueueServiceServer(e.grpc, n.router)
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		if err := e.grpc.Serve(e.mem); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			n.log.Error("sqs in-process grpc server stopped", "err", err)
		}
	}()
	dial = append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return e.mem.DialContext(ctx) }),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(server.MaxReplyBytes), grpc.MaxCallSendMsgSize(clientMaxRecvBytes)))
	var err error
	if e.conn, err = grpc.NewClient("passthrough:///sqs-in-process", dial...); err != nil {
		return fmt.Errorf("sqs in-process client: %w", err)
	}
	scheme := "http"
	if clientTLS != nil {
		scheme = "https"
	}
	e.handler, err = sqs.New(sqs.Config{Client: qv1.NewQueueServiceClient(e.conn), Auth: auth, Region: cfg.SQSRegion, TagsAttribute: cfg.SQSTagsAttribute,
		Scheme: scheme, Logger: cfg.Logger, TracerProvider: cfg.Server.TracerProvider, MeterProvider: n.meterProvider()})
	if err != nil {
		return err
	}
	if e.ln, err = net.Listen("tcp", cfg.SQSAddr); err != nil {
		return fmt.Errorf("listen sqs (--sqs-addr): %w", err)
	}
	if clientTLS != nil {
		e.ln = tls.NewListener(e.ln, clientTLS)
	}
	e.http = newHTTPServer(e.handler)
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		if err := e.http.Serve(e.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("sqs server stopped", "err", err)
		}
	}()
	return nil
}

// meterProvider is the node's metrics (nil: none), as an interface that
// stays nil when there is no provider.
func (n *Node) meterProvider() metric.MeterProvider {
	if n.mp == nil {
		return nil
	}
	return n.mp
}

// SQSAddr is the address of the SQS endpoint; "" if none.
func (n *Node) SQSAddr() string {
	if n.sqs == nil || n.sqs.ln == nil {
		return ""
	}
	return n.sqs.ln.Addr().String()
}

// shutdown stops taking SQS requests and lets those in flight finish (up
// to ctx).
func (e *sqsEndpoint) shutdown(ctx context.Context) {
	if e.http != nil {
		_ = e.http.Shutdown(ctx)
	}
	e.close()
}

// close releases everything, in-flight calls or not.
func (e *sqsEndpoint) close() {
	if e.http != nil {
		_ = e.http.Close()
	}
	if e.handler != nil {
		e.handler.Close()
	}
	if e.conn != nil {
		_ = e.conn.Close()
	}
	if e.grpc != nil {
		e.grpc.Stop()
	}
	_ = e.mem.Close()
}

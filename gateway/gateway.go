// Package gateway serves quorumq over HTTP: the REST/JSON mapping of the
// gRPC API (grpc-gateway, calling this node's gRPC listener so REST gets the
// same authentication, validation and error mapping), the OpenAPI document
// (with the binary's version and the probe routes, see servedSpec), health
// and readiness probes, and metrics.
//
// The REST edge bounds what it reads before the node authenticates a call:
// a body over MaxBodyBytes is answered 413 MESSAGE_TOO_LARGE at once (by
// its Content-Length, or where a chunked body reaches the cap) and its
// connection closed unread. Errors the edge makes itself carry an ErrorInfo
// like the server's: a body that does not decode is 400 INVALID_ARGUMENT
// with the field where known, a gRPC size limit is never 429. A path that
// is not canonical ("//") is 404, not a redirect; a known path with another
// method is 405 with Allow.
package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/http/pprof"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/openapi"
)

// Config configures the HTTP handler.
type Config struct {
	// Conn is a client connection to this node's gRPC API. Instrument it
	// with an OpenTelemetry client stats handler to carry HTTP callers'
	// trace context (traceparent) on to the node.
	Conn *grpc.ClientConn
	// Ready reports whether the node can serve; nil error means ready.
	Ready func() error
	// Metrics serves GET /metrics; nil: 404.
	Metrics http.Handler
	// Pprof serves the Go profiler under /debug/pprof/ (operators only: it
	// exposes internals, so it is off unless asked for).
	Pprof bool
}

// jsonOptions are the JSON options of the REST mapping.
var jsonOptions = &runtime.JSONPb{
	// Indented, so curl output reads well; lowerCamelCase names.
	// EmitUnpopulated: an empty receive shows "messages": [], a redrive
	// of nothing "moved": "0".
	MarshalOptions:   protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true},
	UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
}

// New returns the HTTP handler of a node. It must be the handler the
// http.Server calls (not wrapped in a ResponseWriter of another layer), so
// a body over MaxBodyBytes closes the connection instead of being drained.
func New(ctx context.Context, cfg Config) (http.Handler, error) {
	return newHandler(ctx, cfg, limits{body: MaxBodyBytes, grpc: maxGRPCRequest})
}

func newHandler(ctx context.Context, cfg Config, lim limits) (http.Handler, error) {
	rt, err := parseRoutes(openapi.Spec)
	if err != nil {
		return nil, err
	}
	spec, err := servedSpec(openapi.Spec, BuildVersion())
	if err != nil {
		return nil, err
	}
	gw := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, fieldMarshaler{jsonOptions}),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithRoutingErrorHandler(routingErrorHandler(rt)),
		// No POST-with-form-body stand-in for GET (nor X-HTTP-Method-Override):
		// the API does not offer it, and it parses form bodies.
		runtime.WithDisablePathLengthFallback(),
	)
	conn := sizeCheckedConn{ClientConnInterface: cfg.Conn, maxRequest: lim.grpc}
	if err := qv1.RegisterQueueServiceHandlerClient(ctx, gw, qv1.NewQueueServiceClient(conn)); err != nil {
		return nil, fmt.Errorf("register REST gateway: %w", err)
	}
	if err := qv1.RegisterClusterServiceHandlerClient(ctx, gw, qv1.NewClusterServiceClient(conn)); err != nil {
		return nil, fmt.Errorf("register REST gateway: %w", err)
	}
	if err := qv1.RegisterCredentialsServiceHandlerClient(ctx, gw, qv1.NewCredentialsServiceClient(conn)); err != nil {
		return nil, fmt.Errorf("register REST gateway: %w", err)
	}
	if err := qv1.RegisterTopicServiceHandlerClient(ctx, gw, qv1.NewTopicServiceClient(conn)); err != nil {
		return nil, fmt.Errorf("register REST gateway: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", gw)
	mux.Handle("/v1", gw) // not redirected to /v1/: gw answers 404
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(spec)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if cfg.Ready != nil {
			if err := cfg.Ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return limitBody(cleanPaths(withTraceContext(mux)), lim.body), nil
}

// traceContext reads W3C trace context (traceparent, tracestate) from HTTP
// headers.
var traceContext = propagation.TraceContext{}

// withTraceContext continues an HTTP caller's trace: the span context of its
// traceparent header goes into the request's context, from which the
// instrumented gRPC connection (Config.Conn) sends it on to the node.
func withTraceContext(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("traceparent") != "" {
			r = r.WithContext(traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header)))
		}
		h.ServeHTTP(w, r)
	})
}

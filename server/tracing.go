package server

import (
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/metric"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// tracerName is the instrumentation scope of quorumq's own spans.
const tracerName = "github.com/quorumq/quorumq/server"

// Propagator is the trace context format between nodes and from clients:
// W3C traceparent/tracestate (and baggage) in gRPC metadata.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(
	propagation.TraceContext{}, propagation.Baggage{})

// SpanForward is the span of a follower forwarding a call to the leader
// (quorumq's other spans are the shard service's).
const SpanForward = "quorumq.forward"

// NewTracer returns the tracer of quorumq's own spans (tp nil: no spans).
func NewTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer(tracerName)
}

// raftStreamMethod is the Raft transport's message stream: it lives as long
// as the connection, so it gets neither a span nor call metrics.
const raftStreamMethod = "/transportpb.v1.RaftTransportService/Stream"

func instrumented(info *stats.RPCTagInfo) bool { return info.FullMethodName != raftStreamMethod }

// ServerStatsHandler instruments a gRPC server (API or peer listener) with
// OpenTelemetry: a server span per call, continuing the caller's trace
// from the W3C headers in its metadata, and rpc.server.* metrics. tp or mp
// nil: none of that kind.
func ServerStatsHandler(tp trace.TracerProvider, mp metric.MeterProvider) grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(otelOptions(tp, mp)...))
}

// ClientStatsHandler instruments a gRPC client (forwarding, the gateway's
// connection to its node, Raft snapshot streams): a client span per call
// whose context travels in the call's metadata.
func ClientStatsHandler(tp trace.TracerProvider, mp metric.MeterProvider) grpc.DialOption {
	return grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelOptions(tp, mp)...))
}

func otelOptions(tp trace.TracerProvider, mp metric.MeterProvider) []otelgrpc.Option {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	opts := []otelgrpc.Option{otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(Propagator),
		otelgrpc.WithFilter(instrumented)}
	if mp != nil {
		opts = append(opts, otelgrpc.WithMeterProvider(mp))
	} else {
		opts = append(opts, otelgrpc.WithMeterProvider(noopmetric.NewMeterProvider()))
	}
	return opts
}

package node

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Trace exporters of TracingConfig.Exporter.
const (
	ExporterAuto    = ""        // OTLP when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set, else none
	ExporterOTLP    = "otlp"    // OTLP/gRPC, configured by the standard OTEL_EXPORTER_OTLP_* variables
	ExporterNone    = "none"    // no spans at all (trace context still passes through)
	ExporterDiscard = "discard" // sample and build spans, then drop them: measures tracing's cost
)

// DefaultTraceSampleRatio is the share of new traces (started here, not by
// a sampled caller) that are recorded when an exporter is configured.
const DefaultTraceSampleRatio = 0.1

// TracingConfig configures the node's spans when Config.TracerProvider is
// nil. The zero value: OTLP if the environment names an endpoint, sampling
// DefaultTraceSampleRatio; otherwise tracing is off.
type TracingConfig struct {
	Exporter string
	// SampleRatio is the share of root traces recorded, 0 to 1; calls whose
	// caller sampled its trace are always recorded (parent-based). Negative:
	// DefaultTraceSampleRatio.
	SampleRatio float64
}

// newTracerProvider builds the node's tracer provider from cfg, or returns
// nil (tracing off) when no exporter is configured. Shut it down to flush.
func newTracerProvider(ctx context.Context, cfg TracingConfig, nodeID uint64) (*sdktrace.TracerProvider, error) {
	exporter := cfg.Exporter
	if exporter == ExporterAuto {
		exporter = ExporterNone
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
			exporter = ExporterOTLP
		}
	}
	ratio := cfg.SampleRatio
	if ratio < 0 {
		ratio = DefaultTraceSampleRatio
	}
	if ratio > 1 {
		return nil, fmt.Errorf("trace sample ratio %v: must be 0 to 1", ratio)
	}
	var exp sdktrace.SpanExporter
	switch exporter {
	case ExporterNone:
		return nil, nil
	case ExporterOTLP:
		e, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("otlp trace exporter: %w", err)
		}
		exp = e
	case ExporterDiscard:
		exp = discardExporter{}
	default:
		return nil, fmt.Errorf("trace exporter %q: want otlp, none or discard", cfg.Exporter)
	}
	res := resource.NewSchemaless(attribute.String("service.name", "quorumq"),
		attribute.String("service.instance.id", strconv.FormatUint(nodeID, 10)))
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	), nil
}

// discardExporter drops every span.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

var _ trace.TracerProvider = (*sdktrace.TracerProvider)(nil)

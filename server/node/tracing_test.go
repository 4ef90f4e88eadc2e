package node

import (
	"context"
	"testing"
)

func TestNewTracerProvider(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	ctx := context.Background()
	// Auto without an endpoint, or none: tracing off.
	for _, exp := range []string{ExporterAuto, ExporterNone} {
		if tp, err := newTracerProvider(ctx, TracingConfig{Exporter: exp, SampleRatio: 1}, 1); tp != nil || err != nil {
			t.Errorf("exporter %q: provider %v, err %v; want none", exp, tp, err)
		}
	}
	// Discard at ratio 1: every root span records (and is dropped).
	tp, err := newTracerProvider(ctx, TracingConfig{Exporter: ExporterDiscard, SampleRatio: 1}, 1)
	if err != nil || tp == nil {
		t.Fatalf("discard: %v, %v", tp, err)
	}
	defer tp.Shutdown(ctx)
	if _, s := tp.Tracer("t").Start(ctx, "x"); !s.IsRecording() || !s.SpanContext().IsSampled() {
		t.Error("ratio 1: root span not sampled")
	}
	// Ratio 0: root spans are not sampled.
	tp0, err := newTracerProvider(ctx, TracingConfig{Exporter: ExporterDiscard, SampleRatio: 0}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer tp0.Shutdown(ctx)
	if _, s := tp0.Tracer("t").Start(ctx, "x"); s.IsRecording() {
		t.Error("ratio 0: root span recorded")
	}
	if _, err := newTracerProvider(ctx, TracingConfig{Exporter: "zipkin"}, 1); err == nil {
		t.Error("unknown exporter accepted")
	}
	if _, err := newTracerProvider(ctx, TracingConfig{Exporter: ExporterDiscard, SampleRatio: 2}, 1); err == nil {
		t.Error("ratio 2 accepted")
	}
}

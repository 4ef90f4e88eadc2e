package node

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestTraceLogHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewTraceLogHandler(slog.NewJSONHandler(&buf, nil))).With("node", 1)
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))

	log.InfoContext(ctx, "with span")
	log.InfoContext(context.Background(), "without span")
	dec := json.NewDecoder(&buf)
	var with, without map[string]any
	if err := dec.Decode(&with); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&without); err != nil {
		t.Fatal(err)
	}
	if with["trace_id"] != tid.String() || with["span_id"] != sid.String() || with["node"] != 1.0 {
		t.Errorf("record with a span: %v", with)
	}
	if _, ok := without["trace_id"]; ok {
		t.Errorf("record without a span has a trace id: %v", without)
	}
	if h := NewTraceLogHandler(log.Handler()); h != log.Handler() {
		t.Error("wrapping twice nests handlers")
	}
}

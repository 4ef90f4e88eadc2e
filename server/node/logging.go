package node

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// TraceLogHandler wraps a slog.Handler: a record logged with a context that
// holds a valid span (logger.InfoContext(ctx, ...)) gets trace_id and
// span_id attributes, so logs and traces join up.
type TraceLogHandler struct{ slog.Handler }

// NewTraceLogHandler wraps h (once: wrapping a TraceLogHandler returns it).
func NewTraceLogHandler(h slog.Handler) slog.Handler {
	if t, ok := h.(TraceLogHandler); ok {
		return t
	}
	return TraceLogHandler{h}
}

// Handle implements slog.Handler.
func (h TraceLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h TraceLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return TraceLogHandler{h.Handler.WithAttrs(as)}
}

// WithGroup implements slog.Handler.
func (h TraceLogHandler) WithGroup(name string) slog.Handler {
	return TraceLogHandler{h.Handler.WithGroup(name)}
}

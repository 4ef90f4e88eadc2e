package server

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// metrics are the server's per-queue counters. They count messages, not
// calls. The meter is injected (Config.Meter), never global.
type metrics struct {
	sent, received, deleted metric.Int64Counter
}

func newMetrics(m metric.Meter) *metrics {
	if m == nil {
		m = noop.NewMeterProvider().Meter("quorumq")
	}
	counter := func(name, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit("{message}"))
		if err != nil { // only on an invalid name: a bug caught by any test
			panic(err)
		}
		return c
	}
	return &metrics{
		sent:     counter("quorumq.messages.sent", "Messages stored by SendMessage and SendMessageBatch."),
		received: counter("quorumq.messages.received", "Messages leased by ReceiveMessages."),
		deleted:  counter("quorumq.messages.deleted", "Messages deleted by receipt handle."),
	}
}

func (m *metrics) add(ctx context.Context, c metric.Int64Counter, tenant, queue string, n int) {
	if n > 0 {
		c.Add(ctx, int64(n), metric.WithAttributes(attribute.String("tenant", tenant), attribute.String("queue", queue)))
	}
}

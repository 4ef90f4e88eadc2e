package node

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// newMetrics builds this node's OpenTelemetry meter, exported in Prometheus
// text at GET /metrics. Each node has its own registry (no globals), so
// several nodes in one test process do not mix their series.
func newMetrics() (http.Handler, metric.Meter, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), provider.Meter("github.com/quorumq/quorumq"), nil
}

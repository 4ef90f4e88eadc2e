package shardserver

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
)

// DefaultMaxQueueLabels bounds the (tenant, queue) label pairs a node
// exports; series of further queues are summed under tenant and queue
// "_other".
const DefaultMaxQueueLabels = 1000

// OtherLabel is the tenant and queue label of the queues past the cap.
const OtherLabel = "_other"

// metrics are the server's per-queue and per-tenant instruments. Counters
// count messages, not calls, on the node that served the call (the
// leader). The meter is injected (Config.Meter), never global. Instrument
// names carry no "quorumq" prefix: the Prometheus exporter adds it as its
// namespace (quorumq_messages_sent_total).
type metrics struct {
	sent, received, deleted, deadLettered metric.Int64Counter
	quotaRejections                       metric.Int64Counter
	labels                                *queueLabels
}

func metricNoop() metric.MeterProvider { return noop.NewMeterProvider() }

func newMetrics(m metric.Meter, maxLabels int) *metrics {
	if m == nil {
		m = metricNoop().Meter("quorumq")
	}
	counter := func(name, desc, unit string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit(unit))
		if err != nil { // only on an invalid name: a bug caught by any test
			panic(err)
		}
		return c
	}
	return &metrics{
		sent:         counter("messages.sent", "Messages stored by SendMessage and SendMessageBatch.", "{message}"),
		received:     counter("messages.received", "Messages leased by ReceiveMessages.", "{message}"),
		deleted:      counter("messages.deleted", "Messages deleted by receipt handle.", "{message}"),
		deadLettered: counter("messages.dead_lettered", "Messages moved to the queue's dead-letter queue after max_receive_count receives.", "{message}"),
		quotaRejections: counter("quota.rejections",
			"Refusals by a tenant quota: messages (quota send_rate, stored_bytes) or queue creations (quota queues).", "{rejection}"),
		labels: newQueueLabels(maxLabels),
	}
}

func (m *metrics) add(ctx context.Context, c metric.Int64Counter, tenant, queue string, n int) {
	if n > 0 {
		// Counters add up over a queue's partitions; the depth gauges
		// below are per partition (name#i).
		c.Add(ctx, int64(n), metric.WithAttributeSet(m.labels.get(tenant, store.BaseName(queue))))
	}
}

// quotaRejected counts n refusals of tenant's quota of the given kind.
func (m *metrics) quotaRejected(ctx context.Context, tenant, kind string, n int) {
	if n > 0 {
		m.quotaRejections.Add(ctx, int64(n), metric.WithAttributes(
			attribute.String("tenant", m.labels.tenant(tenant)), attribute.String("quota", kind)))
	}
}

// observeResult counts what an applied command's result says beyond the
// call's own counters: dead-letter moves and store quota refusals.
func (m *metrics) observeResult(ctx context.Context, res *store.Result) {
	m.add(ctx, m.deadLettered, res.Tenant, res.Queue, res.DeadLettered)
	bytes := 0
	for _, o := range res.Sent {
		if errors.Is(o.Err, store.ErrQuotaExceeded) {
			bytes++
		}
	}
	queues := errors.Is(res.Err, store.ErrQuotaExceeded) // only CreateQueue refuses whole
	if bytes == 0 && !queues {
		return
	}
	tenant := res.Tenant
	if p := server.PrincipalFrom(ctx); tenant == "" && p != nil {
		tenant = p.Tenant
	}
	m.quotaRejected(ctx, tenant, "stored_bytes", bytes)
	if queues {
		m.quotaRejected(ctx, tenant, "queues", 1)
	}
}

// queueLabels hands out the attribute set of a (tenant, queue): the first
// max pairs seen get their own, later ones share ("_other", "_other"). A
// pair keeps its label once given (also after its queue is deleted), so a
// series never changes meaning within a process.
type queueLabels struct {
	max   int
	other attribute.Set

	mu      sync.RWMutex
	sets    map[pollKey]attribute.Set
	tenants map[string]bool // tenants with at least one labelled queue
}

func newQueueLabels(max int) *queueLabels {
	if max <= 0 {
		max = DefaultMaxQueueLabels
	}
	return &queueLabels{
		max:     max,
		other:   attribute.NewSet(attribute.String("tenant", OtherLabel), attribute.String("queue", OtherLabel)),
		sets:    map[pollKey]attribute.Set{},
		tenants: map[string]bool{},
	}
}

func (l *queueLabels) get(tenant, queue string) attribute.Set {
	k := pollKey{tenant, queue}
	l.mu.RLock()
	s, ok := l.sets[k]
	full := len(l.sets) >= l.max
	l.mu.RUnlock()
	if ok {
		return s
	}
	if full {
		return l.other
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sets[k]; ok {
		return s
	}
	if len(l.sets) >= l.max {
		return l.other
	}
	s = attribute.NewSet(attribute.String("tenant", tenant), attribute.String("queue", queue))
	l.sets[k] = s
	l.tenants[tenant] = true
	return s
}

// tenant is the tenant label for per-tenant series: tenants that own a
// labelled queue, or that fit under the cap, keep their name.
func (l *queueLabels) tenant(t string) string {
	l.mu.RLock()
	ok := l.tenants[t]
	n := len(l.tenants)
	l.mu.RUnlock()
	if ok || n < l.max {
		return t
	}
	return OtherLabel
}

// registerDepth registers the per-queue depth gauges. They are observed
// at scrape time from the local store, and only on the shard leader (every
// replica holds the same queues; one reporter keeps sums right). A scrape
// costs two reads per queue: store.Depths reads the counters the state
// machine keeps, whose in-flight and delayed counts are those of the
// queue's last command or housekeeping tick (a tick follows every lease
// end and delay end), so they may lag by one tick.
func (s *Server) registerDepth(m metric.Meter) {
	if m == nil {
		return
	}
	gauge := func(name, desc, unit string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithDescription(desc), metric.WithUnit(unit))
		if err != nil {
			panic(err)
		}
		return g
	}
	visible := gauge("queue.visible", "Messages ready to receive (approximate).", "{message}")
	inFlight := gauge("queue.in_flight", "Messages received whose lease has not ended.", "{message}")
	delayed := gauge("queue.delayed", "Messages not yet due (delay or deliver_at).", "{message}")
	age, err := m.Float64ObservableGauge("queue.oldest_message.age",
		metric.WithDescription("Age of the queue's oldest stored message (since it entered the queue); 0 when empty."),
		metric.WithUnit("s"))
	if err != nil {
		panic(err)
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st, err := s.raft.Status(s.shard)
		if err != nil || !st.IsLeader || s.metadataOnly.Load() {
			return nil
		}
		now := s.cfg.Now()
		type sums struct {
			vis, fl, del int64
			oldest       int64
		}
		var other *sums
		err = s.store.Depths(now.UnixMilli(), 0, func(d store.QueueDepth) bool {
			set := s.metrics.labels.get(d.Tenant, d.Queue)
			if set.Equals(&s.metrics.labels.other) {
				if other == nil {
					other = &sums{}
				}
				other.vis += d.Stats.Visible
				other.fl += d.Stats.InFlight
				other.del += d.Stats.Delayed
				if d.OldestEnqueuedMs > 0 && (other.oldest == 0 || d.OldestEnqueuedMs < other.oldest) {
					other.oldest = d.OldestEnqueuedMs
				}
				return true
			}
			attrs := metric.WithAttributeSet(set)
			o.ObserveInt64(visible, d.Stats.Visible, attrs)
			o.ObserveInt64(inFlight, d.Stats.InFlight, attrs)
			o.ObserveInt64(delayed, d.Stats.Delayed, attrs)
			o.ObserveFloat64(age, ageSeconds(now, d.OldestEnqueuedMs), attrs)
			return true
		})
		if other != nil {
			attrs := metric.WithAttributeSet(s.metrics.labels.other)
			o.ObserveInt64(visible, other.vis, attrs)
			o.ObserveInt64(inFlight, other.fl, attrs)
			o.ObserveInt64(delayed, other.del, attrs)
			o.ObserveFloat64(age, ageSeconds(now, other.oldest), attrs)
		}
		return err
	}, visible, inFlight, delayed, age)
	if err != nil {
		panic(err)
	}
}

func ageSeconds(now time.Time, enqueuedMs int64) float64 {
	if enqueuedMs <= 0 {
		return 0
	}
	return max(now.Sub(time.UnixMilli(enqueuedMs)).Seconds(), 0)
}

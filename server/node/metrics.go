package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/quorumq/quorumq/raftnode"
)

// metricsNamespace prefixes every exported series: quorumq_messages_sent_total,
// quorumq_raft_term, quorumq_rpc_server_call_duration_seconds...
const metricsNamespace = "quorumq"

// newMetrics builds this node's OpenTelemetry meter provider, exported in
// Prometheus text at GET /metrics. Each node has its own registry (no
// globals), so several nodes in one test process do not mix their series.
func newMetrics() (http.Handler, *sdkmetric.MeterProvider, error) {
	reg := prometheus.NewRegistry()
	// The Go runtime (go_goroutines, go_memstats_*, GC) and the process
	// (process_resident_memory_bytes, open fds, CPU), unprefixed as every
	// dashboard expects them.
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, nil, fmt.Errorf("go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, nil, fmt.Errorf("process collector: %w", err)
	}
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(),
		otelprom.WithoutTargetInfo(), otelprom.WithNamespace(metricsNamespace))
	if err != nil {
		return nil, nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), provider, nil
}

// latencyBuckets are the histogram bounds of the Raft timings, in seconds:
// 50µs (an fsync on NVMe) to 10s (a proposal waiting out an election).
var latencyBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// raftMetrics implements raftnode.Metrics with OpenTelemetry instruments.
// Its histograms are recorded on the Raft loop (once per round, not per
// entry) and on proposers' goroutines.
type raftMetrics struct {
	fsync      metric.Float64Histogram
	written    metric.Int64Counter
	apply      metric.Float64Histogram
	applied    metric.Int64Counter
	commit     metric.Float64Histogram
	proposals  metric.Int64Counter
	groupAttrs sync.Map // group id -> *groupAttrs
}

type groupAttrs struct {
	group, ok, failed metric.MeasurementOption
}

var _ raftnode.Metrics = (*raftMetrics)(nil)

func newRaftMetrics(m metric.Meter) (*raftMetrics, error) {
	r := &raftMetrics{}
	var err error
	hist := func(name, desc string) metric.Float64Histogram {
		if err != nil {
			return nil
		}
		var h metric.Float64Histogram
		h, err = m.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit("s"),
			metric.WithExplicitBucketBoundaries(latencyBuckets...))
		return h
	}
	counter := func(name, desc, unit string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var c metric.Int64Counter
		c, err = m.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit(unit))
		return c
	}
	r.fsync = hist("raft.log.fsync.duration", "Synced writes of the Raft log (one per loop round for all groups, fsync included).")
	r.written = counter("raft.log.written", "Bytes written to the Raft log (entries and HardStates, all groups).", "By")
	r.apply = hist("raft.apply.duration", "Applying one round's committed entries of a group (one Pebble batch).")
	r.applied = counter("raft.applied.entries", "Committed entries applied.", "{entry}")
	r.commit = hist("raft.commit.duration", "Proposals from this node: from Propose until the round applying the entry began (queueing, append, quorum replication).")
	r.proposals = counter("raft.proposals", "Proposals made on this node, by outcome (ok, error).", "{proposal}")
	return r, err
}

func (r *raftMetrics) attrs(group uint64) *groupAttrs {
	if a, ok := r.groupAttrs.Load(group); ok {
		return a.(*groupAttrs)
	}
	g := attribute.String("group", strconv.FormatUint(group, 10))
	a := &groupAttrs{
		group:  metric.WithAttributeSet(attribute.NewSet(g)),
		ok:     metric.WithAttributeSet(attribute.NewSet(g, attribute.String("outcome", "ok"))),
		failed: metric.WithAttributeSet(attribute.NewSet(g, attribute.String("outcome", "error"))),
	}
	v, _ := r.groupAttrs.LoadOrStore(group, a)
	return v.(*groupAttrs)
}

// LogWritten implements raftnode.Metrics.
func (r *raftMetrics) LogWritten(d time.Duration, synced bool, bytes int) {
	ctx := context.Background()
	if synced {
		r.fsync.Record(ctx, d.Seconds())
	}
	r.written.Add(ctx, int64(bytes))
}

// Applied implements raftnode.Metrics.
func (r *raftMetrics) Applied(group uint64, entries int, d time.Duration) {
	a := r.attrs(group)
	r.apply.Record(context.Background(), d.Seconds(), a.group)
	r.applied.Add(context.Background(), int64(entries), a.group)
}

// ProposalDone implements raftnode.Metrics.
func (r *raftMetrics) ProposalDone(group uint64, commit, _ time.Duration, err error) {
	a := r.attrs(group)
	if err != nil {
		r.proposals.Add(context.Background(), 1, a.failed)
		return
	}
	r.proposals.Add(context.Background(), 1, a.ok)
	r.commit.Record(context.Background(), commit.Seconds(), a.group)
}

// observables returns constructors of observable counters and gauges on m;
// the first failure is kept in *err and later calls return nil, so a list
// of registrations reads flat and is checked once.
func observables(m metric.Meter, err *error) (
	counter func(name, desc, unit string) metric.Int64ObservableCounter,
	gauge func(name, desc, unit string) metric.Int64ObservableGauge,
) {
	counter = func(name, desc, unit string) metric.Int64ObservableCounter {
		if *err != nil {
			return nil
		}
		var c metric.Int64ObservableCounter
		c, *err = m.Int64ObservableCounter(name, metric.WithDescription(desc), metric.WithUnit(unit))
		return c
	}
	gauge = func(name, desc, unit string) metric.Int64ObservableGauge {
		if *err != nil {
			return nil
		}
		var g metric.Int64ObservableGauge
		g, *err = m.Int64ObservableGauge(name, metric.WithDescription(desc), metric.WithUnit(unit))
		return g
	}
	return counter, gauge
}

// registerGroupGauges registers the gauges read from the Raft host at
// scrape time: per group leader, term, indexes and log size; per node the
// snapshot counters.
func registerGroupGauges(m metric.Meter, h *raftnode.Host, groups func() []uint64) error {
	var err error
	counter, gauge := observables(m, &err)
	leader := gauge("raft.leader", "1 if this node leads the group, else 0.", "")
	hasLeader := gauge("raft.has_leader", "1 if this node knows a leader of the group, else 0.", "")
	term := gauge("raft.term", "The group's Raft term as seen by this node.", "")
	applied := gauge("raft.applied_index", "Last log index applied on this node.", "")
	commit := gauge("raft.commit_index", "Last log index this node knows committed.", "")
	entries := gauge("raft.log.entries", "Entries in this node's Raft log (last index - first index + 1).", "{entry}")
	size := gauge("raft.log.size", "Disk space of this node's Raft log (Pebble estimate; flushed data only).", "By")
	halted := gauge("raft.halted", "1 if the group stopped on this node after a storage failure.", "")
	sent := counter("raft.snapshots.sent", "Snapshots this node streamed to a peer that accepted them.", "{snapshot}")
	received := counter("raft.snapshots.received", "Snapshots this node received in full.", "{snapshot}")
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, g := range groups() { // shards may be added
			attrs := metric.WithAttributes(attribute.String("group", strconv.FormatUint(g, 10)))
			st, err := h.Status(g)
			if errors.Is(err, raftnode.ErrGroupNotFound) {
				continue // the shard's replicas are on other nodes
			}
			o.ObserveInt64(halted, b2i(err != nil), attrs)
			o.ObserveInt64(leader, b2i(st.IsLeader), attrs)
			o.ObserveInt64(hasLeader, b2i(st.LeaderID != 0), attrs)
			o.ObserveInt64(term, int64(st.Term), attrs)
			o.ObserveInt64(applied, int64(st.Applied), attrs)
			o.ObserveInt64(commit, int64(st.Commit), attrs)
			if st.LastIndex >= st.FirstIndex && st.FirstIndex > 0 {
				o.ObserveInt64(entries, int64(st.LastIndex-st.FirstIndex+1), attrs)
			} else {
				o.ObserveInt64(entries, 0, attrs)
			}
			if n, err := h.LogBytes(g); err == nil {
				o.ObserveInt64(size, int64(n), attrs)
			}
		}
		o.ObserveInt64(sent, int64(h.SnapshotsSent()))
		o.ObserveInt64(received, int64(h.SnapshotsReceived()))
		return nil
	}, leader, hasLeader, term, applied, commit, entries, size, halted, sent, received)
	return err
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// registerTransportMetrics exports the Raft transport's count of inbound
// messages dropped for a forged sender or a non-member (peer security).
func registerTransportMetrics(m metric.Meter, tr *raftnode.GRPCTransport) error {
	rejected, err := m.Int64ObservableCounter("raft.messages.rejected",
		metric.WithDescription("Inbound Raft messages dropped: the sender was not the node its certificate names, or not a member of the group."),
		metric.WithUnit("{message}"))
	if err != nil {
		return err
	}
	msgs, err := m.Int64ObservableCounter("raft.transport.messages.sent",
		metric.WithDescription("Raft messages sent to other nodes (snapshot data not counted)."), metric.WithUnit("{message}"))
	if err != nil {
		return err
	}
	batches, err := m.Int64ObservableCounter("raft.transport.batches.sent",
		metric.WithDescription("Stream messages (batches of Raft messages to one peer) sent to other nodes: one write each."),
		metric.WithUnit("{batch}"))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(rejected, int64(tr.Rejected()))
		n, b := tr.Sent()
		o.ObserveInt64(msgs, int64(n))
		o.ObserveInt64(batches, int64(b))
		return nil
	}, rejected, msgs, batches)
	return err
}

package node

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/quorumq/quorumq/internal/keys"
)

// writeStalls counts Pebble's write stalls (memtables or L0 at their stop
// threshold: every write waits for a flush or compaction), from its event
// listener.
type writeStalls struct {
	mu    sync.Mutex
	count int64
	total time.Duration
	since time.Time // zero unless stalled
}

func (w *writeStalls) listener(misuse *apiMisuse) *pebble.EventListener {
	return &pebble.EventListener{
		PossibleAPIMisuse: misuse.record,
		WriteStallBegin: func(pebble.WriteStallBeginInfo) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.count++
			w.since = time.Now()
		},
		WriteStallEnd: func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if !w.since.IsZero() {
				w.total += time.Since(w.since)
				w.since = time.Time{}
			}
		},
	}
}

// apiMisuse counts what Pebble reports as a possible misuse of its API,
// by kind, and logs each as an error. The store removes keys set once
// between deletes with SingleDelete (store/DESIGN.md, "Single deletes"); a
// flush or compaction that finds one which deleted nothing, or a set
// under the set it deleted, reports it here. Either means the set-once
// rule was broken for that key: a deleted key may have come back.
type apiMisuse struct {
	log    *slog.Logger
	counts [len(misuseKinds)]atomic.Int64
}

// misuseKinds are the metric's kind labels, by pebble.APIMisuseKind.
var misuseKinds = [...]string{
	pebble.IneffectualSingleDelete:      "ineffectual_single_delete",
	pebble.NondeterministicSingleDelete: "nondeterministic_single_delete",
	pebble.MissizedDelete:               "missized_delete",
	pebble.InvalidValue:                 "invalid_value",
}

func (a *apiMisuse) record(info pebble.PossibleAPIMisuseInfo) {
	k := int(info.Kind)
	if k < 0 || k >= len(misuseKinds) {
		k = int(pebble.InvalidValue) // a kind this build does not know
	}
	a.counts[k].Add(1)
	if a.log != nil {
		a.log.Error("pebble reports a possible API misuse", "component", "pebble",
			"kind", misuseKinds[k], "key", keys.Pretty(info.UserKey), "info", info.ExtraInfo)
	}
}

// total returns the events counted so far, of every kind.
func (a *apiMisuse) total() int64 {
	var n int64
	for i := range a.counts {
		n += a.counts[i].Load()
	}
	return n
}

// read returns the stalls so far and their time (the current one included).
func (w *writeStalls) read() (int64, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.total
	if !w.since.IsZero() {
		d += time.Since(w.since)
	}
	return w.count, d
}

// registerPebbleMetrics exports the node's Pebble engines (the log and the
// state: every series is the sum over both DBs): what they wrote to
// disk (WAL, flushes, compactions, ingested snapshots: their sum divided
// by the messages sent is the write amplification a benchmark reports)
// and the shape of the LSM (memtables, L0, read amplification). One
// db.Metrics() call per scrape feeds every series.
//
// Prometheus names (namespace quorumq):
//
//	quorumq_pebble_wal_written_bytes_total
//	quorumq_pebble_flush_written_bytes_total
//	quorumq_pebble_compaction_written_bytes_total
//	quorumq_pebble_ingested_bytes_total
//	quorumq_pebble_written_bytes_total        (the four above, summed)
//	quorumq_pebble_flushes_total, quorumq_pebble_compactions_total
//	quorumq_pebble_compaction_debt_bytes
//	quorumq_pebble_memtable_size_bytes, quorumq_pebble_memtables
//	quorumq_pebble_l0_files, quorumq_pebble_l0_sublevels, quorumq_pebble_read_amp
//	quorumq_pebble_disk_usage_bytes
//	quorumq_pebble_write_stalls_total, quorumq_pebble_write_stall_seconds_total
//	quorumq_pebble_api_misuse_total{kind}     (should stay 0; see apiMisuse)
//	quorumq_pebble_block_cache_hits_total, quorumq_pebble_block_cache_misses_total
//	                                          (the cache both DBs share)
func registerPebbleMetrics(m metric.Meter, dbs []*pebble.DB, stalls []*writeStalls, misuse *apiMisuse) error {
	var err error
	counter, gauge := observables(m, &err)
	wal := counter("pebble.wal.written", "Bytes written to Pebble's write-ahead log (Raft log entries, state machine batches).", "By")
	flushed := counter("pebble.flush.written", "Bytes of sstables (and blob files) written by memtable flushes.", "By")
	compacted := counter("pebble.compaction.written", "Bytes of sstables (and blob files) written by compactions.", "By")
	ingested := counter("pebble.ingested", "Bytes of sstables ingested (Raft snapshots installed).", "By")
	written := counter("pebble.written", "All bytes Pebble wrote: WAL + flushes + compactions + ingested sstables.", "By")
	flushes := counter("pebble.flushes", "Memtable flushes.", "{flush}")
	compactions := counter("pebble.compactions", "Compactions.", "{compaction}")
	debt := gauge("pebble.compaction.debt", "Estimated bytes to compact for the LSM to reach a stable state.", "By")
	memSize := gauge("pebble.memtable.size", "Bytes allocated by memtables (and large batches) not yet flushed.", "By")
	memCount := gauge("pebble.memtables", "Memtables (the mutable one and those waiting to flush).", "")
	l0Files := gauge("pebble.l0.files", "Sstables in L0.", "")
	l0Sub := gauge("pebble.l0.sublevels", "L0 sublevels (each adds one to the read amplification).", "")
	readAmp := gauge("pebble.read_amp", "Read amplification: memtables plus L0 sublevels plus non-empty levels.", "")
	usage := gauge("pebble.disk.usage", "Disk space used by the Pebble store (sstables, WAL, manifest).", "By")
	stallCount := counter("pebble.write_stalls", "Write stalls: writes waited for a flush or an L0 compaction.", "{stall}")
	cacheHits := counter("pebble.block_cache.hits", "Block cache hits (the cache both Pebble instances share).", "{block}")
	cacheMisses := counter("pebble.block_cache.misses", "Block cache misses: blocks read from the sstable files.", "{block}")
	misused := counter("pebble.api_misuse", "Possible misuses of Pebble's API its compactions reported, by kind (a single delete that broke its rule): should stay 0.", "{event}")
	misuseAttrs := make([]metric.ObserveOption, len(misuseKinds))
	for i, k := range misuseKinds {
		misuseAttrs[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", k)))
	}
	var stallTime metric.Float64ObservableCounter
	if err == nil {
		stallTime, err = m.Float64ObservableCounter("pebble.write_stall", metric.WithDescription("Time writes spent stalled."), metric.WithUnit("s"))
	}
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		var (
			stallN                            int64
			stallD                            time.Duration
			walBytes, flush, compact, ingest  uint64
			flushN, compactN, memN, l0, rdAmp int64
			debtB, memB, l0SubN, usageB       uint64
		)
		for _, s := range stalls {
			n, d := s.read()
			stallN, stallD = stallN+n, stallD+d
		}
		var hits, misses int64
		for i, db := range dbs {
			pm := db.Metrics()
			if i == 0 { // the cache is shared: counted once
				hits, misses = pm.BlockCache.Hits, pm.BlockCache.Misses
			}
			for _, l := range pm.Levels {
				flush += l.TableBytesFlushed + l.BlobBytesFlushed
				compact += l.TableBytesCompacted + l.BlobBytesCompacted
				ingest += l.TableBytesIngested
			}
			walBytes += pm.WAL.BytesWritten
			flushN += pm.Flush.Count
			compactN += pm.Compact.Count
			debtB += pm.Compact.EstimatedDebt
			memB += pm.MemTable.Size
			memN += pm.MemTable.Count
			l0 += pm.Levels[0].TablesCount
			l0SubN += uint64(pm.Levels[0].Sublevels)
			rdAmp += int64(pm.ReadAmp())
			usageB += pm.DiskSpaceUsage()
		}
		o.ObserveInt64(stallCount, stallN)
		o.ObserveFloat64(stallTime, stallD.Seconds())
		o.ObserveInt64(wal, int64(walBytes))
		o.ObserveInt64(flushed, int64(flush))
		o.ObserveInt64(compacted, int64(compact))
		o.ObserveInt64(ingested, int64(ingest))
		o.ObserveInt64(written, int64(walBytes+flush+compact+ingest))
		o.ObserveInt64(flushes, flushN)
		o.ObserveInt64(compactions, compactN)
		o.ObserveInt64(debt, int64(debtB))
		o.ObserveInt64(memSize, int64(memB))
		o.ObserveInt64(memCount, memN)
		o.ObserveInt64(l0Files, l0)
		o.ObserveInt64(l0Sub, int64(l0SubN))
		o.ObserveInt64(readAmp, rdAmp)
		o.ObserveInt64(usage, int64(usageB))
		o.ObserveInt64(cacheHits, hits)
		o.ObserveInt64(cacheMisses, misses)
		for i := range misuse.counts {
			o.ObserveInt64(misused, misuse.counts[i].Load(), misuseAttrs[i])
		}
		return nil
	}, wal, flushed, compacted, ingested, written, flushes, compactions, debt, memSize, memCount, l0Files, l0Sub, readAmp, usage,
		stallCount, stallTime, misused, cacheHits, cacheMisses)
	return err
}

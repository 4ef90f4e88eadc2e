package raftnode

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/quorumq/quorumq/internal/keys"
)

// BenchmarkReplicatedPropose measures proposals of 1 KiB through a
// three-node group on disk (every log write synced), connected by a
// MemNetwork: with one proposer, ns/op is the latency of a proposal (log
// writes, replication, commit, apply); with many, the group's throughput.
// The disk's sync latency dominates, so it shows what the loop's ordering
// of writes and sends costs. It also reports the raft messages sent, the
// process CPU time (all three hosts) and the bytes Pebble wrote (all three
// hosts: WAL, memtable flushes, compactions) per proposal. The DBs have the
// node's 32 MiB memtables: log entries truncated while still in the
// memtable are never flushed.
func BenchmarkReplicatedPropose(b *testing.B) {
	for _, inflight := range []int{1, 64} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) {
			benchPropose(b, inflight)
		})
	}
}

func benchPropose(b *testing.B, inflight int) {
	const group = 1
	net := NewMemNetwork()
	peers := []uint64{1, 2, 3}
	var (
		hosts []*Host
		dbs   []*pebble.DB
		msgs  atomic.Int64
	)
	for _, id := range peers {
		dir := filepath.Join(b.TempDir(), fmt.Sprint(id))
		db, err := pebble.Open(filepath.Join(dir, "db"), &pebble.Options{FS: vfs.Default, Logger: quietPebble{},
			MemTableSize: 32 << 20, MemTableStopWritesThreshold: 4})
		if err != nil {
			b.Fatal(err)
		}
		dbs = append(dbs, db)
		h, err := NewHost(Config{NodeID: id, DB: db, Transport: countingTransport{net.Transport(id), &msgs}, TickInterval: 10 * time.Millisecond,
			Logger: testLogger(b), SnapshotDir: filepath.Join(dir, "snapshots")})
		if err != nil {
			b.Fatal(err)
		}
		if err := h.AddGroup(group, peers, benchSM{group: group}); err != nil {
			b.Fatal(err)
		}
		h.Start()
		net.Attach(id, h)
		hosts = append(hosts, h)
		b.Cleanup(func() {
			h.Stop()
			_ = db.Close()
		})
	}
	var lead *Host
	checkFor(b, 10*time.Second, func() error {
		for _, h := range hosts {
			if st, err := h.Status(group); err == nil && st.IsLeader {
				lead = h
				return nil
			}
		}
		return fmt.Errorf("no leader yet")
	})
	payload := make([]byte, 1024)
	_, _ = rand.Read(payload) // incompressible: disk bytes are not flattered by compression
	ctx := context.Background()
	var left atomic.Int64
	left.Store(int64(b.N))
	b.SetBytes(int64(len(payload)))
	msgs.Store(0)
	cpu0 := cpuTime(b)
	disk0 := diskWritten(dbs)
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, inflight)
	for range inflight {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if _, err := lead.Propose(ctx, group, payload); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(msgs.Load())/float64(b.N), "msgs/op")
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
	disk := diskWritten(dbs)
	b.ReportMetric(float64(disk.wal-disk0.wal)/float64(b.N), "wal-B/op")
	b.ReportMetric(float64(disk.flush-disk0.flush)/float64(b.N), "flush-B/op")
	b.ReportMetric(float64(disk.compact-disk0.compact)/float64(b.N), "compact-B/op")
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// countingTransport counts the raft messages a host sends.
type countingTransport struct {
	Transport
	n *atomic.Int64
}

func (t countingTransport) Send(msgs []Envelope) {
	t.n.Add(int64(len(msgs)))
	t.Transport.Send(msgs)
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchSM applies an entry by writing 8 bytes (its index under a key of
// its own), so the disk bytes the benchmark reports are the log's.
type benchSM struct{ group uint64 }

func (s benchSM) Apply(b *pebble.Batch, index uint64, _ []byte) (any, error) {
	return nil, b.Set(keys.AppendUint64(append(keys.StatePrefix(s.group), 0x13), 0), keys.AppendUint64(nil, index), nil)
}

func (benchSM) AfterApply([]any) {}

// diskBytes is what Pebble wrote: WAL, flushed and compacted sstables.
type diskBytes struct{ wal, flush, compact uint64 }

func diskWritten(dbs []*pebble.DB) diskBytes {
	var d diskBytes
	for _, db := range dbs {
		m := db.Metrics()
		d.wal += m.WAL.BytesWritten
		for _, l := range m.Levels {
			d.flush += l.TableBytesFlushed + l.BlobBytesFlushed
			d.compact += l.TableBytesCompacted + l.BlobBytesCompacted
		}
	}
	return d
}

package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Apply benchmarks: one command per op, applied and committed like the Raft
// host does (indexed batch, NoSync). Besides ns/op, B/op and allocs/op they
// report batchB/msg, the bytes the apply wrote into the batch per message
// (keys + values + batch framing): what reaches the WAL and the memtable,
// and keys/msg, the records (sets and deletes, metadata included) per message.
// Run with a fixed count, the backlog grows with it:
//
//	go test -run '^$' -bench 'BenchmarkApply' -benchmem -benchtime 2000x ./store/

var benchBody = strings.Repeat("x", 1024)

// benchApply applies cmd in its own batch and returns the batch's length
// and record count.
func benchApply(b *testing.B, h *harness, cmd *storepb.Command) (*Result, int, int) {
	cmd.Version, cmd.TimeMs = CommandVersion, h.now
	data, err := proto.Marshal(cmd)
	if err != nil {
		b.Fatal(err)
	}
	batch := h.db.NewIndexedBatch()
	h.index++
	r, err := h.s.Apply(batch, h.index, data)
	if err != nil {
		b.Fatal(err)
	}
	n, k := batch.Len(), int(batch.Count())
	if err := batch.Commit(pebble.NoSync); err != nil {
		b.Fatal(err)
	}
	return r.(*Result), n, k
}

func benchSend(n int) *storepb.Command {
	entries := make([]*storepb.SendEntry, n)
	for i := range entries {
		entries[i] = &storepb.SendEntry{Body: benchBody, DelayMs: -1, Attributes: map[string]string{"k": "v"}}
	}
	return &storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: "t", Queue: "a", Entries: entries}}}
}

var benchReceive10 = &storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{
	Tenant: "t", Queue: "a", MaxMessages: 10, VisibilityTimeoutMs: -1}}}

// benchFill sends n messages of 1 KiB to queue a, 100 per command.
func benchFill(b *testing.B, h *harness, n int) {
	for n > 0 {
		k := min(n, 100)
		if r, _, _ := benchApply(b, h, benchSend(k)); r.Err != nil {
			b.Fatal(r.Err)
		}
		n -= k
	}
}

func benchHarness(b *testing.B) *harness {
	h := newHarness(b)
	h.now = 1_000_000
	h.run("create q=a vis=1h")
	return h
}

// BenchmarkApplySend: one send of one 1 KiB message per op.
func BenchmarkApplySend(b *testing.B) {
	h := benchHarness(b)
	var written, records int
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r, n, k := benchApply(b, h, benchSend(1))
		if r.Sent[0].Err != nil {
			b.Fatal(r.Sent[0].Err)
		}
		written += n
		records += k
	}
	b.ReportMetric(float64(written)/float64(b.N), "batchB/msg")
	b.ReportMetric(float64(records)/float64(b.N), "keys/msg")
}

// BenchmarkApplyReceive10: one receive of 10 messages per op from a backlog
// of 10 per op.
func BenchmarkApplyReceive10(b *testing.B) {
	h := benchHarness(b)
	benchFill(b, h, 10*b.N)
	var written, records int
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r, n, k := benchApply(b, h, benchReceive10)
		if len(r.Received) != 10 {
			b.Fatalf("received %d", len(r.Received))
		}
		written += n
		records += k
	}
	b.ReportMetric(float64(written)/float64(10*b.N), "batchB/msg")
	b.ReportMetric(float64(records)/float64(10*b.N), "keys/msg")
}

// BenchmarkApplyDelete10: one delete of 10 received messages per op.
func BenchmarkApplyDelete10(b *testing.B) {
	h := benchHarness(b)
	benchFill(b, h, 10*b.N)
	dels := make([]*storepb.Command, b.N)
	for i := range dels {
		r, _, _ := benchApply(b, h, benchReceive10)
		d := &storepb.Delete{Tenant: "t", Queue: "a"}
		for _, m := range r.Received {
			d.ReceiptHandles = append(d.ReceiptHandles, m.ReceiptHandle)
		}
		dels[i] = &storepb.Command{Op: &storepb.Command_Delete{Delete: d}}
	}
	var written, records int
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r, n, k := benchApply(b, h, dels[i])
		for _, e := range r.Entries {
			if e != nil {
				b.Fatal(e)
			}
		}
		written += n
		records += k
	}
	b.ReportMetric(float64(written)/float64(10*b.N), "batchB/msg")
	b.ReportMetric(float64(records)/float64(10*b.N), "keys/msg")
}

// BenchmarkApplyLifecycle: per op, a send of 10 messages, a receive of 10
// and a delete of them, one command each, behind a backlog of 20,000
// messages (20 MiB) on a store with a 4 MiB memtable: a message is flushed
// (and compacted) between its send and its receive, as in a queue that
// does not drain at once. Besides the batch bytes
// it reports what Pebble wrote for the state machine per message: WAL,
// flushes and compactions (diskB/msg, after a final flush). The Raft log is
// raftnode's and not in it.
func BenchmarkApplyLifecycle(b *testing.B) {
	benchLifecycle(b, &pebble.Options{}, false)
}

// BenchmarkApplyLifecycleIdempotent is BenchmarkApplyLifecycle with an
// idempotency key on every send (as the SDK's sends carry), on a store
// without and with the node's bloom filters (server/node's Pebble options):
// every send looks its key up, and the key is never there.
func BenchmarkApplyLifecycleIdempotent(b *testing.B) {
	b.Run("filter=none", func(b *testing.B) { benchLifecycle(b, &pebble.Options{}, true) })
	b.Run("filter=bloom10", func(b *testing.B) {
		o := &pebble.Options{}
		o.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
		benchLifecycle(b, o, true)
	})
}

func benchLifecycle(b *testing.B, o *pebble.Options, keyed bool) {
	// The node's block cache (server/node: 128 MiB): Pebble's default of
	// 8 MiB would not keep L6's filter blocks.
	cache := pebble.NewCache(128 << 20)
	defer cache.Unref()
	o.FS, o.Logger, o.MemTableSize, o.Cache = vfs.NewMem(), quietLogger{}, 4<<20, cache
	db, err := pebble.Open("", o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	h := &harness{t: b, db: db, s: New(db, 1), ids: map[string]int{}, handles: map[string][]byte{}, relayed: map[uint64]*storepb.OutboxEntry{}}
	h.now = 1_000_000
	h.run("create q=a vis=1h")
	benchFill(b, h, 20_000)
	before := db.Metrics()
	var written int
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		h.now++
		send := benchSend(10)
		if keyed {
			for j, e := range send.GetSend().Entries {
				sum := sha256.Sum256(fmt.Appendf(nil, "%d/%d", i, j))
				e.IdempotencyKey = hex.EncodeToString(sum[:16])
			}
		}
		_, n1, _ := benchApply(b, h, send)
		r, n2, _ := benchApply(b, h, benchReceive10)
		d := &storepb.Delete{Tenant: "t", Queue: "a"}
		for _, m := range r.Received {
			d.ReceiptHandles = append(d.ReceiptHandles, m.ReceiptHandle)
		}
		_, n3, _ := benchApply(b, h, &storepb.Command{Op: &storepb.Command_Delete{Delete: d}})
		written += n1 + n2 + n3
	}
	b.StopTimer()
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	after := db.Metrics()
	disk := after.WAL.BytesWritten - before.WAL.BytesWritten
	for i := range after.Levels {
		disk += (after.Levels[i].TableBytesFlushed + after.Levels[i].TableBytesCompacted) - (before.Levels[i].TableBytesFlushed + before.Levels[i].TableBytesCompacted)
	}
	msgs := float64(10 * b.N)
	b.ReportMetric(float64(written)/msgs, "batchB/msg")
	b.ReportMetric(float64(disk)/msgs, "diskB/msg")
}

package store

import (
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// BenchmarkApplyBacklogReceive: per op, a receive of 10 messages and the
// delete of them, from a backlog of 200,000 1 KiB messages of which 1 % carry
// the tag "hot" (bench scenario (e) in the store alone, with the node's
// Pebble options). filter=tag receives the tagged ones, filter=none the
// oldest ones. The backlog is filled once per sub-benchmark: run with a
// fixed count, at most 200x (the 2,000 tagged messages run out after that):
//
//	go test -run '^$' -bench BenchmarkApplyBacklogReceive -benchtime 200x ./store/
func BenchmarkApplyBacklogReceive(b *testing.B) {
	for _, filtered := range []bool{true, false} {
		name := "filter=none"
		if filtered {
			name = "filter=tag"
		}
		b.Run(name, func(b *testing.B) { benchBacklogReceive(b, filtered) })
	}
}

func benchBacklogReceive(b *testing.B, filtered bool) {
	const backlog = 200_000
	if b.N > backlog/100/10 {
		b.Fatalf("-benchtime %dx: the backlog holds %d tagged messages, 10 per op: use -benchtime 200x", b.N, backlog/100)
	}
	cache := pebble.NewCache(128 << 20)
	defer cache.Unref()
	o := &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{}, MemTableSize: 64 << 20, MemTableStopWritesThreshold: 3, Cache: cache}
	o.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open("", o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	h := &harness{t: b, db: db, s: New(db, 1), ids: map[string]int{}, handles: map[string][]byte{}, relayed: map[uint64]*storepb.OutboxEntry{}}
	h.now = 1_000_000
	h.run("create q=a vis=1h")
	for sent := 0; sent < backlog; sent += 100 {
		cmd := benchSend(100)
		for j, e := range cmd.GetSend().Entries {
			if (sent+j)%100 == 0 {
				e.Tags = []string{"hot"}
			}
		}
		if r, _, _ := benchApply(b, h, cmd); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	recv := &storepb.Receive{Tenant: "t", Queue: "a", MaxMessages: 10, VisibilityTimeoutMs: -1}
	if filtered {
		recv.Filter = &storepb.TagFilter{All: []string{"hot"}}
	}
	// Block reads are what a filtered receive pays for (its records lie a
	// block apart): the cache misses per op compare across runs on a busy
	// machine where ns/op does not.
	before := db.Metrics().BlockCache
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		h.now++
		r, _, _ := benchApply(b, h, &storepb.Command{Op: &storepb.Command_Receive{Receive: recv}})
		if len(r.Received) != 10 {
			b.Fatalf("received %d", len(r.Received))
		}
		d := &storepb.Delete{Tenant: "t", Queue: "a"}
		for _, m := range r.Received {
			d.ReceiptHandles = append(d.ReceiptHandles, m.ReceiptHandle)
		}
		benchApply(b, h, &storepb.Command{Op: &storepb.Command_Delete{Delete: d}})
	}
	b.StopTimer()
	after := db.Metrics().BlockCache
	b.ReportMetric(float64(after.Misses-before.Misses)/float64(b.N), "block-misses/op")
}

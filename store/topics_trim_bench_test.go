package store

import (
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Retention must not slow appends (issue 20: "never blocking appends, at
// full rate"). Both benchmarks publish the same batches (10 entries of
// 256 bytes per op) to a topic with the minimum retention (1 minute)
// while the clock runs 20 ms per op, after the same prefill of one
// retention period (3,000 ops), on a Pebble configured like a node's
// (64 MiB memtables, 128 MiB block cache). BenchmarkPublishWhileTrimming
// also does what the leader's housekeeping does once a second: every 50
// ops (1 s of clock) it asks NeedsTopicTrim and, when due, applies
// TrimTopics (limit 100), which drops a segment of 1,000 messages every
// 100 ops at steady state. ns/op of the two is the cost of one publish
// with and without trimming amortised over it; checkns/op is the part
// spent in NeedsTopicTrim (off the apply path in a node), ns/trim the
// apply time of one TrimTopics (appends to the shard wait behind it):
//
//	go test -run '^$' -bench 'BenchmarkPublish(WhileTrimming)?$' -benchtime 6000x -count 3 ./store/

const (
	benchTopicStepMs  = 20
	benchTopicEntries = 10
	benchTopicPrefill = int(MinTopicRetentionMs / benchTopicStepMs)
	benchTopicCheck   = 50 // ops between retention checks: 1 s of clock
)

var benchTopicBody = strings.Repeat("x", 256)

// benchTopic creates topic "tp" (one partition) on the harness shard and
// fills it for one retention period; it returns the publish command.
func benchTopic(b *testing.B) (*harness, *storepb.Command) {
	cache := pebble.NewCache(128 << 20)
	defer cache.Unref()
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{}, Cache: cache, MemTableSize: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	h := &harness{t: b, db: db, s: New(db, 1), now: 1_000_000}
	rec := &storepb.TopicRecord{Tenant: "t", Name: "tp", Partitions: 1, RetentionMs: MinTopicRetentionMs, MaxMessageSize: 1024}
	if r := h.apply(&storepb.Command{Op: &storepb.Command_CreateTopic{CreateTopic: &storepb.CreateTopic{Topic: rec}}}); r.Err != nil {
		b.Fatal(r.Err)
	}
	rec, err = h.s.GetTopic("t", "tp")
	if err != nil {
		b.Fatal(err)
	}
	if r := h.apply(&storepb.Command{Op: &storepb.Command_PutTopicPartition{PutTopicPartition: &storepb.PutTopicPartition{Topic: rec}}}); r.Err != nil {
		b.Fatal(r.Err)
	}
	es := make([]*storepb.PublishEntry, benchTopicEntries)
	for i := range es {
		es[i] = &storepb.PublishEntry{Body: benchTopicBody, Attributes: map[string]string{"k": "v"}}
	}
	pub := &storepb.Command{Op: &storepb.Command_Publish{Publish: &storepb.Publish{Tenant: "t", Topic: "tp", Incarnation: rec.CreatedAtMs, Entries: es}}}
	for range benchTopicPrefill {
		benchPublish(b, h, pub)
	}
	return h, pub
}

func benchPublish(b *testing.B, h *harness, pub *storepb.Command) {
	h.now += benchTopicStepMs
	r, _, _ := benchApply(b, h, pub)
	if r.Err != nil || r.Topic == nil || len(r.Topic.Published) != benchTopicEntries {
		b.Fatalf("publish: %v %v", r.Err, r.Topic)
	}
	for _, p := range r.Topic.Published {
		if p.Err != nil {
			b.Fatal(p.Err)
		}
	}
}

// benchPartition returns the topic's partition copy.
func benchPartition(b *testing.B, h *harness) *storepb.TopicPartitionRecord {
	parts, err := h.s.TopicPartitions()
	if err != nil || len(parts) != 1 {
		b.Fatalf("partitions %v: %v", parts, err)
	}
	return parts[0]
}

func BenchmarkPublish(b *testing.B) {
	h, pub := benchTopic(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		benchPublish(b, h, pub)
	}
	b.StopTimer()
	b.ReportMetric(float64(benchPartition(b, h).Messages), "retained")
}

func BenchmarkPublishWhileTrimming(b *testing.B) {
	h, pub := benchTopic(b)
	trim := &storepb.Command{Op: &storepb.Command_TrimTopics{TrimTopics: &storepb.TrimTopics{Limit: 100}}}
	trimmed, trims := 0, 0
	var checkTime, trimTime time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		benchPublish(b, h, pub)
		if i%benchTopicCheck != benchTopicCheck-1 {
			continue
		}
		start := time.Now()
		need, err := h.s.NeedsTopicTrim(h.now)
		if err != nil {
			b.Fatal(err)
		}
		checkTime += time.Since(start)
		if need {
			start = time.Now()
			r, _, _ := benchApply(b, h, trim)
			trimTime += time.Since(start)
			trimmed += r.Topic.Trimmed
			trims++
		}
	}
	b.StopTimer()
	part := benchPartition(b, h)
	// At steady state the log holds one retention period plus the head
	// and one segment's slack; a run past the prefill must have trimmed.
	if b.N >= benchTopicPrefill && (trimmed == 0 || part.Messages > int64((benchTopicPrefill+200)*benchTopicEntries)) {
		b.Fatalf("%d segments trimmed, %d messages retained", trimmed, part.Messages)
	}
	b.ReportMetric(float64(part.Messages), "retained")
	b.ReportMetric(float64(checkTime.Nanoseconds())/float64(b.N), "checkns/op")
	if trims > 0 {
		b.ReportMetric(float64(trimTime.Nanoseconds())/float64(trims), "ns/trim")
	}
}

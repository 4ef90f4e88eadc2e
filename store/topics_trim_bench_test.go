package store

import (
	"strings"
	"testing"
	"time"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Retention must not slow appends (issue 20: "never blocking appends, at
// full rate"). Both benchmarks publish the same batches (10 entries of
// 256 bytes per op) to a topic with the minimum retention (1 minute)
// while the clock runs 20 ms per op, after the same prefill of one
// retention period (3,000 ops). BenchmarkPublishWhileTrimming also does
// what the leader's housekeeping does: every 10 ops it asks NeedsTopicTrim
// and, when due, applies TrimTopics (limit 100), which drops a segment of
// 1,000 messages every 100 ops at steady state. ns/op of the two is the
// cost of one publish with and without trimming amortised over it;
// trimns/op is the part of it spent checking and trimming:
//
//	go test -run '^$' -bench 'BenchmarkPublish(WhileTrimming)?$' -benchtime 6000x -count 3 ./store/

const (
	benchTopicStepMs  = 20
	benchTopicEntries = 10
	benchTopicPrefill = int(MinTopicRetentionMs / benchTopicStepMs)
)

var benchTopicBody = strings.Repeat("x", 256)

// benchTopic creates topic "tp" (one partition) on the harness shard and
// fills it for one retention period; it returns the publish command.
func benchTopic(b *testing.B) (*harness, *storepb.Command) {
	h := benchHarness(b)
	rec := &storepb.TopicRecord{Tenant: "t", Name: "tp", Partitions: 1, RetentionMs: MinTopicRetentionMs, MaxMessageSize: 1024}
	if r := h.apply(&storepb.Command{Op: &storepb.Command_CreateTopic{CreateTopic: &storepb.CreateTopic{Topic: rec}}}); r.Err != nil {
		b.Fatal(r.Err)
	}
	rec, err := h.s.GetTopic("t", "tp")
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
	trimmed := 0
	var trimTime time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		benchPublish(b, h, pub)
		if i%10 != 9 {
			continue
		}
		start := time.Now()
		need, err := h.s.NeedsTopicTrim(h.now)
		if err != nil {
			b.Fatal(err)
		}
		if need {
			r, _, _ := benchApply(b, h, trim)
			trimmed += r.Topic.Trimmed
		}
		trimTime += time.Since(start)
	}
	b.StopTimer()
	part := benchPartition(b, h)
	// At steady state the log holds one retention period plus the head
	// and one segment's slack; a run past the prefill must have trimmed.
	if b.N >= benchTopicPrefill && (trimmed == 0 || part.Messages > int64((benchTopicPrefill+200)*benchTopicEntries)) {
		b.Fatalf("%d segments trimmed, %d messages retained", trimmed, part.Messages)
	}
	b.ReportMetric(float64(part.Messages), "retained")
	b.ReportMetric(float64(trimmed)/float64(b.N), "trims/op")
	b.ReportMetric(float64(trimTime.Nanoseconds())/float64(b.N), "trimns/op")
}

package store

import (
	"encoding/base64"
	"math/rand/v2"
	"testing"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// TestTopicTrimFreesDisk: retention's range deletes give the space back
// in Pebble. A topic with 1 minute retention is published to for four
// retention periods under a clock running 100 ms per publish, with a trim
// every 10 publishes as the leader's housekeeping does; after each period
// a full compaction (what Pebble does in time on its own) leaves the
// sstables no larger than the first period's plus a segment's slack,
// though four times as much was written; once the clock passes the
// retention with no more publishes, the log is dropped and the sstables
// shrink to a small fraction.
func TestTopicTrimFreesDisk(t *testing.T) {
	const stepMs, perPeriod = 100, int(MinTopicRetentionMs / 100)
	h := newHarness(t)
	h.now = 1_000_000
	rec := &storepb.TopicRecord{Tenant: "t", Name: "tp", Partitions: 1, RetentionMs: MinTopicRetentionMs, MaxMessageSize: 1024}
	if r := h.apply(&storepb.Command{Op: &storepb.Command_CreateTopic{CreateTopic: &storepb.CreateTopic{Topic: rec}}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	rec, err := h.s.GetTopic("t", "tp")
	if err != nil {
		t.Fatal(err)
	}
	if r := h.apply(&storepb.Command{Op: &storepb.Command_PutTopicPartition{PutTopicPartition: &storepb.PutTopicPartition{Topic: rec}}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	// Bodies that do not compress, so that the sstables' size follows
	// the retained bytes.
	rng := rand.New(rand.NewPCG(1, 2))
	raw := make([]byte, 192)
	pub := func() *storepb.Command {
		es := make([]*storepb.PublishEntry, benchTopicEntries)
		for i := range es {
			for j := range raw {
				raw[j] = byte(rng.Uint32())
			}
			es[i] = &storepb.PublishEntry{Body: base64.StdEncoding.EncodeToString(raw)}
		}
		return &storepb.Command{Op: &storepb.Command_Publish{Publish: &storepb.Publish{Tenant: "t", Topic: "tp", Incarnation: rec.CreatedAtMs, Entries: es}}}
	}
	trim := &storepb.Command{Op: &storepb.Command_TrimTopics{TrimTopics: &storepb.TrimTopics{Limit: 100}}}
	trimmed := 0
	trimIfDue := func() {
		need, err := h.s.NeedsTopicTrim(h.now)
		if err != nil {
			t.Fatal(err)
		}
		if need {
			trimmed += h.apply(trim).Topic.Trimmed
		}
	}
	tables := func() int64 {
		if err := h.db.Compact(t.Context(), []byte{0}, []byte{0xff}, false); err != nil {
			t.Fatal(err)
		}
		var n int64
		m := h.db.Metrics()
		for _, l := range m.Levels {
			n += l.TablesSize
		}
		return n
	}
	var first int64
	for period := range 4 {
		for i := range perPeriod {
			h.now += stepMs
			if r := h.apply(pub()); r.Err != nil || r.Topic.Published[0].Err != nil {
				t.Fatalf("publish: %v %v", r.Err, r.Topic)
			}
			if i%10 == 9 {
				trimIfDue()
			}
		}
		size := tables()
		parts, err := h.s.TopicPartitions()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("period %d: %d messages retained (%d bytes), sstables %d bytes, %d trimmed", period, parts[0].Messages, parts[0].Bytes, size, trimmed)
		if period == 0 {
			first = size
			continue
		}
		// One period plus a segment (1,000 messages of 256 bytes) and slack.
		if size > first+first/3 {
			t.Fatalf("period %d: sstables %d bytes, first period %d: the trimmed log still takes disk", period, size, first)
		}
	}
	h.now += MinTopicRetentionMs + 1
	for range 10 {
		trimIfDue()
	}
	parts, err := h.s.TopicPartitions()
	if err != nil {
		t.Fatal(err)
	}
	if size := tables(); parts[0].Messages != 0 || size > first/10 {
		t.Fatalf("after the retention with no publishes: %d messages, sstables %d bytes (first period %d)", parts[0].Messages, size, first)
	}
}

package keys

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

// TestTopicKeyOrder: topic kinds sort after the outbox and before the end
// of the shard's state; inside a partition log, offsets in numeric order;
// expiry order by time; tenants and names kept apart.
func TestTopicKeyOrder(t *testing.T) {
	const s = 7
	ordered := []struct {
		name string
		key  []byte
	}{
		{"delivered order", DeliveredOrder(s, 2, 0, 0)},
		{"topic a/x", Topic(s, "a", "x")},
		{"topic a/xy", Topic(s, "a", "xy")},
		{"topic ab/a", Topic(s, "ab", "a")},
		{"part a/x/0", TopicPartition(s, "a", "x", 0)},
		{"part a/x/1", TopicPartition(s, "a", "x", 1)},
		{"part a/x/256", TopicPartition(s, "a", "x", 256)},
		{"part a/xy/0", TopicPartition(s, "a", "xy", 0)},
		{"msg 1/0", TopicMessage(s, 1, 0)},
		{"msg 1/1", TopicMessage(s, 1, 1)},
		{"msg 1/256", TopicMessage(s, 1, 256)},
		{"msg 1/max", TopicMessage(s, 1, math.MaxInt64)},
		{"msg 2/0", TopicMessage(s, 2, 0)},
		{"seg 1/0", TopicSegment(s, 1, 0)},
		{"seg 1/1000", TopicSegment(s, 1, 1000)},
		{"group 1/a", TopicGroup(s, 1, "a")},
		{"group 1/ab", TopicGroup(s, 1, "ab")},
		{"dedup 1/k", TopicDedup(s, 1, "k")},
		{"dedupexp 1/-1", TopicDedupOrder(s, 1, -1, "z")},
		{"dedupexp 1/5/a", TopicDedupOrder(s, 1, 5, "a")},
		{"dedupexp 1/5/b", TopicDedupOrder(s, 1, 5, "b")},
		{"topic meta", TopicMeta(s)},
		{"state end", StateEnd(s)},
	}
	for i := 1; i < len(ordered); i++ {
		a, b := ordered[i-1], ordered[i]
		if bytes.Compare(a.key, b.key) >= 0 {
			t.Errorf("%s (%s) must sort before %s (%s)", a.name, Pretty(a.key), b.name, Pretty(b.key))
		}
	}
	for _, r := range TopicPartitionRanges(s, 1) {
		if bytes.Compare(TopicMessage(s, 2, 0), r[0]) >= 0 && bytes.Compare(TopicMessage(s, 2, 0), r[1]) < 0 {
			t.Errorf("partition 1's range [%s, %s) holds partition 2's message", Pretty(r[0]), Pretty(r[1]))
		}
	}
	msgs := TopicPartitionRanges(s, 1)[0]
	if bytes.Compare(TopicMessage(s, 1, math.MaxInt64), msgs[1]) >= 0 || bytes.Compare(TopicMessage(s, 1, 0), msgs[0]) < 0 {
		t.Errorf("partition 1's message range misses its messages")
	}
}

// TestTopicKeyRoundTrip decodes every topic kind, rejects trailing bytes
// and another kind, and renders each with Pretty.
func TestTopicKeyRoundTrip(t *testing.T) {
	const s = 3
	if _, tn, n, err := DecodeTopic(Topic(s, "t", "orders")); err != nil || tn != "t" || n != "orders" {
		t.Fatalf("topic: %q %q %v", tn, n, err)
	}
	if _, tn, n, p, err := DecodeTopicPartition(TopicPartition(s, "t", "o", 63)); err != nil || tn != "t" || n != "o" || p != 63 {
		t.Fatalf("partition: %q %q %d %v", tn, n, p, err)
	}
	if _, pid, off, err := DecodeTopicMessage(TopicMessage(s, 9, 12345)); err != nil || pid != 9 || off != 12345 {
		t.Fatalf("message: %d %d %v", pid, off, err)
	}
	if _, pid, off, err := DecodeTopicSegment(TopicSegment(s, 9, 7)); err != nil || pid != 9 || off != 7 {
		t.Fatalf("segment: %d %d %v", pid, off, err)
	}
	if _, pid, g, err := DecodeTopicGroup(TopicGroup(s, 9, "g1")); err != nil || pid != 9 || g != "g1" {
		t.Fatalf("group: %d %q %v", pid, g, err)
	}
	if _, pid, at, k, err := DecodeTopicDedupOrder(TopicDedupOrder(s, 9, -4, "k")); err != nil || pid != 9 || at != -4 || k != "k" {
		t.Fatalf("dedup order: %d %d %q %v", pid, at, k, err)
	}
	if _, _, _, err := DecodeTopicMessage(append(TopicMessage(s, 1, 1), 0)); err == nil {
		t.Error("trailing byte accepted")
	}
	if _, _, _, err := DecodeTopicMessage(TopicSegment(s, 1, 1)); err == nil {
		t.Error("segment key decoded as a message")
	}
	for _, c := range []struct {
		key  []byte
		want string
	}{
		{Topic(s, "t", "o"), `/topic/"t"/"o"`},
		{TopicPartition(s, "t", "o", 2), `/topicpart/"t"/"o"/2`},
		{TopicMessage(s, 4, 10), "/tp/4/m/10"},
		{TopicSegment(s, 4, 10), "/tp/4/seg/10"},
		{TopicGroup(s, 4, "g"), `/tp/4/group/"g"`},
		{TopicDedup(s, 4, "k"), `/tp/4/dedup/"k"`},
		{TopicDedupOrder(s, 4, 5, "k"), `/tp/4/dedupexp/5/"k"`},
		{TopicMeta(s), "/topicmeta"},
	} {
		if got := Pretty(c.key); !strings.HasSuffix(got, c.want) {
			t.Errorf("Pretty = %s, want suffix %s", got, c.want)
		}
	}
}

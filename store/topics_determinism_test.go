package store

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// TestTopicDeterministicReplay applies a random log of topic commands
// (creates and re-creates, partition puts of any revision, publishes with
// keys, tags and idempotency keys, fan-out deliveries, group seeks and
// commits, retention with clocks jumping) to replicas in apply rounds of
// different sizes: every outcome and every key and value agree, and each
// partition log is consistent (offsets consecutive from start to end,
// counters and segments matching the messages).
func TestTopicDeterministicReplay(t *testing.T) {
	const shard = 2
	db := openMem(t)
	s := New(db, shard)
	rng := rand.New(rand.NewPCG(7, 11))
	now := int64(1_000_000)
	var log [][]byte
	var want []string
	apply := func(cmd *storepb.Command) *Result {
		cmd.Version, cmd.TimeMs = CommandVersion, now
		data, err := proto.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		b := db.NewIndexedBatch()
		r, err := s.Apply(b, uint64(len(log)+1), data)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		log = append(log, data)
		want = append(want, topicSummary(r.(*Result)))
		return r.(*Result)
	}
	for _, q := range []string{"q1", "q2"} {
		apply(&storepb.Command{Op: &storepb.Command_CreateQueue{CreateQueue: &storepb.CreateQueue{Tenant: "t", Name: q,
			Attributes: DefaultAttributes(), HandleKey: make([]byte, 32)}}})
	}
	topics := []string{"a", "b"}
	rec := func(name string) *storepb.TopicRecord {
		r, err := s.GetTopic("t", name)
		if err != nil {
			return &storepb.TopicRecord{Tenant: "t", Name: name, Partitions: 2, RetentionMs: MinTopicRetentionMs, MaxMessageSize: 2048, CreatedAtMs: 1, Revision: 1}
		}
		return r
	}
	published, trimmed, delivered := 0, 0, 0
	for range 3000 {
		name := topics[rng.IntN(len(topics))]
		p := int32(rng.IntN(2))
		switch now += int64(rng.IntN(300)); rng.IntN(40) {
		case 0:
			apply(&storepb.Command{Op: &storepb.Command_CreateTopic{CreateTopic: &storepb.CreateTopic{Topic: &storepb.TopicRecord{
				Tenant: "t", Name: name, Partitions: 2, RetentionMs: MinTopicRetentionMs * int64(1+rng.IntN(3)),
				RetentionBytes: int64(rng.IntN(2) * 30_000), MaxMessageSize: 2048}}}})
		case 1:
			apply(&storepb.Command{Op: &storepb.Command_ChangeTopic{ChangeTopic: &storepb.ChangeTopic{Tenant: "t", Name: name, Delete: true}}})
		case 2, 3:
			sub := &storepb.TopicSubscription{Queue: []string{"q1", "q2", "gone"}[rng.IntN(3)]}
			if rng.IntN(2) == 0 {
				sub.Filter = &storepb.TagFilter{All: []string{"x"}}
			}
			apply(&storepb.Command{Op: &storepb.Command_ChangeTopic{ChangeTopic: &storepb.ChangeTopic{Tenant: "t", Name: name, Subscribe: sub}}})
		case 4:
			apply(&storepb.Command{Op: &storepb.Command_ChangeTopic{ChangeTopic: &storepb.ChangeTopic{Tenant: "t", Name: name, Unsubscribe: "q1"}}})
		case 5, 6, 7:
			r := rec(name)
			if rng.IntN(3) == 0 {
				r = proto.Clone(r).(*storepb.TopicRecord)
				r.Revision = max(r.Revision-1, 0)
			}
			apply(&storepb.Command{Op: &storepb.Command_PutTopicPartition{PutTopicPartition: &storepb.PutTopicPartition{Topic: r, Partition: p}}})
		case 8:
			now += int64(rng.IntN(200_000)) // retention comes due
		case 9, 10:
			trimmed += apply(&storepb.Command{Op: &storepb.Command_TrimTopics{TrimTopics: &storepb.TrimTopics{Limit: int32(1 + rng.IntN(5))}}}).Topic.Trimmed
		case 11, 12:
			es, err := s.PendingOutbox(20)
			if err != nil {
				t.Fatal(err)
			}
			if len(es) == 0 {
				continue
			}
			r := apply(&storepb.Command{Op: &storepb.Command_DeliverOutbox{DeliverOutbox: &storepb.DeliverOutbox{Entries: es}}})
			ack := &storepb.AckOutbox{}
			for i, e := range es {
				if r.Entries[i] == nil {
					delivered++
					ack.Ids = append(ack.Ids, e.Id)
				} else {
					ack.ReturnIds = append(ack.ReturnIds, e.Id)
				}
			}
			if rng.IntN(4) > 0 { // sometimes the ack is lost and the delivery repeats
				apply(&storepb.Command{Op: &storepb.Command_AckOutbox{AckOutbox: ack}})
			}
		case 13, 14:
			apply(&storepb.Command{Op: &storepb.Command_SeekTopicGroup{SeekTopicGroup: &storepb.SeekTopicGroup{Tenant: "t", Topic: name, Partition: p,
				Group: []string{"g", "h"}[rng.IntN(2)], Start: int32(1 + rng.IntN(4)), TimeMs: now - int64(rng.IntN(100_000)),
				Offset: int64(rng.IntN(500)), CreateOnly: rng.IntN(2) == 0}}})
		case 15:
			apply(&storepb.Command{Op: &storepb.Command_CommitTopicOffset{CommitTopicOffset: &storepb.CommitTopicOffset{Tenant: "t", Topic: name,
				Partition: p, Group: "g", Offset: int64(rng.IntN(600))}}})
		case 16:
			now -= int64(rng.IntN(5_000)) // a lagging leader's stamp
		default:
			var es []*storepb.PublishEntry
			for range 1 + rng.IntN(8) {
				e := &storepb.PublishEntry{Body: strings.Repeat("b", rng.IntN(300)), PartitionKey: fmt.Sprint(rng.IntN(3))}
				if rng.IntN(2) == 0 {
					e.Tags = []string{"x"}
				}
				if rng.IntN(4) == 0 {
					e.IdempotencyKey = fmt.Sprint("k", rng.IntN(50))
				}
				if rng.IntN(50) == 0 {
					e.Body = strings.Repeat("B", 3000) // too large
				}
				es = append(es, e)
			}
			r := apply(&storepb.Command{Op: &storepb.Command_Publish{Publish: &storepb.Publish{Tenant: "t", Topic: name, Partition: p,
				Incarnation: rec(name).CreatedAtMs, Entries: es}}})
			if r.Topic != nil {
				published += len(r.Topic.Published)
			}
		}
	}
	checkTopicLogs(t, s, db)
	wantState := dumpState(t, db, shard)
	if published < 1000 || trimmed < 20 || delivered < 100 {
		t.Fatalf("%d entries published, %d segments and records trimmed, %d copies delivered: too little coverage", published, trimmed, delivered)
	}
	for replica := range 2 {
		rdb := openMem(t)
		rs := New(rdb, shard)
		rr := rand.New(rand.NewPCG(uint64(replica), 5))
		for i := 0; i < len(log); {
			n := min(1+rr.IntN(20), len(log)-i)
			b := rdb.NewIndexedBatch()
			for j := i; j < i+n; j++ {
				r, err := rs.Apply(b, uint64(j+1), log[j])
				if err != nil {
					t.Fatal(err)
				}
				if got := topicSummary(r.(*Result)); got != want[j] {
					t.Fatalf("replica %d entry %d: %s, want %s", replica, j, got, want[j])
				}
			}
			if err := b.Commit(pebble.NoSync); err != nil {
				t.Fatal(err)
			}
			i += n
		}
		state := dumpState(t, rdb, shard)
		if strings.Join(state, "\n") != strings.Join(wantState, "\n") {
			t.Fatalf("replica %d: state differs (%d keys, want %d)", replica, len(state), len(wantState))
		}
	}
	t.Logf("%d commands, %d entries published, %d trimmed, %d copies delivered, %d state keys", len(log), published, trimmed, delivered, len(wantState))
}

func topicSummary(r *Result) string {
	s := summarize(r)
	if tr := r.Topic; tr != nil {
		s += fmt.Sprintf("|t:%v/%s/%d/%d/%d/%v", tr.Topic, tr.Name, tr.Partition, tr.GroupOffset, tr.Trimmed, tr.Appended)
		for _, o := range tr.Published {
			s += fmt.Sprintf("|p:%s/%d/%v/%v", o.MessageID, o.Offset, o.Duplicate, o.Err)
		}
	}
	return s
}

// checkTopicLogs checks every partition copy against its log: messages
// at consecutive offsets from start to end, counters that match them, and
// segment summaries that tile [start, end).
func checkTopicLogs(t *testing.T, s *Store, db *pebble.DB) {
	t.Helper()
	parts, err := s.reader(0).allPartitions()
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) == 0 {
		t.Fatal("no partition copies at the end: too little coverage")
	}
	for _, p := range parts {
		var n, bytes int64
		next := p.StartOffset
		if err := s.reader(0).walkLog(p, p.StartOffset, func(m *storepb.TopicMessageRecord) bool {
			if m.Offset != next {
				t.Fatalf("partition %d: offset %d where %d was due", p.Id, m.Offset, next)
			}
			next++
			n++
			bytes += m.Size
			return false
		}); err != nil {
			t.Fatal(err)
		}
		if next != p.EndOffset || n != p.Messages || bytes != p.Bytes {
			t.Fatalf("partition %d: log [%d,%d) %d messages %d bytes; record %v", p.Id, p.StartOffset, next, n, bytes, p)
		}
		pre := keys.TopicSegmentPrefix(s.shard, p.Id)
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: pre, UpperBound: keys.PrefixEnd(pre)})
		if err != nil {
			t.Fatal(err)
		}
		at := p.StartOffset
		for ok := it.First(); ok; ok = it.Next() {
			seg := &storepb.TopicSegment{}
			if err := proto.Unmarshal(it.Value(), seg); err != nil {
				t.Fatal(err)
			}
			if seg.FirstOffset != at && !(at == p.StartOffset && seg.FirstOffset < at) {
				t.Fatalf("partition %d: segment at %d where %d was due", p.Id, seg.FirstOffset, at)
			}
			at = seg.EndOffset
		}
		_ = it.Close()
		if at != p.EndOffset && !(p.Head.FirstOffset == p.Head.EndOffset && at == p.Head.FirstOffset) {
			t.Fatalf("partition %d: segments end at %d, log at %d", p.Id, at, p.EndOffset)
		}
	}
}

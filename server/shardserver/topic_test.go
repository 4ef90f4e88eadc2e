package shardserver_test

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

func topicClient(t *testing.T, addr string) qv1.TopicServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return qv1.NewTopicServiceClient(conn)
}

// drainQueue receives (and deletes) until the queue has held `want`
// messages in all, then checks that nothing more arrives; it returns the
// messages in receive order.
func drainQueue(t *testing.T, c qv1.QueueServiceClient, queue string, want int) []*qv1.ReceivedMessage {
	t.Helper()
	var got []*qv1.ReceivedMessage
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		r, err := c.ReceiveMessages(tctx(t), &qv1.ReceiveMessagesRequest{Queue: queue, MaxMessages: 10, VisibilityTimeout: durationpb.New(time.Hour)})
		if err != nil {
			return err
		}
		for _, m := range r.GetMessages() {
			got = append(got, m)
			if _, err := c.DeleteMessage(tctx(t), &qv1.DeleteMessageRequest{Queue: queue, ReceiptHandle: m.GetReceiptHandle()}); err != nil {
				return err
			}
		}
		if len(got) < want {
			return fmt.Errorf("%s: %d of %d messages", queue, len(got), want)
		}
		return nil
	})
	// Nothing beyond: a duplicate copy would show here.
	r, err := c.ReceiveMessages(tctx(t), &qv1.ReceiveMessagesRequest{Queue: queue, MaxMessages: 10, WaitTime: durationpb.New(300 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != want || len(r.GetMessages()) != 0 {
		t.Fatalf("%s: %d messages and %d more, want exactly %d", queue, len(got), len(r.GetMessages()), want)
	}
	return got
}

// readAll reads a partition from offset `from` to its end.
func readAll(t *testing.T, tc qv1.TopicServiceClient, topic, group string, p int32, from int64) []*qv1.TopicMessage {
	t.Helper()
	var out []*qv1.TopicMessage
	for {
		r, err := tc.ReadTopic(tctx(t), &qv1.ReadTopicRequest{Topic: topic, Group: group, Partition: p, Offset: proto.Int64(from), MaxMessages: 7})
		if err != nil {
			t.Fatalf("read %s/%d from %d: %v", topic, p, from, err)
		}
		for i, m := range r.GetMessages() {
			if m.GetOffset() != from+int64(i) {
				t.Fatalf("partition %d: offset %d at position %d after %d: a gap", p, m.GetOffset(), i, from)
			}
		}
		out = append(out, r.GetMessages()...)
		if len(r.GetMessages()) == 0 {
			return out
		}
		from = r.GetNextOffset()
	}
}

// A topic with 4 partitions on 4 data shards fans every published message
// out exactly once into each subscribed queue that matches (a tag filter,
// a FIFO queue keeping each key's order) and lets a consumer group read
// every partition in order, commit, and replay from a time.
func TestTopicFanOutAndConsumerGroups(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Shards: partShards, Clock: clock.Now})
	tc := topicClient(t, n.GRPCAddr())
	createQueue(t, n, "all", nil)
	createQueue(t, n, "reds", nil)
	createQueue(t, n, "ord.fifo", &qv1.QueueAttributes{Fifo: true})
	created, err := tc.CreateTopic(tctx(t), &qv1.CreateTopicRequest{Name: "events", Attributes: &qv1.TopicAttributes{Partitions: 4}})
	if err != nil {
		t.Fatal(err)
	}
	if a := created.GetTopic().GetAttributes(); a.GetPartitions() != 4 || a.GetRetention().AsDuration() != 7*24*time.Hour || a.GetMaxMessageSize() != 1<<20 {
		t.Fatalf("created %v: want 4 partitions and the defaults", a)
	}
	again, err := tc.CreateTopic(tctx(t), &qv1.CreateTopicRequest{Name: "events", Attributes: &qv1.TopicAttributes{Partitions: 4}})
	if err != nil || !again.GetTopic().GetCreateTime().AsTime().Equal(created.GetTopic().GetCreateTime().AsTime()) {
		t.Fatalf("create again: %v %v", again, err)
	}
	_, err = tc.CreateTopic(tctx(t), &qv1.CreateTopicRequest{Name: "events", Attributes: &qv1.TopicAttributes{Partitions: 2}})
	wantReason(t, err, codes.AlreadyExists, server.ReasonTopicAlreadyExists)

	for _, s := range []*qv1.SubscribeRequest{
		{Topic: "events", Queue: "all"},
		{Topic: "events", Queue: "reds", TagFilter: &qv1.TagFilter{All: []string{"red"}}},
		{Topic: "events", Queue: "ord.fifo"},
	} {
		if _, err := tc.Subscribe(tctx(t), s); err != nil {
			t.Fatalf("subscribe %s: %v", s.GetQueue(), err)
		}
	}
	_, err = tc.Subscribe(tctx(t), &qv1.SubscribeRequest{Topic: "events", Queue: "nope"})
	wantReason(t, err, codes.NotFound, server.ReasonQueueNotFound)
	if _, err := tc.CreateGroup(tctx(t), &qv1.CreateGroupRequest{Topic: "events", Group: "g1"}); err != nil {
		t.Fatal(err)
	}

	// 40 messages over 5 keys, every other one red; batches and singles.
	const total = 40
	published := map[string]*qv1.PublishResponse{}
	keyOrder := map[string][]string{} // key -> bodies in publish order
	reds := 0
	for i := 0; i < total; i += 2 {
		var entries []*qv1.PublishBatchEntry
		for j := i; j < i+2; j++ {
			key := fmt.Sprintf("k%d", j%5)
			e := &qv1.PublishBatchEntry{Id: fmt.Sprintf("e%d", j), Body: fmt.Sprintf("m%02d", j), PartitionKey: key}
			if j%2 == 0 {
				e.Tags = []string{"red"}
				reds++
			}
			keyOrder[key] = append(keyOrder[key], e.Body)
			entries = append(entries, e)
		}
		if i%4 == 0 {
			r, err := tc.PublishBatch(tctx(t), &qv1.PublishBatchRequest{Topic: "events", Entries: entries})
			if err != nil || len(r.GetFailed()) != 0 || len(r.GetSuccessful()) != 2 {
				t.Fatalf("batch: %v %v", r, err)
			}
			for _, s := range r.GetSuccessful() {
				published[s.GetMessageId()] = &qv1.PublishResponse{MessageId: s.GetMessageId(), Partition: s.GetPartition(), Offset: s.GetOffset()}
			}
			continue
		}
		for _, e := range entries {
			r, err := tc.Publish(tctx(t), &qv1.PublishRequest{Topic: "events", Body: e.Body, Tags: e.Tags, PartitionKey: e.PartitionKey})
			if err != nil {
				t.Fatal(err)
			}
			published[r.GetMessageId()] = r
		}
	}
	if len(published) != total {
		t.Fatalf("%d distinct message ids for %d publishes", len(published), total)
	}
	// Exactly once into each queue, filtered where asked.
	for q, want := range map[string]int{"all": total, "reds": reds} {
		for _, m := range drainQueue(t, n.Client, q, want) {
			if published[m.GetMessageId()] == nil {
				t.Fatalf("%s got %s, never published", q, m.GetMessageId())
			}
			if q == "reds" && !slices.Contains(m.GetTags(), "red") {
				t.Fatalf("reds got %v", m)
			}
		}
	}
	// The FIFO queue keeps each key's publish order (the key is the group).
	fifo := drainQueue(t, n.Client, "ord.fifo", total)
	gotOrder := map[string][]string{}
	for _, m := range fifo {
		gotOrder[m.GetGroupId()] = append(gotOrder[m.GetGroupId()], m.GetBody())
	}
	for k, want := range keyOrder {
		if !slices.Equal(gotOrder[k], want) {
			t.Fatalf("FIFO group %s: %v, want %v", k, gotOrder[k], want)
		}
	}

	// The group reads every message once, in offset order per partition.
	seen := 0
	var commits []*qv1.PartitionOffset
	for p := int32(0); p < 4; p++ {
		g, err := tc.GetGroup(tctx(t), &qv1.GetGroupRequest{Topic: "events", Group: "g1"})
		if err != nil {
			t.Fatal(err)
		}
		from := g.GetGroup().GetPartitions()[p].GetCommittedOffset()
		msgs := readAll(t, tc, "events", "g1", p, from)
		for _, m := range msgs {
			pr := published[m.GetMessageId()]
			if pr == nil || pr.GetPartition() != p || pr.GetOffset() != m.GetOffset() {
				t.Fatalf("partition %d offset %d: %v, published as %v", p, m.GetOffset(), m, pr)
			}
		}
		seen += len(msgs)
		commits = append(commits, &qv1.PartitionOffset{Partition: p, Offset: from + int64(len(msgs))})
	}
	if seen != total {
		t.Fatalf("group read %d messages, want %d", seen, total)
	}
	if _, err := tc.CommitOffsets(tctx(t), &qv1.CommitOffsetsRequest{Topic: "events", Group: "g1", Offsets: commits}); err != nil {
		t.Fatal(err)
	}
	g, err := tc.GetGroup(tctx(t), &qv1.GetGroupRequest{Topic: "events", Group: "g1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, gp := range g.GetGroup().GetPartitions() {
		if gp.GetLag() != 0 {
			t.Fatalf("after commit: %v", g.GetGroup())
		}
	}
	// A read without an offset starts at the committed one: nothing left.
	r, err := tc.ReadTopic(tctx(t), &qv1.ReadTopicRequest{Topic: "events", Group: "g1", Partition: 0})
	if err != nil || len(r.GetMessages()) != 0 {
		t.Fatalf("read at the committed offset: %v %v", r, err)
	}

	// Replay: a reset to a time re-reads exactly what was published since.
	clock.Advance(time.Minute)
	since := clock.Now()
	clock.Advance(time.Second)
	later := map[string]bool{}
	for i := range 10 {
		r, err := tc.Publish(tctx(t), &qv1.PublishRequest{Topic: "events", Body: fmt.Sprintf("late%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		later[r.GetMessageId()] = true
	}
	if _, err := tc.ResetGroup(tctx(t), &qv1.ResetGroupRequest{Topic: "events", Group: "g1", Start: qv1.GroupStart_GROUP_START_TIME,
		Time: timestamppb.New(since)}); err != nil {
		t.Fatal(err)
	}
	replayed := map[string]bool{}
	for p := int32(0); p < 4; p++ {
		from := int64(0)
		g, err := tc.GetGroup(tctx(t), &qv1.GetGroupRequest{Topic: "events", Group: "g1"})
		if err != nil {
			t.Fatal(err)
		}
		from = g.GetGroup().GetPartitions()[p].GetCommittedOffset()
		for _, m := range readAll(t, tc, "events", "g1", p, from) {
			replayed[m.GetMessageId()] = true
		}
	}
	if len(replayed) != len(later) {
		t.Fatalf("replayed %d messages, want the %d published since the reset time", len(replayed), len(later))
	}
	for id := range later {
		if !replayed[id] {
			t.Fatalf("%s published after the reset time was not replayed", id)
		}
	}
}

// ReadTopic long-polls: a read waiting at the end of a partition returns
// the message published while it waits.
func TestTopicReadLongPoll(t *testing.T) {
	n := startNode(t, nodeOpts{Shards: partShards})
	tc := topicClient(t, n.GRPCAddr())
	if _, err := tc.CreateTopic(tctx(t), &qv1.CreateTopicRequest{Name: "lp"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.CreateGroup(tctx(t), &qv1.CreateGroupRequest{Topic: "lp", Group: "g", Start: qv1.GroupStart_GROUP_START_LATEST}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var got *qv1.ReadTopicResponse
	var rerr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		got, rerr = tc.ReadTopic(tctx(t), &qv1.ReadTopicRequest{Topic: "lp", Group: "g", WaitTime: durationpb.New(20 * time.Second)})
	}()
	if _, err := tc.Publish(tctx(t), &qv1.PublishRequest{Topic: "lp", Body: "hello"}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if rerr != nil || len(got.GetMessages()) != 1 || got.GetMessages()[0].GetBody() != "hello" {
		t.Fatalf("long poll: %v %v", got, rerr)
	}
}

// Errors a client can act on: a missing topic or group, an offset outside
// the log, bad input.
func TestTopicErrors(t *testing.T) {
	n := startNode(t, nodeOpts{Shards: partShards})
	tc := topicClient(t, n.GRPCAddr())
	_, err := tc.Publish(tctx(t), &qv1.PublishRequest{Topic: "missing", Body: "x"})
	wantReason(t, err, codes.NotFound, server.ReasonTopicNotFound)
	_, err = tc.CreateTopic(tctx(t), &qv1.CreateTopicRequest{Name: "t", Attributes: &qv1.TopicAttributes{Retention: durationpb.New(15 * 24 * time.Hour)}})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	if _, err := tc.CreateTopic(tctx(t), &qv1.CreateTopicRequest{Name: "t", Attributes: &qv1.TopicAttributes{MaxMessageSize: 1024}}); err != nil {
		t.Fatal(err)
	}
	_, err = tc.Publish(tctx(t), &qv1.PublishRequest{Topic: "t", Body: strings.Repeat("x", 2000)})
	wantReason(t, err, codes.InvalidArgument, server.ReasonMessageTooLarge)
	_, err = tc.GetGroup(tctx(t), &qv1.GetGroupRequest{Topic: "t", Group: "none"})
	wantReason(t, err, codes.NotFound, server.ReasonGroupNotFound)
	_, err = tc.ReadTopic(tctx(t), &qv1.ReadTopicRequest{Topic: "t", Group: "none"})
	wantReason(t, err, codes.NotFound, server.ReasonGroupNotFound)
	if _, err := tc.CreateGroup(tctx(t), &qv1.CreateGroupRequest{Topic: "t", Group: "g"}); err != nil {
		t.Fatal(err)
	}
	_, err = tc.ReadTopic(tctx(t), &qv1.ReadTopicRequest{Topic: "t", Group: "g", Offset: proto.Int64(5)})
	wantReason(t, err, codes.FailedPrecondition, server.ReasonOffsetOutOfRange)
	_, err = tc.ReadTopic(tctx(t), &qv1.ReadTopicRequest{Topic: "t", Group: "g", Partition: 1})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	// Idempotent publish: a retry returns the first outcome.
	a, err := tc.Publish(tctx(t), &qv1.PublishRequest{Topic: "t", Body: "once", IdempotencyKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := tc.Publish(tctx(t), &qv1.PublishRequest{Topic: "t", Body: "once", IdempotencyKey: "k"})
	if err != nil || b.GetMessageId() != a.GetMessageId() || b.GetOffset() != a.GetOffset() {
		t.Fatalf("retry: %v %v, first %v", b, err, a)
	}
	// Deleted and created again: a new, empty log.
	if _, err := tc.DeleteTopic(tctx(t), &qv1.DeleteTopicRequest{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	_, err = tc.GetTopic(tctx(t), &qv1.GetTopicRequest{Name: "t"})
	wantReason(t, err, codes.NotFound, server.ReasonTopicNotFound)
	if _, err := tc.CreateTopic(tctx(t), &qv1.CreateTopicRequest{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	got, err := tc.GetTopic(tctx(t), &qv1.GetTopicRequest{Name: "t"})
	if err != nil || got.GetTopic().GetPartitions()[0].GetEndOffset() != 0 {
		t.Fatalf("re-created topic: %v %v", got, err)
	}
	l, err := tc.ListTopics(tctx(t), &qv1.ListTopicsRequest{})
	if err != nil || len(l.GetTopics()) != 1 || l.GetTopics()[0].GetName() != "t" {
		t.Fatalf("list: %v %v", l, err)
	}
}

// Retention drops old segments in bulk while publishing goes on: the
// retained start moves up, disk usage in GetTopic falls, a group whose
// offset fell below the start gets OFFSET_OUT_OF_RANGE and resets.
func TestTopicRetention(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Shards: partShards, Clock: clock.Now})
	tc := topicClient(t, n.GRPCAddr())
	if _, err := tc.CreateTopic(tctx(t), &qv1.CreateTopicRequest{Name: "r", Attributes: &qv1.TopicAttributes{Retention: durationpb.New(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.CreateGroup(tctx(t), &qv1.CreateGroupRequest{Topic: "r", Group: "g"}); err != nil {
		t.Fatal(err)
	}
	publish := func(n int, prefix string) {
		for i := 0; i < n; i += 100 {
			var es []*qv1.PublishBatchEntry
			for j := range 100 {
				es = append(es, &qv1.PublishBatchEntry{Id: fmt.Sprint(j), Body: fmt.Sprintf("%s-%05d", prefix, i+j)})
			}
			r, err := tc.PublishBatch(tctx(t), &qv1.PublishBatchRequest{Topic: "r", Entries: es})
			if err != nil || len(r.GetFailed()) > 0 {
				t.Fatalf("publish: %v %v", r, err)
			}
		}
	}
	publish(2500, "old")
	before, err := tc.GetTopic(tctx(t), &qv1.GetTopicRequest{Name: "r"})
	if err != nil || before.GetTopic().GetPartitions()[0].GetEndOffset() != 2500 {
		t.Fatalf("before: %v %v", before, err)
	}
	clock.Advance(61 * time.Second)
	publish(500, "new")
	var after *qv1.GetTopicResponse
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		after, err = tc.GetTopic(tctx(t), &qv1.GetTopicRequest{Name: "r"})
		if err != nil {
			return err
		}
		if p := after.GetTopic().GetPartitions()[0]; p.GetStartOffset() < 2500 {
			return fmt.Errorf("retained start %d", p.GetStartOffset())
		}
		return nil
	})
	p := after.GetTopic().GetPartitions()[0]
	if p.GetStartOffset() != 2500 || p.GetEndOffset() != 3000 || p.GetMessages() != 500 || after.GetTopic().GetBytes() >= before.GetTopic().GetBytes() {
		t.Fatalf("after retention: %v (bytes %d, before %d)", p, after.GetTopic().GetBytes(), before.GetTopic().GetBytes())
	}
	_, err = tc.ReadTopic(tctx(t), &qv1.ReadTopicRequest{Topic: "r", Group: "g"})
	wantReason(t, err, codes.FailedPrecondition, server.ReasonOffsetOutOfRange)
	if _, _, meta := reasonOf(err); meta["start"] != "2500" {
		t.Fatalf("out of range metadata %v, want start 2500", meta)
	}
	if _, err := tc.ResetGroup(tctx(t), &qv1.ResetGroupRequest{Topic: "r", Group: "g"}); err != nil {
		t.Fatal(err)
	}
	r, err := tc.ReadTopic(tctx(t), &qv1.ReadTopicRequest{Topic: "r", Group: "g", MaxMessages: 1})
	if err != nil || len(r.GetMessages()) != 1 || r.GetMessages()[0].GetBody() != "new-00000" {
		t.Fatalf("after reset: %v %v", r, err)
	}
}

// The REST paths of API.md: create, publish, get.
func TestTopicREST(t *testing.T) {
	n := startNode(t, nodeOpts{})
	post := func(path, body string) (int, string) {
		resp, err := http.Post(n.Base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("/v1/topics", `{"name":"rt","attributes":{"partitions":2,"retention":"3600s"}}`); code != 200 || !strings.Contains(body, `"rt"`) {
		t.Fatalf("create: %d %s", code, body)
	}
	if code, body := post("/v1/topics/rt:publish", `{"body":"hi","partitionKey":"a"}`); code != 200 || !strings.Contains(body, `"messageId"`) || !strings.Contains(body, `"offset"`) {
		t.Fatalf("publish: %d %s", code, body)
	}
	if code, body := post("/v1/topics/nope:publish", `{"body":"hi"}`); code != 404 || !strings.Contains(body, "TOPIC_NOT_FOUND") {
		t.Fatalf("publish to a missing topic: %d %s", code, body)
	}
	resp, err := http.Get(n.Base + "/v1/topics/rt")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(strings.ReplaceAll(string(b), " ", ""), `"endOffset":"1"`) {
		t.Fatalf("get: %d %s", resp.StatusCode, b)
	}
}

// A deleted subscribed queue unsubscribes: its copies are refused, and
// the relay removes the subscription from the topic.
func TestTopicDeletedQueueUnsubscribes(t *testing.T) {
	n := startNode(t, nodeOpts{Shards: partShards})
	tc := topicClient(t, n.GRPCAddr())
	createQueue(t, n, "gone", nil)
	createQueue(t, n, "stays", nil)
	if _, err := tc.CreateTopic(tctx(t), &qv1.CreateTopicRequest{Name: "d", Attributes: &qv1.TopicAttributes{Partitions: 2}}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"gone", "stays"} {
		if _, err := tc.Subscribe(tctx(t), &qv1.SubscribeRequest{Topic: "d", Queue: q}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.Client.DeleteQueue(tctx(t), &qv1.DeleteQueueRequest{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if _, err := tc.Publish(tctx(t), &qv1.PublishRequest{Topic: "d", Body: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		got, err := tc.GetTopic(tctx(t), &qv1.GetTopicRequest{Name: "d"})
		if err != nil {
			return err
		}
		if subs := got.GetTopic().GetSubscriptions(); len(subs) != 1 || subs[0].GetQueue() != "stays" {
			return fmt.Errorf("subscriptions %v", subs)
		}
		return nil
	})
	drainQueue(t, n.Client, "stays", 4)
}

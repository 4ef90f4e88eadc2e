package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// topicWork is the topic part of a workload: a publisher, a consumer of
// the subscribed queues and one reader per partition of each group.
type topicWork struct {
	name       string
	partitions int32
	groups     []string
	subs       []topicSub
	h          *topicHistory
}

func newTopicWork(shards int) *topicWork {
	return &topicWork{name: "events", partitions: int32(min(max(2, shards), 4)), groups: []string{"replay"},
		subs: []topicSub{{queue: "t-red", tag: "red"}, {queue: "t.fifo", fifo: true}}, h: newTopicHistory()}
}

func (w *workload) topics(rng *rand.Rand) (context.Context, context.CancelFunc, qv1.TopicServiceClient) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	return ctx, cancel, qv1.NewTopicServiceClient(w.c.nodes[w.pick(rng)].conn)
}

// retry calls f until it succeeds or 30 s pass (set-up before the faults).
func (w *workload) retry(what string, f func(context.Context, qv1.TopicServiceClient) error) error {
	rng := rand.New(rand.NewPCG(w.seed, 800))
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel, api := w.topics(rng)
		err := f(ctx, api)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %w", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createTopic makes the subscribed queues, the topic, its subscriptions
// and its groups (at the earliest offset).
func (w *workload) createTopic() error {
	tw := w.tw
	rng := rand.New(rand.NewPCG(w.seed, 801))
	for _, s := range tw.subs {
		a := &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(w.queueVis), Fifo: s.fifo}
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel, api := w.api(rng)
			_, err := api.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: s.queue, Attributes: a})
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("create queue %s: %w", s.queue, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err := w.retry("create topic", func(ctx context.Context, api qv1.TopicServiceClient) error {
		_, err := api.CreateTopic(ctx, &qv1.CreateTopicRequest{Name: tw.name, Attributes: &qv1.TopicAttributes{Partitions: tw.partitions}})
		return err
	}); err != nil {
		return err
	}
	for _, s := range tw.subs {
		var f *qv1.TagFilter
		if s.tag != "" {
			f = &qv1.TagFilter{All: []string{s.tag}}
		}
		if err := w.retry("subscribe "+s.queue, func(ctx context.Context, api qv1.TopicServiceClient) error {
			_, err := api.Subscribe(ctx, &qv1.SubscribeRequest{Topic: tw.name, Queue: s.queue, TagFilter: f})
			return err
		}); err != nil {
			return err
		}
	}
	for _, g := range tw.groups {
		if err := w.retry("create group "+g, func(ctx context.Context, api qv1.TopicServiceClient) error {
			_, err := api.CreateGroup(ctx, &qv1.CreateGroupRequest{Topic: tw.name, Group: g, Start: qv1.GroupStart_GROUP_START_EARLIEST})
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// startTopic runs the topic goroutines (under the workload's wait group).
func (w *workload) startTopic() {
	w.wg.Add(2)
	go w.publisher()
	go w.topicConsumer()
	for _, g := range w.tw.groups {
		for p := range w.tw.partitions {
			w.wg.Add(1)
			go w.groupReader(g, p)
		}
	}
}

var partitionKeys = []string{"", "k1", "k2", "k3", "k4", "k5"}

func (w *workload) publisher() {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(w.seed, 900))
	for n := 0; !w.stopped(); n++ {
		var es []*qv1.PublishBatchEntry
		for k := range 1 + rng.IntN(4) {
			body := fmt.Sprintf("s%d-t-%d-%d", w.seed, n, k)
			var tags []string
			if rng.IntN(2) == 0 {
				tags = append(tags, "red")
			}
			if rng.IntN(3) == 0 {
				tags = append(tags, "blue")
			}
			es = append(es, &qv1.PublishBatchEntry{Id: fmt.Sprint(k), Body: body, Tags: tags, IdempotencyKey: body,
				PartitionKey: partitionKeys[rng.IntN(len(partitionKeys))]})
		}
		w.publish(rng, es)
		w.sleep(time.Duration(30+rng.IntN(150)) * time.Millisecond)
	}
}

// publish publishes es, retrying entries whose outcome is unknown with the
// same idempotency keys (a retry answers the first message's id and offset).
func (w *workload) publish(rng *rand.Rand, es []*qv1.PublishBatchEntry) {
	h := w.tw.h
	for _, e := range es {
		h.invokePublish(e.Body, e.PartitionKey, e.Tags)
	}
	pending := es
	for try := 0; try < maxSendTries && len(pending) > 0; try++ {
		if try > 0 {
			time.Sleep(time.Duration(50*try+rng.IntN(100)) * time.Millisecond)
		}
		ctx, cancel, api := w.topics(rng)
		r, err := api.PublishBatch(ctx, &qv1.PublishBatchRequest{Topic: w.tw.name, Entries: pending})
		cancel()
		if err != nil {
			o, _ := classify(err)
			w.h.count("publish", o)
			for _, e := range pending {
				h.publishDone(e.Body, o, "", 0, 0)
			}
			if o == failed && !refused(err.Error()) {
				return
			}
			continue
		}
		byID := map[string]*qv1.PublishBatchEntry{}
		for _, e := range pending {
			byID[e.Id] = e
		}
		var again []*qv1.PublishBatchEntry
		for _, s := range r.GetSuccessful() {
			w.h.count("publish", ok)
			h.publishDone(byID[s.GetId()].Body, ok, s.GetMessageId(), s.GetPartition(), s.GetOffset())
		}
		for _, f := range r.GetFailed() {
			e := byID[f.GetId()]
			o := classifyCode(codeOf(f.GetCode()), f.GetMessage())
			w.h.count("publish", o)
			h.publishDone(e.Body, o, "", 0, 0)
			if o == unknown {
				again = append(again, e)
			}
		}
		pending = again
	}
}

// topicConsumer receives from the subscribed queues and mostly deletes;
// sometimes it lets the lease run out.
func (w *workload) topicConsumer() {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(w.seed, 901))
	for !w.stopped() {
		q := w.tw.subs[rng.IntN(len(w.tw.subs))].queue
		vis := time.Second + time.Duration(rng.IntN(2000))*time.Millisecond
		evs := w.receive(rng, q, int32(1+rng.IntN(8)), vis, time.Duration(rng.IntN(500))*time.Millisecond, false)
		if len(evs) == 0 {
			w.sleep(time.Duration(10+rng.IntN(40)) * time.Millisecond)
			continue
		}
		if rng.IntN(10) == 0 {
			continue // crashed consumer: the lease runs out
		}
		for _, e := range evs {
			w.settle(rng, e, false, 0)
		}
	}
}

// groupReader reads one partition for a group from its committed offset
// and commits after each read, except when it "crashes" before the
// commit (the next read starts again from the committed offset).
func (w *workload) groupReader(group string, p int32) {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(w.seed, uint64(1000+int(p))))
	for !w.stopped() {
		wait := time.Duration(rng.IntN(800)) * time.Millisecond
		if !w.readCommit(rng, group, p, int32(1+rng.IntN(30)), wait, rng.IntN(8) == 0) {
			w.sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)
		}
	}
}

// readCommit reads once and commits what it read (unless crash); it
// reports whether the read returned messages.
func (w *workload) readCommit(rng *rand.Rand, group string, p int32, max int32, wait time.Duration, crash bool) bool {
	k := partKey{group, p}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout+wait)
	api := qv1.NewTopicServiceClient(w.c.nodes[w.pick(rng)].conn)
	r, err := api.ReadTopic(ctx, &qv1.ReadTopicRequest{Topic: w.tw.name, Group: group, Partition: p, MaxMessages: max,
		WaitTime: durationpb.New(wait)})
	cancel()
	o, _ := classify(err)
	w.h.count("group read", o)
	if o != ok {
		return false
	}
	op := groupOp{kind: "read", start: r.GetNextOffset(), next: r.GetNextOffset(), end: r.GetEndOffset()}
	for i, m := range r.GetMessages() {
		if i == 0 {
			op.start = m.GetOffset()
		}
		op.msgs = append(op.msgs, topicRead{offset: m.GetOffset(), id: m.GetMessageId(), body: m.GetBody(), key: m.GetPartitionKey(), tags: m.GetTags()})
	}
	w.tw.h.addGroupOp(k, op)
	if len(op.msgs) == 0 {
		return false
	}
	if crash {
		w.tw.h.addGroupOp(k, groupOp{kind: "crash"})
		return true
	}
	ctx, cancel, tapi := w.topics(rng)
	_, err = tapi.CommitOffsets(ctx, &qv1.CommitOffsetsRequest{Topic: w.tw.name, Group: group,
		Offsets: []*qv1.PartitionOffset{{Partition: p, Offset: op.next}}})
	cancel()
	o, _ = classify(err)
	w.h.count("group commit", o)
	w.tw.h.addGroupOp(k, groupOp{kind: "commit", offset: op.next, outcome: o})
	return true
}

// drainTopic reads every group to the end of every partition, then
// receives and deletes from the subscribed queues until every message of
// the logs has reached each queue whose filter matches (the relay may
// still be delivering), or the limit passes (the checker then names what
// is missing).
func (w *workload) drainTopic(limit time.Duration) error {
	rng := rand.New(rand.NewPCG(w.seed, 902))
	deadline := time.Now().Add(limit)
	tw := w.tw
	for _, g := range tw.groups {
		for p := range tw.partitions {
			for quiet := 0; quiet < 2; {
				if time.Now().After(deadline) {
					return fmt.Errorf("drain: group %s partition %d not read to its end after %v", g, p, limit)
				}
				if w.readCommit(rng, g, p, 1000, 0, false) {
					quiet = 0
					continue
				}
				// Done when the last read answered with nothing left.
				if last := tw.h.last(partKey{g, p}); last.kind == "read" && len(last.msgs) == 0 && last.next == last.end {
					quiet++
				} else {
					time.Sleep(100 * time.Millisecond)
				}
			}
		}
	}
	for {
		missing := w.missingCopies()
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("drain: %d fan-out copies not received after %v", missing, limit)
		}
		got := 0
		for _, s := range tw.subs {
			evs := w.receive(rng, s.queue, 10, drainLease, 0, true)
			got += len(evs)
			for _, e := range evs {
				if w.settle(rng, e, false, 0) != ok {
					return fmt.Errorf("drain: delete of %s failed", e.id)
				}
			}
		}
		if got == 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// missingCopies counts (message, matching queue) pairs of the groups'
// reads that no receive has returned yet.
func (w *workload) missingCopies() int {
	w.tw.h.mu.Lock()
	want := map[[2]string]bool{}
	for _, ops := range w.tw.h.groupOp {
		for _, op := range ops {
			for _, m := range op.msgs {
				for _, s := range w.tw.subs {
					if s.wants(m.tags) {
						want[[2]string{s.queue, m.id}] = true
					}
				}
			}
		}
	}
	w.tw.h.mu.Unlock()
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	for _, r := range w.h.recvs {
		delete(want, [2]string{r.queue, r.id})
	}
	return len(want)
}

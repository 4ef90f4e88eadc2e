package shardserver_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

// Retention under a running clock (issue 20): a publisher publishes
// continuously (a fixed number of batches per clock step, so the retained
// size has a bound) while the test clock runs in 5 s steps through six
// retention periods of 1 minute. After each step the retained start
// catches up with what expired (nothing newer than the retention goes, and
// nothing older than the retention plus a segment's span stays), the
// trimmed offsets are gone, the topic's bytes fall back after each trim and
// stay bounded whatever was published in all, every publish succeeds, and
// a group reset to the retained start reads consecutive offsets.
//
// Pebble's own disk usage is not checked: the node's DB also holds the
// Raft log and WAL of every shard, and range deletes free sstable space
// only when Pebble compacts them, at a time the test does not control.
func TestTopicRetentionWhilePublishing(t *testing.T) {
	const (
		step      = 5 * time.Second
		retention = time.Minute
		steps     = 72 // 6 retention periods
		perStep   = 4  // batches per step
		batch     = 25
		body      = 200
		// A segment spans at most a tenth of the retention of clock time
		// plus the step in which it was closed.
		segSpan = retention/10 + step
	)
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Shards: partShards, Clock: clock.Now})
	tc := topicClient(t, n.GRPCAddr())
	if _, err := tc.CreateTopic(tctx(t), &qv1.CreateTopicRequest{Name: "rr", Attributes: &qv1.TopicAttributes{Retention: durationpb.New(retention)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.CreateGroup(tctx(t), &qv1.CreateGroupRequest{Topic: "rr", Group: "g"}); err != nil {
		t.Fatal(err)
	}
	bodyOf := func(off int64) string { return fmt.Sprintf("m-%08d-%s", off, strings.Repeat("x", body-11)) }

	// The publisher: perStep batches at each clock value, then it waits for
	// the clock to move. Offsets are consecutive from 0 (one partition, one
	// publisher), so message i's body names i.
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu        sync.Mutex
		published int64 // acknowledged messages
		doneStep  = make(chan struct{}, 1)
		advanced  = make(chan struct{}, 1)
		pubErr    error
		wg        sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(doneStep)
		next := int64(0)
		for range steps {
			for range perStep {
				var es []*qv1.PublishBatchEntry
				for j := range batch {
					es = append(es, &qv1.PublishBatchEntry{Id: fmt.Sprint(j), Body: bodyOf(next + int64(j))})
				}
				pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
				r, err := tc.PublishBatch(pctx, &qv1.PublishBatchRequest{Topic: "rr", Entries: es})
				pcancel()
				if err == nil && (len(r.GetFailed()) > 0 || len(r.GetSuccessful()) != batch) {
					err = fmt.Errorf("failed entries %v", r.GetFailed())
				}
				for j, s := range r.GetSuccessful() {
					if err == nil && s.GetOffset() != next+int64(j) {
						err = fmt.Errorf("entry %d got offset %d, want %d", j, s.GetOffset(), next+int64(j))
					}
				}
				if err != nil {
					mu.Lock()
					pubErr = fmt.Errorf("publish at offset %d: %w", next, err)
					mu.Unlock()
					return
				}
				next += batch
				mu.Lock()
				published = next
				mu.Unlock()
			}
			doneStep <- struct{}{}
			select {
			case <-advanced:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })

	getPart := func() (*qv1.TopicPartition, int64) {
		t.Helper()
		r, err := tc.GetTopic(tctx(t), &qv1.GetTopicRequest{Name: "rr"})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetTopic().GetPartitions()[0], r.GetTopic().GetBytes()
	}
	// endAt[i] is the end offset when the clock moved past start + i*step:
	// every offset below it was stamped at or before that time, every
	// offset at or above it after.
	start := clock.Now()
	var endAt []int64
	var maxBytes, lastBytes int64
	falls, reads := 0, 0
	for i := range steps {
		select {
		case _, ok := <-doneStep:
			if !ok {
				mu.Lock()
				err := pubErr
				mu.Unlock()
				t.Fatalf("publisher stopped: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("step %d: publisher stalled", i)
		}
		mu.Lock()
		endAt = append(endAt, published)
		mu.Unlock()
		clock.Advance(step)
		advanced <- struct{}{}
		now := clock.Now()
		// Lowest start the trim must reach: the end offset of the last step
		// older than retention plus a segment's span. Highest start allowed:
		// the end offset of the oldest step still inside the retention.
		var lo, hi int64
		for j, e := range endAt {
			at := start.Add(time.Duration(j) * step)
			if at.Before(now.Add(-retention - segSpan - step)) {
				lo = e
			}
			if hi == 0 && at.After(now.Add(-retention)) {
				hi = e
			}
		}
		var p *qv1.TopicPartition
		var bytes int64
		checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
			p, bytes = getPart()
			if p.GetStartOffset() < lo {
				return fmt.Errorf("step %d: retained start %d, want >= %d", i, p.GetStartOffset(), lo)
			}
			return nil
		})
		if p.GetStartOffset() > hi && hi > 0 {
			t.Fatalf("step %d: retained start %d past %d: unexpired messages dropped", i, p.GetStartOffset(), hi)
		}
		if lastBytes > 0 && bytes < lastBytes {
			falls++
		}
		lastBytes, maxBytes = bytes, max(maxBytes, bytes)
		if p.GetStartOffset() > 0 {
			// The trimmed offsets are gone.
			_, err := tc.ReadTopic(tctx(t), &qv1.ReadTopicRequest{Topic: "rr", Group: "g", Offset: new(p.GetStartOffset() - 1), MaxMessages: 1})
			wantReason(t, err, codes.FailedPrecondition, server.ReasonOffsetOutOfRange)
		}
		if i%12 == 11 {
			readRetained(t, tc, bodyOf, now.Add(-retention-segSpan-step))
			reads++
		}
	}
	// Bounded: what one retention plus a segment's span holds, with slack
	// for the trim's margin and the step being published while the test
	// looks: far below what was published (72 steps).
	perStepBytes := int64(perStep * batch * body)
	bound := int64((retention+segSpan)/step+4) * perStepBytes
	mu.Lock()
	total := published
	mu.Unlock()
	if maxBytes > bound || total*body < 3*bound {
		t.Fatalf("retained bytes peaked at %d, bound %d, published %d bytes", maxBytes, bound, total*body)
	}
	// Segments close every ~6 s of clock, so the bytes fall back at least
	// once per retention period after the first.
	if falls < 5 || reads != steps/12 {
		t.Fatalf("bytes fell %d times, %d group reads", falls, reads)
	}
	t.Logf("published %d messages (%d bytes), retained bytes peaked at %d (bound %d), fell %d times", total, total*body, maxBytes, bound, falls)
}

// readRetained resets group g to the earliest retained message and reads
// to the end: offsets are consecutive from the retained start, bodies are
// those published at the offsets, and the oldest message is not older than
// oldest. A trim that overtakes the reader is answered with
// OFFSET_OUT_OF_RANGE; the reader resets and starts again (bounded).
func readRetained(t *testing.T, tc qv1.TopicServiceClient, bodyOf func(int64) string, oldest time.Time) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		err := readRetainedOnce(t, tc, bodyOf, oldest)
		if err == nil {
			return
		}
		if _, reason, _ := reasonOf(err); reason != server.ReasonOffsetOutOfRange || attempt == 5 {
			t.Fatal(err)
		}
	}
}

func readRetainedOnce(t *testing.T, tc qv1.TopicServiceClient, bodyOf func(int64) string, oldest time.Time) error {
	before, err := tc.GetTopic(tctx(t), &qv1.GetTopicRequest{Name: "rr"})
	if err != nil {
		return err
	}
	if _, err := tc.ResetGroup(tctx(t), &qv1.ResetGroupRequest{Topic: "rr", Group: "g", Start: qv1.GroupStart_GROUP_START_EARLIEST}); err != nil {
		return err
	}
	r, err := tc.GetTopic(tctx(t), &qv1.GetTopicRequest{Name: "rr"})
	if err != nil {
		return err
	}
	end := r.GetTopic().GetPartitions()[0].GetEndOffset()
	next := int64(-1)
	for next < end {
		rd, err := tc.ReadTopic(tctx(t), &qv1.ReadTopicRequest{Topic: "rr", Group: "g", MaxMessages: 500})
		if err != nil {
			return err
		}
		if len(rd.GetMessages()) == 0 {
			return errors.New("empty read before the end")
		}
		for _, m := range rd.GetMessages() {
			if next == -1 {
				if start := before.GetTopic().GetPartitions()[0].GetStartOffset(); m.GetOffset() < start {
					return fmt.Errorf("group read offset %d below the retained start %d", m.GetOffset(), start)
				}
				if m.GetPublishTime().AsTime().Before(oldest) {
					return fmt.Errorf("oldest retained message %d published %v, before %v", m.GetOffset(), m.GetPublishTime().AsTime(), oldest)
				}
			} else if m.GetOffset() != next {
				return fmt.Errorf("read offset %d, want %d", m.GetOffset(), next)
			}
			if m.GetBody() != bodyOf(m.GetOffset()) {
				return fmt.Errorf("offset %d: body %.12q", m.GetOffset(), m.GetBody())
			}
			next = m.GetOffset() + 1
		}
		if _, err := tc.CommitOffsets(tctx(t), &qv1.CommitOffsetsRequest{Topic: "rr", Group: "g",
			Offsets: []*qv1.PartitionOffset{{Partition: 0, Offset: next}}}); err != nil {
			return err
		}
	}
	return nil
}

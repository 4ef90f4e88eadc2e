package shardserver_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Tests of DESIGN §3 rule 8 (FIFO queues, deduplication), receive attempt
// ids and redrive, through the gRPC API.

func fifoCreate(t *testing.T, c qv1.QueueServiceClient, name string, attrs *qv1.QueueAttributes) {
	t.Helper()
	if _, err := c.CreateQueue(tctx(t), &qv1.CreateQueueRequest{Name: name, Attributes: attrs}); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
}

func fifoSend(t *testing.T, c qv1.QueueServiceClient, req *qv1.SendMessageRequest) *qv1.SendMessageResponse {
	t.Helper()
	r, err := c.SendMessage(tctx(t), req)
	if err != nil {
		t.Fatalf("send %q: %v", req.GetBody(), err)
	}
	return r
}

func fifoStats(t *testing.T, c qv1.QueueServiceClient, name string) *qv1.QueueStats {
	t.Helper()
	q, err := c.GetQueue(tctx(t), &qv1.GetQueueRequest{Name: name})
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return q.GetQueue().GetStats()
}

func statsString(s *qv1.QueueStats) string {
	return fmt.Sprintf("visible=%d inflight=%d delayed=%d", s.GetVisible(), s.GetInFlight(), s.GetDelayed())
}

// fifoDelete deletes a message, failing the test on error.
func fifoDelete(t *testing.T, c qv1.QueueServiceClient, q string, m *qv1.ReceivedMessage) {
	t.Helper()
	if _, err := c.DeleteMessage(tctx(t), &qv1.DeleteMessageRequest{Queue: q, ReceiptHandle: m.GetReceiptHandle()}); err != nil {
		t.Fatalf("delete %s: %v", m.GetBody(), err)
	}
}

func fifoNack(t *testing.T, c qv1.QueueServiceClient, q string, m *qv1.ReceivedMessage) {
	t.Helper()
	if _, err := c.ChangeMessageVisibility(tctx(t), &qv1.ChangeMessageVisibilityRequest{Queue: q, ReceiptHandle: m.GetReceiptHandle(), VisibilityTimeout: durationpb.New(0)}); err != nil {
		t.Fatalf("nack %s: %v", m.GetBody(), err)
	}
}

// ---------------------------------------------------------------------------
// Order within a group under concurrent consumers and redeliveries.

type fifoDelivery struct {
	group string
	idx   int // position in the group's send order
	rc    int32
	id    string
}

type fifoReceiveLog struct {
	inv, done int64 // logical times around the call
	msgs      []fifoDelivery
}

type fifoDeleteLog struct {
	group     string
	idx       int
	inv, done int64
}

// Six groups of 30 messages; four consumers receive up to 10 at a time and
// for each message delete it, nack it (visibility 0) or let its lease end
// (the fake clock jumps past it whenever a consumer finds nothing). Like a
// correct FIFO consumer, once it gives up on a message it gives up on the
// rest of that group in the batch. Every receive is logged (under a lock,
// before the consumer acts on it) with logical times around each call, and
// so is every accepted delete. Afterwards:
//   - each receive returned, per group, a consecutive run of the group's
//     messages, starting at a message all of whose predecessors had been
//     deleted before the receive returned (nothing behind a message that
//     was still there);
//   - per group, first deliveries (in log order) come in send order, and
//     first_received_at never decreases along the group;
//   - per group, deletes happen in send order: no message was deleted
//     before an earlier one of its group was even attempted;
//   - every message was delivered and deleted, and the queue is empty.
func TestFIFOOrderUnderConcurrentConsumers(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	const q = "order.fifo"
	const groups, perGroup, consumers = 6, 30, 4
	const lease = 5 * time.Second
	fifoCreate(t, n.Client, q, &qv1.QueueAttributes{Fifo: true, ContentBasedDeduplication: true, VisibilityTimeout: durationpb.New(lease)})

	type key struct {
		group string
		idx   int
	}
	byID := map[string]key{}
	seqOf := map[key]uint64{}
	// Interleave the groups: g0-0 g1-0 … g5-0 g0-1 …
	var entries []*qv1.SendMessageBatchEntry
	for i := 0; i < perGroup; i++ {
		for g := 0; g < groups; g++ {
			entries = append(entries, &qv1.SendMessageBatchEntry{Id: fmt.Sprintf("g%d_%d", g, i), Body: fmt.Sprintf("g%d-%d", g, i), GroupId: fmt.Sprintf("g%d", g)})
		}
	}
	for len(entries) > 0 {
		k := min(len(entries), 100)
		r, err := n.Client.SendMessageBatch(tctx(t), &qv1.SendMessageBatchRequest{Queue: q, Entries: entries[:k]})
		if err != nil || len(r.GetFailed()) != 0 || len(r.GetSuccessful()) != k {
			t.Fatalf("send batch: %v %v", r, err)
		}
		for _, s := range r.GetSuccessful() {
			var g, i int
			if _, err := fmt.Sscanf(s.GetId(), "g%d_%d", &g, &i); err != nil {
				t.Fatal(err)
			}
			kk := key{fmt.Sprintf("g%d", g), i}
			byID[s.GetMessageId()] = kk
			seqOf[kk] = s.GetSequence()
		}
		entries = entries[k:]
	}
	const total = groups * perGroup
	idOf := map[key]string{}
	for id, k := range byID {
		idOf[k] = id
	}
	if len(byID) != total {
		t.Fatalf("%d distinct message ids for %d sends", len(byID), total)
	}
	for g := 0; g < groups; g++ {
		for i := 1; i < perGroup; i++ {
			a, b := key{fmt.Sprintf("g%d", g), i - 1}, key{fmt.Sprintf("g%d", g), i}
			if seqOf[a] >= seqOf[b] {
				t.Fatalf("sequence of %v (%d) not below %v (%d)", a, seqOf[a], b, seqOf[b])
			}
		}
	}

	var (
		tick      atomic.Int64 // logical clock of the calls
		mu        sync.Mutex
		receives  []fifoReceiveLog
		deletes   []fifoDeleteLog
		deleted   = map[string]bool{}
		firstRecv = map[string]*timestamppb.Timestamp{}
		nacks     atomic.Int64
		abandons  atomic.Int64
		stale     atomic.Int64
		empties   atomic.Int64
	)
	done := func() bool { mu.Lock(); defer mu.Unlock(); return len(deleted) == total }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, consumers)
	for c := 0; c < consumers; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 42))
			fail := func(err error) { errs <- err; cancel() }
			for ctx.Err() == nil && !done() {
				inv := tick.Add(1)
				r, err := n.Client.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10, WaitTime: durationpb.New(0)})
				if err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("consumer %d receive: %w", c, err))
					}
					return
				}
				msgs := r.GetMessages()
				if len(msgs) == 0 {
					// Every visible group is blocked or taken: end the leases.
					empties.Add(1)
					clock.Advance(lease + time.Second)
					continue
				}
				entry := fifoReceiveLog{inv: inv, done: tick.Add(1)}
				for _, m := range msgs {
					k, ok := byID[m.GetMessageId()]
					if !ok {
						fail(fmt.Errorf("received unknown message %s", m.GetMessageId()))
						return
					}
					if m.GetGroupId() != k.group || m.GetSequence() != seqOf[k] {
						fail(fmt.Errorf("message %s came back as group %q seq %d", m.GetBody(), m.GetGroupId(), m.GetSequence()))
						return
					}
					entry.msgs = append(entry.msgs, fifoDelivery{k.group, k.idx, m.GetReceiveCount(), m.GetMessageId()})
				}
				// Log before acting on the messages: a delete or nack of
				// this receive's messages follows its log entry.
				mu.Lock()
				receives = append(receives, entry)
				for _, m := range msgs {
					if _, ok := firstRecv[m.GetMessageId()]; !ok {
						firstRecv[m.GetMessageId()] = m.GetFirstReceivedAt()
					}
				}
				mu.Unlock()

				gaveUp := map[string]bool{}
				for _, m := range msgs {
					g := m.GetGroupId()
					if gaveUp[g] {
						continue
					}
					switch p := rng.IntN(100); {
					case p < 12: // nack
						gaveUp[g] = true
						nacks.Add(1)
						_, err := n.Client.ChangeMessageVisibility(ctx, &qv1.ChangeMessageVisibilityRequest{Queue: q, ReceiptHandle: m.GetReceiptHandle(), VisibilityTimeout: durationpb.New(0)})
						if code := status.Code(err); err != nil && code != codes.FailedPrecondition && code != codes.NotFound && ctx.Err() == nil {
							fail(fmt.Errorf("nack %s: %w", m.GetBody(), err))
							return
						}
					case p < 22: // crash: let the lease end
						gaveUp[g] = true
						abandons.Add(1)
					default:
						k := byID[m.GetMessageId()]
						inv := tick.Add(1)
						_, err := n.Client.DeleteMessage(ctx, &qv1.DeleteMessageRequest{Queue: q, ReceiptHandle: m.GetReceiptHandle()})
						d := tick.Add(1)
						if err != nil {
							if status.Code(err) == codes.FailedPrecondition {
								// Received again by another consumer since.
								stale.Add(1)
								gaveUp[g] = true
								continue
							}
							if ctx.Err() == nil {
								fail(fmt.Errorf("delete %s: %w", m.GetBody(), err))
							}
							return
						}
						mu.Lock()
						deletes = append(deletes, fifoDeleteLog{k.group, k.idx, inv, d})
						deleted[m.GetMessageId()] = true
						mu.Unlock()
					}
				}
			}
		}(c)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if !done() {
		t.Fatalf("only %d of %d messages deleted before the deadline", len(deleted), total)
	}
	t.Logf("%d receives (%d empty), %d deletes accepted, %d nacks, %d abandoned leases, %d stale deletes",
		len(receives), empties.Load(), len(deletes), nacks.Load(), abandons.Load(), stale.Load())

	// Deletes: per message the earliest invocation and the earliest
	// completion among the accepted ones. The removal happened at or after
	// the first and at or before the second.
	delInv, delDone := map[key]int64{}, map[key]int64{}
	for _, d := range deletes {
		k := key{d.group, d.idx}
		if v, ok := delInv[k]; !ok || d.inv < v {
			delInv[k] = d.inv
		}
		if v, ok := delDone[k]; !ok || d.done < v {
			delDone[k] = d.done
		}
	}

	// Every receive: per group a consecutive run from the group's head.
	redelivered := 0
	multi := 0
	for ri, r := range receives {
		last := map[string]int{}
		for _, m := range r.msgs {
			if m.rc > 1 {
				redelivered++
			}
			prev, seen := last[m.group]
			if seen {
				if m.idx != prev+1 {
					t.Errorf("receive %d: %s-%d follows %s-%d in one receive (want the next of the group)", ri, m.group, m.idx, m.group, prev)
				}
				multi++
			} else {
				// The run's first message is the head: every earlier
				// message of the group was deleted before this receive
				// returned.
				for j := 0; j < m.idx; j++ {
					if inv, ok := delInv[key{m.group, j}]; !ok || inv > r.done {
						t.Errorf("receive %d delivered %s-%d while %s-%d was not deleted yet", ri, m.group, m.idx, m.group, j)
						break
					}
				}
			}
			last[m.group] = m.idx
		}
	}
	if redelivered == 0 || multi == 0 {
		t.Errorf("workload too tame: %d redeliveries, %d receives of several messages of a group", redelivered, multi)
	}

	// First deliveries in log order, per group, follow the send order.
	next := map[string]int{}
	seen := map[string]bool{}
	for _, r := range receives {
		for _, m := range r.msgs {
			if seen[m.id] {
				continue
			}
			seen[m.id] = true
			if m.idx != next[m.group] {
				t.Errorf("first delivery of %s-%d came when %s-%d was due", m.group, m.idx, m.group, next[m.group])
			}
			next[m.group] = m.idx + 1
		}
	}
	if len(seen) != total {
		t.Errorf("%d of %d messages delivered", len(seen), total)
	}
	// first_received_at (leader time of the first lease) never decreases
	// along a group.
	for g := 0; g < groups; g++ {
		var prev time.Time
		for i := 0; i < perGroup; i++ {
			k := key{fmt.Sprintf("g%d", g), i}
			at := firstRecv[idOf[k]].AsTime()
			if at.Before(prev) {
				t.Errorf("%s-%d first received at %v, before its predecessor (%v)", k.group, i, at, prev)
			}
			prev = at
		}
	}

	// Deletes within each group in send order: a message's removal came
	// after its predecessor's (never provably before it).
	for g := 0; g < groups; g++ {
		group := fmt.Sprintf("g%d", g)
		for i := 1; i < perGroup; i++ {
			a, b := key{group, i - 1}, key{group, i}
			if delDone[b] < delInv[a] {
				t.Errorf("%s-%d was deleted (done at %d) before the delete of %s-%d started (%d)", group, i, delDone[b], group, i-1, delInv[a])
			}
		}
	}
	if s := fifoStats(t, n.Client, q); s.GetVisible()+s.GetInFlight()+s.GetDelayed() != 0 {
		t.Errorf("queue not empty after every message was deleted: %s", statsString(s))
	}
}

// ---------------------------------------------------------------------------
// Group blocking, several messages of a group per receive.

// While a group's head is in flight nothing behind it is delivered, even a
// nacked later message; other groups (also new ones) progress; deleting the
// head releases the rest of the group as one run.
func TestFIFOGroupBlocking(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	const q = "block.fifo"
	fifoCreate(t, n.Client, q, &qv1.QueueAttributes{Fifo: true, ContentBasedDeduplication: true, VisibilityTimeout: durationpb.New(30 * time.Second)})
	for _, s := range []struct{ body, group string }{{"A1", "A"}, {"B1", "B"}, {"A2", "A"}, {"B2", "B"}, {"A3", "A"}} {
		fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: q, Body: s.body, GroupId: s.group})
	}
	a1 := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 1})
	if bodies(a1) != "A1" {
		t.Fatalf("first receive: %q, want the oldest head A1", bodies(a1))
	}
	b := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10})
	if bodies(b) != "B1 B2" {
		t.Fatalf("with A1 in flight: %q, want B1 B2 (A blocked)", bodies(b))
	}
	if m := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10}); len(m) != 0 {
		t.Fatalf("with both heads in flight: %q, want nothing", bodies(m))
	}
	// Not even after its lease nearly ended.
	clock.Advance(29 * time.Second)
	if m := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10}); len(m) != 0 {
		t.Fatalf("1s before the leases end: %q, want nothing", bodies(m))
	}
	// A new group progresses while A and B are blocked.
	fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: q, Body: "C1", GroupId: "C"})
	if m := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10}); bodies(m) != "C1" {
		t.Fatalf("new group: %q, want C1", bodies(m))
	}
	// A nacked later message stays behind its in-flight head.
	fifoNack(t, n.Client, q, b[1])
	if m := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10}); len(m) != 0 {
		t.Fatalf("B2 nacked behind in-flight B1: got %q, want nothing", bodies(m))
	}
	// Deleting A's head releases A2 and A3 in one receive, in order.
	fifoDelete(t, n.Client, q, a1[0])
	a := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10})
	if bodies(a) != "A2 A3" {
		t.Fatalf("after deleting A1: %q, want A2 A3", bodies(a))
	}
	if a[0].GetSequence() >= a[1].GetSequence() {
		t.Fatalf("sequences %d, %d out of order", a[0].GetSequence(), a[1].GetSequence())
	}
	// B1's lease ends: it comes back first, with the nacked B2 behind it.
	clock.Advance(time.Second)
	m := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10})
	if bodies(m) != "B1 B2" || m[0].GetReceiveCount() != 2 || m[1].GetReceiveCount() != 2 {
		t.Fatalf("after B1's lease ended: %v, want B1 B2 received twice each", m)
	}
	// The old handle of B1 is stale now.
	_, err := n.Client.DeleteMessage(tctx(t), &qv1.DeleteMessageRequest{Queue: q, ReceiptHandle: b[0].GetReceiptHandle()})
	wantReason(t, err, codes.FailedPrecondition, server.ReasonStaleReceiptHandle)
}

// One receive returns several messages of a group, in order, up to
// max_messages, and the rest of the group stays blocked behind them.
func TestFIFOReceiveSeveralOfAGroupInOrder(t *testing.T) {
	n := startNode(t, nodeOpts{})
	const q = "runs.fifo"
	fifoCreate(t, n.Client, q, &qv1.QueueAttributes{Fifo: true, ContentBasedDeduplication: true})
	var entries []*qv1.SendMessageBatchEntry
	for i := 0; i < 5; i++ {
		for _, g := range []string{"X", "Y"} {
			entries = append(entries, &qv1.SendMessageBatchEntry{Id: fmt.Sprintf("%s%d", g, i), Body: fmt.Sprintf("%s%d", g, i), GroupId: g})
		}
	}
	if r, err := n.Client.SendMessageBatch(tctx(t), &qv1.SendMessageBatchRequest{Queue: q, Entries: entries}); err != nil || len(r.GetSuccessful()) != 10 {
		t.Fatalf("send: %v %v", r, err)
	}
	x := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 3})
	if bodies(x) != "X0 X1 X2" {
		t.Fatalf("max 3: %q, want X0 X1 X2", bodies(x))
	}
	for i := 1; i < len(x); i++ {
		if x[i].GetSequence() <= x[i-1].GetSequence() || x[i].GetGroupId() != "X" {
			t.Fatalf("not in sequence order: %v", x)
		}
	}
	// X3 and X4 are behind in-flight X2; Y comes whole.
	y := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10})
	if bodies(y) != "Y0 Y1 Y2 Y3 Y4" {
		t.Fatalf("with X0..X2 in flight: %q, want Y0..Y4", bodies(y))
	}
	for _, m := range x {
		fifoDelete(t, n.Client, q, m)
	}
	if m := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10}); bodies(m) != "X3 X4" {
		t.Fatalf("after deleting X0..X2: %q, want X3 X4", bodies(m))
	}
}

// ---------------------------------------------------------------------------
// Deduplication and validation.

// A deduplication id seen within 5 minutes is accepted, answered with the
// first message's id and sequence, and not stored; from 5 minutes on it is
// new again.
func TestFIFODeduplicationWindow(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	const q = "dedup.fifo"
	fifoCreate(t, n.Client, q, &qv1.QueueAttributes{Fifo: true})
	first := fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: q, Body: "one", GroupId: "g", DeduplicationId: "x"})
	clock.Advance(5*time.Minute - time.Millisecond)
	again := fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: q, Body: "two", GroupId: "other", DeduplicationId: "x"})
	if again.GetMessageId() != first.GetMessageId() || again.GetSequence() != first.GetSequence() {
		t.Fatalf("within the window: %v, want the first answer %v", again, first)
	}
	// In a batch too, within the batch and against earlier sends.
	r, err := n.Client.SendMessageBatch(tctx(t), &qv1.SendMessageBatchRequest{Queue: q, Entries: []*qv1.SendMessageBatchEntry{
		{Id: "a", Body: "three", GroupId: "g", DeduplicationId: "y"},
		{Id: "b", Body: "four", GroupId: "g", DeduplicationId: "y"},
		{Id: "c", Body: "five", GroupId: "g", DeduplicationId: "x"},
	}})
	if err != nil || len(r.GetSuccessful()) != 3 {
		t.Fatalf("batch: %v %v", r, err)
	}
	res := map[string]*qv1.SendMessageBatchResult{}
	for _, s := range r.GetSuccessful() {
		res[s.GetId()] = s
	}
	if res["a"].GetMessageId() != res["b"].GetMessageId() || res["a"].GetMessageId() == first.GetMessageId() || res["c"].GetMessageId() != first.GetMessageId() {
		t.Fatalf("batch answers %v; first message %s", r.GetSuccessful(), first.GetMessageId())
	}
	if s := fifoStats(t, n.Client, q); s.GetVisible() != 2 {
		t.Fatalf("stored: %s, want 2 visible", statsString(s))
	}
	// 5 minutes after the first send the id is new (Tick may not have
	// removed the record yet).
	clock.Advance(time.Millisecond)
	late := fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: q, Body: "six", GroupId: "g", DeduplicationId: "x"})
	if late.GetMessageId() == first.GetMessageId() || late.GetSequence() <= res["a"].GetSequence() {
		t.Fatalf("after the window: %v, want a new message after %v", late, res["a"])
	}
	// And the record of the new one deduplicates again.
	if again := fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: q, Body: "seven", GroupId: "g", DeduplicationId: "x"}); again.GetMessageId() != late.GetMessageId() {
		t.Fatalf("retry of the new message: %v, want %v", again, late)
	}
	got := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10})
	if bodies(got) != "one three six" {
		t.Fatalf("stored messages: %q, want one three six", bodies(got))
	}
}

// content_based_deduplication derives the id from the SHA-256 of the body;
// an explicit id wins; dedup is per queue, across groups.
func TestFIFOContentBasedDeduplication(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	const q = "content.fifo"
	fifoCreate(t, n.Client, q, &qv1.QueueAttributes{Fifo: true, ContentBasedDeduplication: true})
	first := fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: q, Body: "same", GroupId: "g"})
	if dup := fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: q, Body: "same", GroupId: "other"}); dup.GetMessageId() != first.GetMessageId() {
		t.Fatalf("same body: %v, want the first answer %v", dup, first)
	}
	explicit := fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: q, Body: "same", GroupId: "g", DeduplicationId: "explicit"})
	other := fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: q, Body: "different", GroupId: "g"})
	if explicit.GetMessageId() == first.GetMessageId() || other.GetMessageId() == first.GetMessageId() || other.GetMessageId() == explicit.GetMessageId() {
		t.Fatalf("explicit id / other body deduplicated: %v %v %v", first, explicit, other)
	}
	// A standard queue with the same body is unaffected (per queue).
	fifoCreate(t, n.Client, "content-std", nil)
	fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: "content-std", Body: "same"})
	fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: "content-std", Body: "same"})
	if s := fifoStats(t, n.Client, "content-std"); s.GetVisible() != 2 {
		t.Fatalf("standard queue: %s, want 2 visible", statsString(s))
	}
	clock.Advance(5 * time.Minute)
	after := fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: q, Body: "same", GroupId: "g"})
	if after.GetMessageId() == first.GetMessageId() {
		t.Fatalf("after the window the same body was deduplicated: %v", after)
	}
	got := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10})
	if bodies(got) != "same same different same" {
		t.Fatalf("stored: %q", bodies(got))
	}
	if got[0].GetMessageId() != first.GetMessageId() || got[3].GetMessageId() != after.GetMessageId() {
		t.Fatalf("stored ids %v", got)
	}
}

// FIFO send and create validation.
func TestFIFOValidation(t *testing.T) {
	n := startNode(t, nodeOpts{})
	ctx := tctx(t)
	fifoCreate(t, n.Client, "v.fifo", &qv1.QueueAttributes{Fifo: true, ContentBasedDeduplication: true})
	fifoCreate(t, n.Client, "nocbd.fifo", &qv1.QueueAttributes{Fifo: true})

	_, err := n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "v.fifo", Body: "x"})
	wantField(t, err, "group_id")
	_, err = n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "v.fifo", Body: "x", GroupId: "g", Delay: durationpb.New(5 * time.Second)})
	wantField(t, err, "delay")
	_, err = n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "v.fifo", Body: "x", GroupId: "g", DeliverAt: timestamppb.New(time.Now().Add(time.Minute))})
	if c, r, meta := reasonOf(err); c != codes.InvalidArgument || r != server.ReasonInvalidArgument || (meta["field"] != "delay" && meta["field"] != "deliver_at") {
		t.Fatalf("deliver_at on a FIFO queue: %v (meta %v), want INVALID_ARGUMENT on delay or deliver_at", err, meta)
	}
	_, err = n.Client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "nocbd.fifo", Body: "x", GroupId: "g"})
	wantField(t, err, "deduplication_id")
	// In a batch the bad entry fails alone.
	r, err := n.Client.SendMessageBatch(ctx, &qv1.SendMessageBatchRequest{Queue: "v.fifo", Entries: []*qv1.SendMessageBatchEntry{
		{Id: "ok", Body: "fine", GroupId: "g"}, {Id: "nogroup", Body: "x"},
	}})
	if err != nil || len(r.GetSuccessful()) != 1 || len(r.GetFailed()) != 1 || r.GetFailed()[0].GetId() != "nogroup" || r.GetFailed()[0].GetCode() != "INVALID_ARGUMENT" {
		t.Fatalf("batch with a group-less entry: %v %v", r, err)
	}
	if s := fifoStats(t, n.Client, "v.fifo"); s.GetVisible() != 1 {
		t.Fatalf("after refused sends: %s, want only the batch's good entry", statsString(s))
	}

	// The name rule: a FIFO queue's name ends in .fifo, and only its.
	_, err = n.Client.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "plain", Attributes: &qv1.QueueAttributes{Fifo: true}})
	wantField(t, err, "name")
	_, err = n.Client.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "std.fifo"})
	wantField(t, err, "name")
	for _, bad := range []string{strings.Repeat("a", 76) + ".fifo", "a.b.fifo", ".fifo", "a.fifo.fifo", "a b.fifo"} {
		_, err = n.Client.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: bad, Attributes: &qv1.QueueAttributes{Fifo: true}})
		wantField(t, err, "name")
	}
	fifoCreate(t, n.Client, strings.Repeat("a", 75)+".fifo", &qv1.QueueAttributes{Fifo: true})
	// fifo and content_based_deduplication are fixed at creation.
	_, err = n.Client.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "nocbd.fifo", Attributes: &qv1.QueueAttributes{}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"fifo"}}})
	wantField(t, err, "attributes.fifo")
	_, err = n.Client.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "v.fifo", Attributes: &qv1.QueueAttributes{}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"content_based_deduplication"}}})
	wantField(t, err, "attributes.content_based_deduplication")
	// content_based_deduplication only on FIFO queues.
	_, err = n.Client.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "std", Attributes: &qv1.QueueAttributes{ContentBasedDeduplication: true}})
	if c, r, _ := reasonOf(err); c != codes.InvalidArgument || r != server.ReasonInvalidArgument {
		t.Fatalf("content_based_deduplication on a standard queue: %v", err)
	}
	// A FIFO queue's dead-letter queue is FIFO (and the other way round).
	fifoCreate(t, n.Client, "std-dlq", nil)
	_, err = n.Client.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "d.fifo", Attributes: &qv1.QueueAttributes{Fifo: true, DeadLetter: &qv1.DeadLetterPolicy{Queue: "std-dlq", MaxReceiveCount: 1}}})
	wantReason(t, err, codes.InvalidArgument, server.ReasonDeadLetterInvalid)
	_, err = n.Client.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "s", Attributes: &qv1.QueueAttributes{DeadLetter: &qv1.DeadLetterPolicy{Queue: "v.fifo", MaxReceiveCount: 1}}})
	wantReason(t, err, codes.InvalidArgument, server.ReasonDeadLetterInvalid)
}

// ---------------------------------------------------------------------------
// Receive attempts.

// A retried receive (same receive_attempt_id) returns the same messages
// and handles and changes nothing while none of them changed; after a
// change (lease ended, nack, delete) it is a fresh receive.
func TestReceiveAttemptRetry(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	const q = "attempts"
	fifoCreate(t, n.Client, q, &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(30 * time.Second)})
	for _, b := range []string{"m1", "m2", "m3"} {
		fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: q, Body: b})
	}
	same := func(a, b []*qv1.ReceivedMessage) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i].GetMessageId() != b[i].GetMessageId() || a[i].GetReceiptHandle() != b[i].GetReceiptHandle() || a[i].GetReceiveCount() != b[i].GetReceiveCount() {
				return false
			}
		}
		return true
	}
	first := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 2, ReceiveAttemptId: "r1"})
	if bodies(first) != "m1 m2" {
		t.Fatalf("first receive: %q", bodies(first))
	}
	clock.Advance(time.Second)
	retry := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 2, ReceiveAttemptId: "r1"})
	if !same(first, retry) {
		t.Fatalf("retry: %v, want %v", retry, first)
	}
	if s := fifoStats(t, n.Client, q); s.GetVisible() != 1 || s.GetInFlight() != 2 {
		t.Fatalf("after the retry: %s, want 1 visible 2 in flight", statsString(s))
	}
	// Another attempt id is another receive.
	if m := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 2, ReceiveAttemptId: "r2"}); bodies(m) != "m3" {
		t.Fatalf("attempt r2: %q, want m3", bodies(m))
	}
	if retry := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 2, ReceiveAttemptId: "r1"}); !same(first, retry) {
		t.Fatalf("retry after r2: %v", retry)
	}
	// The leases end: a fresh receive under the same id.
	clock.Advance(30 * time.Second)
	fresh := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 2, ReceiveAttemptId: "r1"})
	if bodies(fresh) != "m1 m2" || fresh[0].GetReceiveCount() != 2 || fresh[0].GetReceiptHandle() == first[0].GetReceiptHandle() {
		t.Fatalf("after the leases ended: %v, want m1 m2 received again with new handles", fresh)
	}
	if retry := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 2, ReceiveAttemptId: "r1"}); !same(fresh, retry) {
		t.Fatalf("retry of the fresh receive: %v, want %v", retry, fresh)
	}
	// The replayed handles are the current ones: the old are stale.
	_, err := n.Client.DeleteMessage(tctx(t), &qv1.DeleteMessageRequest{Queue: q, ReceiptHandle: first[0].GetReceiptHandle()})
	wantReason(t, err, codes.FailedPrecondition, server.ReasonStaleReceiptHandle)
	// A nacked message makes the retry fresh.
	fifoNack(t, n.Client, q, fresh[1])
	afterNack := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 2, ReceiveAttemptId: "r1"})
	if same(fresh, afterNack) || len(afterNack) == 0 {
		t.Fatalf("retry after a nack replayed: %v", afterNack)
	}
	for _, m := range afterNack {
		if m.GetBody() == "m1" {
			t.Fatalf("m1 (still in flight) delivered again: %v", afterNack)
		}
		if m.GetBody() == "m2" && m.GetReceiveCount() != 3 {
			t.Fatalf("m2 received again with count %d, want 3", m.GetReceiveCount())
		}
	}
	// A deleted message makes the retry fresh.
	for _, m := range afterNack {
		fifoDelete(t, n.Client, q, m)
	}
	fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: q, Body: "m4"})
	if m := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 2, ReceiveAttemptId: "r1"}); bodies(m) != "m4" {
		t.Fatalf("retry after deleting its messages: %q, want m4", bodies(m))
	}
	// The delete with a replayed handle works.
	fifoDelete(t, n.Client, q, fresh[0])

	// On a FIFO queue the retry returns the same head; the group stays blocked.
	const f = "attempts.fifo"
	fifoCreate(t, n.Client, f, &qv1.QueueAttributes{Fifo: true, ContentBasedDeduplication: true})
	fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: f, Body: "f1", GroupId: "g"})
	fifoSend(t, n.Client, &qv1.SendMessageRequest{Queue: f, Body: "f2", GroupId: "g"})
	head := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: f, MaxMessages: 1, ReceiveAttemptId: "x"})
	if bodies(head) != "f1" {
		t.Fatalf("FIFO: %q", bodies(head))
	}
	if m := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: f, MaxMessages: 10}); len(m) != 0 {
		t.Fatalf("FIFO group not blocked: %q", bodies(m))
	}
	if retry := fifoReceive(t, n.Client, &qv1.ReceiveMessagesRequest{Queue: f, MaxMessages: 1, ReceiveAttemptId: "x"}); !same(head, retry) {
		t.Fatalf("FIFO retry: %v, want %v", retry, head)
	}
	// Bad attempt ids are refused.
	_, err = n.Client.ReceiveMessages(tctx(t), &qv1.ReceiveMessagesRequest{Queue: q, ReceiveAttemptId: strings.Repeat("x", 129)})
	wantField(t, err, "receive_attempt_id")
}

// ---------------------------------------------------------------------------
// Redrive.

// deadLetterAll receives every message of src once and, after the leases
// end, once more: with max_receive_count 1 the second receive moves them
// all to the DLQ. It returns the ids received.
func deadLetterAll(t *testing.T, c qv1.QueueServiceClient, clock *fakeClock, src string) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for {
		m := fifoReceive(t, c, &qv1.ReceiveMessagesRequest{Queue: src, MaxMessages: 10})
		if len(m) == 0 {
			break
		}
		for _, x := range m {
			ids[x.GetMessageId()] = true
		}
	}
	clock.Advance(time.Hour)
	if m := fifoReceive(t, c, &qv1.ReceiveMessagesRequest{Queue: src, MaxMessages: 10}); len(m) != 0 {
		t.Fatalf("delivered past the receive limit: %v", m)
	}
	return ids
}

// waitStats waits until the queue's stats are exactly want.
func waitStats(t *testing.T, c qv1.QueueServiceClient, q string, visible, inFlight int64) {
	t.Helper()
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		s := fifoStats(t, c, q)
		if s.GetVisible() != visible || s.GetInFlight() != inFlight || s.GetDelayed() != 0 {
			return fmt.Errorf("%s: %s, want visible=%d inflight=%d", q, statsString(s), visible, inFlight)
		}
		return nil
	})
}

// drain receives (and leases for an hour) every visible message of q and
// returns them; it fails on a message id seen twice.
func drain(t *testing.T, c qv1.QueueServiceClient, q string) map[string]*qv1.ReceivedMessage {
	t.Helper()
	got := map[string]*qv1.ReceivedMessage{}
	for {
		m := fifoReceive(t, c, &qv1.ReceiveMessagesRequest{Queue: q, MaxMessages: 10, VisibilityTimeout: durationpb.New(time.Hour)})
		if len(m) == 0 {
			return got
		}
		for _, x := range m {
			if _, dup := got[x.GetMessageId()]; dup {
				t.Fatalf("%s holds message %s (%q) twice", q, x.GetMessageId(), x.GetBody())
			}
			got[x.GetMessageId()] = x
		}
	}
}

// redriveAll calls RedriveMessages with max until it moves nothing and
// returns the total.
func redriveAll(t *testing.T, c qv1.QueueServiceClient, req *qv1.RedriveMessagesRequest) int64 {
	t.Helper()
	var total int64
	for calls := 0; ; calls++ {
		r, err := c.RedriveMessages(tctx(t), req)
		if err != nil {
			t.Fatalf("redrive %v: %v", req, err)
		}
		if r.GetMoved() == 0 {
			return total
		}
		if max := int64(req.GetMaxMessages()); max > 0 && r.GetMoved() > max {
			t.Fatalf("one call moved %d, max %d", r.GetMoved(), max)
		}
		total += r.GetMoved()
		if calls > 1000 {
			t.Fatal("redrive does not end")
		}
	}
}

// DLQ → each message's source, then DLQ → a named queue: every message
// arrives exactly once, with its id and body, the receive count reset and
// no dead_letter_source; a message sent to the DLQ directly has no source
// and stays on a redrive to the sources.
func TestRedriveToSourceAndTargetExactlyOnce(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	c := n.Client
	fifoCreate(t, c, "dlq", nil)
	fifoCreate(t, c, "work", &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(time.Second), DeadLetter: &qv1.DeadLetterPolicy{Queue: "dlq", MaxReceiveCount: 1}})
	fifoCreate(t, c, "other", nil)
	const N = 25
	sent := map[string]string{}
	for i := 0; i < N; i++ {
		r := fifoSend(t, c, &qv1.SendMessageRequest{Queue: "work", Body: fmt.Sprintf("poison-%d", i), Attributes: map[string]string{"i": fmt.Sprint(i)}})
		sent[r.GetMessageId()] = fmt.Sprintf("poison-%d", i)
	}
	if got := deadLetterAll(t, c, clock, "work"); len(got) != N {
		t.Fatalf("received %d of %d", len(got), N)
	}
	direct := fifoSend(t, c, &qv1.SendMessageRequest{Queue: "dlq", Body: "direct"})
	waitStats(t, c, "dlq", N+1, 0)

	// Bad requests.
	_, err := c.RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq", TargetQueue: "dlq"})
	wantField(t, err, "target_queue")
	_, err = c.RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq", TargetQueue: "nope"})
	wantReason(t, err, codes.NotFound, server.ReasonQueueNotFound)
	_, err = c.RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "nope"})
	wantReason(t, err, codes.NotFound, server.ReasonQueueNotFound)
	_, err = c.RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq", MaxMessages: 10001})
	wantField(t, err, "max_messages")

	// To the sources, 7 per call.
	if moved := redriveAll(t, c, &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq", MaxMessages: 7}); moved != N {
		t.Fatalf("redrive to sources moved %d, want %d", moved, N)
	}
	waitStats(t, c, "work", N, 0)
	waitStats(t, c, "dlq", 1, 0)
	back := drain(t, c, "work")
	if len(back) != N {
		t.Fatalf("%d messages back in work, want %d", len(back), N)
	}
	for id, m := range back {
		if sent[id] != m.GetBody() || m.GetReceiveCount() != 1 || m.GetDeadLetterSource() != "" || m.GetAttributes()["i"] == "" {
			t.Fatalf("redriven message %v (sent as %q)", m, sent[id])
		}
	}

	// Dead-letter them again (their counts were reset: one receive above,
	// the next moves them), then everything to a named queue.
	clock.Advance(time.Hour)
	if m := fifoReceive(t, c, &qv1.ReceiveMessagesRequest{Queue: "work", MaxMessages: 10}); len(m) != 0 {
		t.Fatalf("delivered past the receive limit: %v", m)
	}
	waitStats(t, c, "dlq", N+1, 0)
	if moved := redriveAll(t, c, &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq", TargetQueue: "other", MaxMessages: 4}); moved != N+1 {
		t.Fatalf("redrive to other moved %d, want %d", moved, N+1)
	}
	waitStats(t, c, "other", N+1, 0)
	got := drain(t, c, "other")
	if len(got) != N+1 || got[direct.GetMessageId()] == nil {
		t.Fatalf("other holds %d messages (direct: %v), want %d", len(got), got[direct.GetMessageId()] != nil, N+1)
	}
	for id := range sent {
		if got[id] == nil {
			t.Fatalf("message %s missing from other", id)
		}
	}
	for _, q := range []string{"dlq", "work"} {
		if s := fifoStats(t, c, q); s.GetVisible()+s.GetInFlight()+s.GetDelayed() != 0 {
			t.Fatalf("%s after the redrive: %s", q, statsString(s))
		}
	}
	if m, err := c.RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq"}); err != nil || m.GetMoved() != 0 {
		t.Fatalf("redrive of the empty DLQ: %v %v", m, err)
	}
}

// A FIFO DLQ redriven (to the source and to another FIFO queue) keeps each
// group's order; a standard DLQ cannot feed a FIFO queue.
func TestFIFORedriveKeepsGroupOrder(t *testing.T) {
	clock := newFakeClock()
	n := startNode(t, nodeOpts{Clock: clock.Now})
	c := n.Client
	fifoCreate(t, c, "dl.fifo", &qv1.QueueAttributes{Fifo: true, ContentBasedDeduplication: true})
	fifoCreate(t, c, "src.fifo", &qv1.QueueAttributes{Fifo: true, ContentBasedDeduplication: true, VisibilityTimeout: durationpb.New(time.Second), DeadLetter: &qv1.DeadLetterPolicy{Queue: "dl.fifo", MaxReceiveCount: 1}})
	fifoCreate(t, c, "tgt.fifo", &qv1.QueueAttributes{Fifo: true, ContentBasedDeduplication: true})
	order := []string{"g0", "h0", "g1", "g2", "h1", "g3", "h2", "g4"}
	for _, b := range order {
		fifoSend(t, c, &qv1.SendMessageRequest{Queue: "src.fifo", Body: b, GroupId: b[:1]})
	}
	check := func(msgs []*qv1.ReceivedMessage) {
		t.Helper()
		next := map[string]int{}
		for _, m := range msgs {
			g := m.GetGroupId()
			if m.GetBody() != fmt.Sprintf("%s%d", g, next[g]) {
				t.Fatalf("group %s out of order: %q", g, bodies(msgs))
			}
			next[g]++
		}
		if next["g"] != 5 || next["h"] != 3 {
			t.Fatalf("got %q, want every message", bodies(msgs))
		}
	}
	deadLetterAll(t, c, clock, "src.fifo")
	waitStats(t, c, "dl.fifo", int64(len(order)), 0)
	if moved := redriveAll(t, c, &qv1.RedriveMessagesRequest{DeadLetterQueue: "dl.fifo", MaxMessages: 3}); moved != int64(len(order)) {
		t.Fatalf("moved %d", moved)
	}
	waitStats(t, c, "src.fifo", int64(len(order)), 0)
	back := fifoReceive(t, c, &qv1.ReceiveMessagesRequest{Queue: "src.fifo", MaxMessages: 10})
	check(back)
	clock.Advance(time.Hour)
	if m := fifoReceive(t, c, &qv1.ReceiveMessagesRequest{Queue: "src.fifo", MaxMessages: 10}); len(m) != 0 {
		t.Fatalf("delivered past the receive limit: %v", m)
	}
	waitStats(t, c, "dl.fifo", int64(len(order)), 0)
	if moved := redriveAll(t, c, &qv1.RedriveMessagesRequest{DeadLetterQueue: "dl.fifo", TargetQueue: "tgt.fifo", MaxMessages: 2}); moved != int64(len(order)) {
		t.Fatalf("moved %d", moved)
	}
	waitStats(t, c, "tgt.fifo", int64(len(order)), 0)
	check(fifoReceive(t, c, &qv1.ReceiveMessagesRequest{Queue: "tgt.fifo", MaxMessages: 10}))

	fifoCreate(t, c, "plain-dlq", nil)
	fifoSend(t, c, &qv1.SendMessageRequest{Queue: "plain-dlq", Body: "x"})
	_, err := c.RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "plain-dlq", TargetQueue: "tgt.fifo"})
	wantField(t, err, "target_queue")
}

// Redrive on a 3-node cluster while the leader is cut off, a new one is
// elected, the network heals and leadership is handed back: every poison
// message ends up in the target exactly once and none is left in the DLQ.
func TestRedriveExactlyOnceAcrossLeaderChange(t *testing.T) {
	c := startMemCluster(t, 3)
	ids := []uint64{1, 2, 3}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const N = 60
	sent := poisonDLQ(t, c, N)
	old := c.Leader(t, ids...)
	var majority []uint64
	for _, id := range ids {
		if id != old {
			majority = append(majority, id)
		}
	}
	// Redrive in small steps through every node, retrying failed calls
	// (a redrive call is resumable: it moves what is left).
	started := make(chan struct{})
	var moved atomic.Int64
	var calls, failed atomic.Int64
	var finished atomic.Bool
	redriveDone := make(chan error, 1)
	go func() {
		once := sync.Once{}
		for i := 0; ; i++ {
			if ctx.Err() != nil {
				redriveDone <- ctx.Err()
				return
			}
			cctx, ccancel := context.WithTimeout(ctx, time.Second)
			r, err := c.Clients[ids[i%3]].RedriveMessages(cctx, &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq", TargetQueue: "fixed", MaxMessages: 2})
			ccancel()
			calls.Add(1)
			if err != nil {
				failed.Add(1)
				continue
			}
			moved.Add(r.GetMoved())
			once.Do(func() { close(started) })
			if r.GetMoved() == 0 {
				finished.Store(true)
				redriveDone <- nil
				return
			}
		}
	}()
	select {
	case <-started:
	case err := <-redriveDone:
		t.Fatalf("redrive ended before it started: %v", err)
	}
	c.Net.Partition(old)
	atCut := moved.Load()
	t.Logf("leader %d cut off after %d messages moved", old, atCut)
	var newLeader uint64
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if l := c.Leader(t, majority...); l != old {
			newLeader = l
			return nil
		}
		return fmt.Errorf("the majority still follows %d", old)
	})
	// The redrive goes on through the majority.
	checkFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if finished.Load() || moved.Load() >= atCut+10 {
			return nil
		}
		return fmt.Errorf("%d moved", moved.Load())
	})
	// A send through the majority commits (the new leader serves).
	clusterRetry(t, ctx, c, "send through the majority", majority, func(ctx context.Context, cl qv1.QueueServiceClient) error {
		_, err := cl.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "work", Body: "probe", IdempotencyKey: "probe"})
		return err
	})
	c.Net.Heal()
	t.Logf("new leader %d; healed after %d messages moved", newLeader, moved.Load())
	// Hand leadership back to the old leader while the redrive goes on.
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		cur := c.Leader(t, ids...)
		if cur == old {
			return nil
		}
		tctx, tcancel := context.WithTimeout(ctx, 2*time.Second)
		defer tcancel()
		return c.Nodes[cur].Host().TransferLeadership(tctx, 0, old)
	})
	t.Logf("leadership back on %d after %d messages moved", old, moved.Load())
	if err := <-redriveDone; err != nil {
		t.Fatalf("redrive: %v", err)
	}
	t.Logf("redrive: %d calls (%d failed), %d moved as reported", calls.Load(), failed.Load(), moved.Load())

	if moved.Load() > N {
		// A call that timed out may have committed; the count of those
		// that answered can only be lower.
		t.Errorf("redrive calls reported %d moved, more than the %d poison messages", moved.Load(), N)
	}
	checkRedriven(t, ctx, c, sent)
}

// poisonDLQ creates dlq, work (dead-lettering after one receive) and
// fixed on the cluster, sends n messages to work and dead-letters them
// all; it returns their ids.
func poisonDLQ(t *testing.T, c *memCluster, n int) map[string]bool {
	t.Helper()
	cl := c.Clients[1]
	fifoCreate(t, cl, "dlq", nil)
	fifoCreate(t, cl, "work", &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(0), DeadLetter: &qv1.DeadLetterPolicy{Queue: "dlq", MaxReceiveCount: 1}})
	fifoCreate(t, cl, "fixed", nil)
	sent := map[string]bool{}
	var entries []*qv1.SendMessageBatchEntry
	for i := 0; i < n; i++ {
		entries = append(entries, &qv1.SendMessageBatchEntry{Id: fmt.Sprint("p", i), Body: fmt.Sprint("poison-", i)})
	}
	r, err := cl.SendMessageBatch(tctx(t), &qv1.SendMessageBatchRequest{Queue: "work", Entries: entries})
	if err != nil || len(r.GetSuccessful()) != n {
		t.Fatalf("send: %v %v", r, err)
	}
	for _, s := range r.GetSuccessful() {
		sent[s.GetMessageId()] = true
	}
	// Visibility 0: a received message is visible again at once, and its
	// next receive moves it to the DLQ.
	checkFor(t, 20*time.Second, time.Millisecond, func() error {
		if m := fifoReceive(t, cl, &qv1.ReceiveMessagesRequest{Queue: "work", MaxMessages: 10}); len(m) > 0 {
			return errNotYet
		}
		if s := fifoStats(t, cl, "work"); s.GetVisible()+s.GetInFlight() != 0 {
			return fmt.Errorf("work: %s", statsString(s))
		}
		return nil
	})
	waitStats(t, cl, "dlq", int64(n), 0)
	return sent
}

// clusterRetry calls fn through the given nodes in turn until it succeeds.
func clusterRetry(t *testing.T, ctx context.Context, c *memCluster, what string, among []uint64, fn func(ctx context.Context, cl qv1.QueueServiceClient) error) {
	t.Helper()
	var err error
	for i := 0; ctx.Err() == nil; i++ {
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		err = fn(cctx, c.Clients[among[i%len(among)]])
		ccancel()
		if err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}

// checkRedriven waits until fixed holds n messages, then checks that it
// holds each sent message exactly once and that the DLQ is empty, and
// that the replicas converge.
func checkRedriven(t *testing.T, ctx context.Context, c *memCluster, sent map[string]bool) {
	t.Helper()
	ids := []uint64{1, 2, 3}
	N := int64(len(sent))
	retry := func(what string, fn func(ctx context.Context, cl qv1.QueueServiceClient) error) {
		t.Helper()
		clusterRetry(t, ctx, c, what, ids, fn)
	}
	stats := func(q string) *qv1.QueueStats {
		var s *qv1.QueueStats
		retry("stats of "+q, func(ctx context.Context, cl qv1.QueueServiceClient) error {
			r, err := cl.GetQueue(ctx, &qv1.GetQueueRequest{Name: q})
			s = r.GetQueue().GetStats()
			return err
		})
		return s
	}
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if s := stats("fixed"); s.GetVisible() < N {
			return fmt.Errorf("fixed: %s", statsString(s))
		}
		return nil
	})
	got := map[string]int{}
	for {
		var m []*qv1.ReceivedMessage
		retry("receive from fixed", func(ctx context.Context, cl qv1.QueueServiceClient) error {
			r, err := cl.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "fixed", MaxMessages: 10, VisibilityTimeout: durationpb.New(time.Hour), WaitTime: durationpb.New(0)})
			m = r.GetMessages()
			return err
		})
		if len(m) == 0 {
			break
		}
		for _, x := range m {
			got[x.GetMessageId()]++
			if x.GetReceiveCount() != 1 || x.GetDeadLetterSource() != "" {
				t.Errorf("redriven message %v: want receive count 1 and no dead_letter_source", x)
			}
		}
	}
	var dup, missing, extra int
	for id, k := range got {
		if !sent[id] {
			extra++
		}
		if k > 1 {
			dup++
		}
	}
	for id := range sent {
		if got[id] == 0 {
			missing++
		}
	}
	if dup+missing+extra > 0 || int64(len(got)) != N {
		t.Errorf("target holds %d messages: %d duplicated, %d missing, %d unexpected", len(got), dup, missing, extra)
	}
	for _, q := range []string{"dlq", "fixed"} {
		s := stats(q)
		want := int64(0)
		if q == "fixed" {
			want = N
		}
		if s.GetVisible() != 0 || s.GetInFlight() != want || s.GetDelayed() != 0 {
			t.Errorf("%s at the end: %s, want visible=0 inflight=%d", q, statsString(s), want)
		}
	}
	if m := fifoReceive(t, c.Clients[c.Leader(t, ids...)], &qv1.ReceiveMessagesRequest{Queue: "dlq", MaxMessages: 10}); len(m) != 0 {
		t.Errorf("left in the DLQ: %v", m)
	}
	// Replicas converge.
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var applied []uint64
		for _, id := range ids {
			st, err := c.Nodes[id].Host().Status(0)
			if err != nil {
				return err
			}
			applied = append(applied, st.Applied)
		}
		sort.Slice(applied, func(i, j int) bool { return applied[i] < applied[j] })
		if applied[0] != applied[2] {
			return fmt.Errorf("applied indexes %v", applied)
		}
		return nil
	})
}

// carriesAck reports whether a Raft entry's data holds an AckOutbox
// command. The host frames a proposal with a short header, so the command
// is looked for at the first few offsets.
func carriesAck(data []byte) bool {
	for off := 0; off <= 16 && off < len(data); off++ {
		var cmd storepb.Command
		if proto.Unmarshal(data[off:], &cmd) == nil && cmd.GetVersion() == 1 && cmd.GetAckOutbox() != nil {
			return true
		}
	}
	return false
}

// The relay delivers the redriven messages, then its AckOutbox never
// reaches the followers (the leader's appends carrying it are dropped), so
// the outbox entries stay pending; the leader is then cut off. The new
// leader's relay delivers the same entries again: the target answers them
// from its delivered markers, so every message is there once.
func TestRedriveExactlyOnceWhenAckIsLost(t *testing.T) {
	c := startMemCluster(t, 3)
	ids := []uint64{1, 2, 3}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const N = 40
	sent := poisonDLQ(t, c, N)
	old := c.Leader(t, ids...)
	var majority []uint64
	for _, id := range ids {
		if id != old {
			majority = append(majority, id)
		}
	}
	pending := func(id uint64) int {
		e, err := c.Nodes[id].Store().PendingOutbox(1000)
		if err != nil {
			t.Fatal(err)
		}
		return len(e)
	}
	// The dead-letter moves went through the outbox too: their acks must
	// be on every node before acks are dropped, or the first dropped
	// append is theirs and nothing after it (the redrive) commits.
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, id := range ids {
			if p := pending(id); p != 0 {
				return fmt.Errorf("node %d has %d dead-letter moves pending", id, p)
			}
		}
		return nil
	})
	var acksDropped atomic.Int64
	c.Net.Drop(func(env raftnode.Envelope) bool {
		m := env.Msg
		if m.GetType() != raftpb.MsgApp || m.GetFrom() != old {
			return false
		}
		for _, e := range m.GetEntries() {
			if carriesAck(e.GetData()) {
				acksDropped.Add(1)
				return true
			}
		}
		return false
	})
	r, err := c.Clients[old].RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq", TargetQueue: "fixed"})
	if err != nil || r.GetMoved() != N {
		t.Fatalf("redrive: %v %v", r, err)
	}
	// Delivered (committed) but not acknowledged.
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if acksDropped.Load() == 0 {
			return errNotYet
		}
		return nil
	})
	waitStats(t, c.Clients[old], "fixed", N, 0)
	waitStats(t, c.Clients[old], "dlq", 0, 0)
	t.Logf("%d appends carrying the ack dropped", acksDropped.Load())
	// The followers hold the delivery but not the ack: the entries are
	// still pending in their outbox.
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, id := range majority {
			if p := pending(id); p != N {
				return fmt.Errorf("node %d has %d outbox entries pending, want %d", id, p, N)
			}
		}
		return nil
	})

	c.Net.Drop(nil)
	c.Net.Partition(old)
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if l := c.Leader(t, majority...); l == old {
			return fmt.Errorf("the majority still follows %d", old)
		}
		return nil
	})
	// The new leader's relay has redelivered and acknowledged once its
	// commands commit; fixed must still hold N.
	clusterRetry(t, ctx, c, "send through the majority", majority, func(ctx context.Context, cl qv1.QueueServiceClient) error {
		_, err := cl.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "work", Body: "probe", IdempotencyKey: "probe"})
		return err
	})
	c.Net.Heal()
	checkRedriven(t, ctx, c, sent)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, id := range ids {
			if p := pending(id); p != 0 {
				return fmt.Errorf("node %d has %d outbox entries pending", id, p)
			}
		}
		return nil
	})
}

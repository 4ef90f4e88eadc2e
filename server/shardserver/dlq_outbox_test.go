package shardserver_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/server/shardserver"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// dlqClient is one tenant's view of a node.
type dlqClient struct {
	c   qv1.QueueServiceClient
	ctx func() context.Context
}

func (d dlqClient) create(t *testing.T, name string, attrs *qv1.QueueAttributes) {
	t.Helper()
	if _, err := d.c.CreateQueue(d.ctx(), &qv1.CreateQueueRequest{Name: name, Attributes: attrs}); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
}

// depth is every message of a queue: visible, in flight and delayed.
func (d dlqClient) depth(t *testing.T, name string) int64 {
	t.Helper()
	r, err := d.c.GetQueue(d.ctx(), &qv1.GetQueueRequest{Name: name})
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	st := r.GetQueue().GetStats()
	return st.GetVisible() + st.GetInFlight() + st.GetDelayed()
}

// waitDepth polls until queue `name` holds want messages.
func (d dlqClient) waitDepth(t *testing.T, name string, want int64, within time.Duration) {
	t.Helper()
	checkFor(t, within, 20*time.Millisecond, func() error {
		if got := d.depth(t, name); got != want {
			return fmt.Errorf("%s holds %d messages, want %d", name, got, want)
		}
		return nil
	})
}

// deadLetter sends n messages to src (visibility 0, max_receive_count 1)
// and receives until every one has moved to dlq.
func (d dlqClient) deadLetter(t *testing.T, src, dlq string, n int) {
	t.Helper()
	for sent := 0; sent < n; {
		var es []*qv1.SendMessageBatchEntry
		for ; sent < n && len(es) < 100; sent++ {
			es = append(es, &qv1.SendMessageBatchEntry{Id: fmt.Sprint("e", sent), Body: fmt.Sprintf("%s-%d", src, sent)})
		}
		r, err := d.c.SendMessageBatch(d.ctx(), &qv1.SendMessageBatchRequest{Queue: src, Entries: es})
		if err != nil || len(r.GetFailed()) > 0 {
			t.Fatalf("send to %s: %v %v", src, err, r.GetFailed())
		}
	}
	checkFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if _, err := d.c.ReceiveMessages(d.ctx(), &qv1.ReceiveMessagesRequest{Queue: src, MaxMessages: 100}); err != nil {
			return err
		}
		if got := d.depth(t, dlq); got != int64(n) {
			return fmt.Errorf("%s holds %d of %d", dlq, got, n)
		}
		return nil
	})
}

func deadLetterAttrs(dlq string) *qv1.QueueAttributes {
	return &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(0), DeadLetter: &qv1.DeadLetterPolicy{Queue: dlq, MaxReceiveCount: 1}}
}

// Issue 15 item 7, reproduced on the public API: a redrive after the
// source was deleted moved 100+ messages into an outbox that could never
// deliver them (lost from view), and jammed the shard's relay so later
// dead-letter moves of an unrelated queue never arrived. Now the redrive
// checks the sources at the call and answers QUEUE_NOT_FOUND naming the
// source, the messages stay visible in the DLQ, unrelated moves flow, and
// an explicit target_queue still redrives them.
func TestDLQRedriveAfterSourceDeletedKeepsMessagesAndRelayFlowing(t *testing.T) {
	n := startNode(t, nodeOpts{})
	d := dlqClient{c: n.Client, ctx: func() context.Context { return tctx(t) }}
	d.create(t, "dlq", nil)
	d.create(t, "src", deadLetterAttrs("dlq"))
	d.create(t, "dlq2", nil)
	d.create(t, "other", deadLetterAttrs("dlq2"))
	d.deadLetter(t, "src", "dlq", 150)

	// A DLQ in use is not deleted; a redrive source may be.
	_, err := n.Client.DeleteQueue(tctx(t), &qv1.DeleteQueueRequest{Name: "dlq"})
	wantReason(t, err, codes.FailedPrecondition, server.ReasonQueueInUse)
	if _, err := n.Client.DeleteQueue(tctx(t), &qv1.DeleteQueueRequest{Name: "src"}); err != nil {
		t.Fatal(err)
	}

	_, err = n.Client.RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq"})
	wantReason(t, err, codes.NotFound, server.ReasonQueueNotFound)
	if !strings.Contains(err.Error(), `"src"`) || !strings.Contains(err.Error(), "target_queue") {
		t.Fatalf("redrive error %q names neither the source nor the way out", err)
	}
	if got := d.depth(t, "dlq"); got != 150 {
		t.Fatalf("the DLQ holds %d messages after the refused redrive, want 150", got)
	}

	// Later dead-letter moves of another queue arrive.
	d.deadLetter(t, "other", "dlq2", 3)

	// An explicit target takes them.
	d.create(t, "src2", nil)
	var moved int64
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		r, err := n.Client.RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq", TargetQueue: "src2", MaxMessages: 100})
		if err != nil {
			return err
		}
		if moved += r.GetMoved(); moved < 150 {
			return fmt.Errorf("moved %d of 150", moved)
		}
		return nil
	})
	d.waitDepth(t, "src2", 150, 10*time.Second)
	d.waitDepth(t, "dlq", 0, 10*time.Second)

	// A missing explicit target is refused at the call.
	_, err = n.Client.RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq2", TargetQueue: "nope"})
	wantReason(t, err, codes.NotFound, server.ReasonQueueNotFound)
}

// gate holds the relay's deliveries to one target queue until released.
type gate struct {
	next    shardserver.Deliverer
	target  string
	release chan struct{}
	arrived chan struct{} // closed when a delivery to target first waits
	once    sync.Once
}

func (g *gate) deliver(ctx context.Context, es []*storepb.OutboxEntry) (*storepb.AckOutbox, error) {
	for _, e := range es {
		if e.GetTargetQueue() == g.target {
			g.once.Do(func() { close(g.arrived) })
			select {
			case <-g.release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			break
		}
	}
	return g.next(ctx, es)
}

// A redrive whose source is deleted after the call's check: the target
// refuses the delivery and the messages come back to the DLQ, visible,
// with their dead_letter_source and receive count.
func TestDLQRedriveRefusedByDeletedSourceReturnsToDLQ(t *testing.T) {
	n := startNode(t, nodeOpts{})
	d := dlqClient{c: n.Client, ctx: func() context.Context { return tctx(t) }}
	d.create(t, "dlq", nil)
	d.create(t, "src", deadLetterAttrs("dlq"))
	d.deadLetter(t, "src", "dlq", 5)

	srv := n.Server()
	g := &gate{next: srv.DelivererForTest(), target: "src", release: make(chan struct{}), arrived: make(chan struct{})}
	srv.SetDeliverer(g.deliver)
	r, err := n.Client.RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq"})
	if err != nil || r.GetMoved() != 5 {
		t.Fatalf("redrive: %v %v", r, err)
	}
	select {
	case <-g.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay never tried to deliver the redrive")
	}
	if _, err := n.Client.DeleteQueue(tctx(t), &qv1.DeleteQueueRequest{Name: "src"}); err != nil {
		t.Fatal(err)
	}
	close(g.release)

	d.waitDepth(t, "dlq", 5, 10*time.Second)
	got, err := n.Client.ReceiveMessages(tctx(t), &qv1.ReceiveMessagesRequest{Queue: "dlq", MaxMessages: 10,
		VisibilityTimeout: durationpb.New(0)})
	if err != nil || len(got.GetMessages()) != 5 {
		t.Fatalf("receive from the DLQ: %v %v", got, err)
	}
	for _, m := range got.GetMessages() {
		if m.GetDeadLetterSource() != "src" || m.GetReceiveCount() != 2 {
			t.Fatalf("returned message %v: want dead_letter_source src and its receive count kept (1 + this receive)", m)
		}
	}
	// And the next redrive names the missing source instead of moving them.
	_, err = n.Client.RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq"})
	wantReason(t, err, codes.NotFound, server.ReasonQueueNotFound)
	d.waitDepth(t, "dlq", 5, time.Second)
}

// One tenant's undeliverable entries never hold back another's: 150
// entries of alpha whose target shard fails sit at the head of the outbox,
// and beta's dead-letter moves behind them still arrive at once; alpha's
// arrive once its target recovers.
func TestDLQRelayOneTenantNeverStallsAnother(t *testing.T) {
	n := startAuthNode(t)
	c := qv1.NewQueueServiceClient(n.Conn)
	alpha := dlqClient{c: c, ctx: func() context.Context {
		return as(t, token(t, jwt.MapClaims{"tenant": "alpha", "scope": allScopes}))
	}}
	beta := dlqClient{c: c, ctx: func() context.Context {
		return as(t, token(t, jwt.MapClaims{"tenant": "beta", "scope": allScopes}))
	}}
	alpha.create(t, "dlq", nil)
	alpha.create(t, "src", deadLetterAttrs("dlq"))
	beta.create(t, "dlq", nil)
	beta.create(t, "src", deadLetterAttrs("dlq"))

	srv := n.Server()
	real := srv.DelivererForTest()
	var mu sync.Mutex
	failing := true
	var attempts int
	srv.SetDeliverer(func(ctx context.Context, es []*storepb.OutboxEntry) (*storepb.AckOutbox, error) {
		mu.Lock()
		down := failing
		mu.Unlock()
		var rest []*storepb.OutboxEntry
		for _, e := range es {
			if down && e.GetTargetTenant() == "alpha" {
				mu.Lock()
				attempts++
				mu.Unlock()
				continue // alpha's shard is unreachable
			}
			rest = append(rest, e)
		}
		ack, err := real(ctx, rest)
		if err == nil && len(rest) < len(es) {
			err = fmt.Errorf("alpha's shard is unreachable")
		}
		return ack, err
	})

	// alpha's 150 moves go first and cannot be delivered.
	for sent := 0; sent < 150; sent += 50 {
		var es []*qv1.SendMessageBatchEntry
		for i := range 50 {
			es = append(es, &qv1.SendMessageBatchEntry{Id: fmt.Sprint("e", i), Body: "a"})
		}
		if _, err := c.SendMessageBatch(alpha.ctx(), &qv1.SendMessageBatchRequest{Queue: "src", Entries: es}); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if _, err := c.ReceiveMessages(alpha.ctx(), &qv1.ReceiveMessagesRequest{Queue: "src", MaxMessages: 100}); err != nil {
			return err
		}
		if got := alpha.depth(t, "src"); got != 0 {
			return fmt.Errorf("alpha's src still holds %d", got)
		}
		return nil
	})
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if attempts < 150 {
			return fmt.Errorf("%d delivery attempts of alpha's entries", attempts)
		}
		return nil
	})

	// beta's moves, behind them in the outbox, arrive.
	beta.deadLetter(t, "src", "dlq", 5)
	if got := alpha.depth(t, "dlq"); got != 0 {
		t.Fatalf("alpha's DLQ holds %d while its shard is down", got)
	}

	mu.Lock()
	failing = false
	mu.Unlock()
	alpha.waitDepth(t, "dlq", 150, 40*time.Second)
}

// The same on a sharded node: the DLQ's partition lives on a data shard
// that holds no records, so the source check goes to the metadata shard,
// and the refused delivery crosses shards both ways.
func TestDLQRedriveToDeletedSourceSharded(t *testing.T) {
	n := startSharded(t)
	d := dlqClient{c: n.Client, ctx: func() context.Context { return tctx(t) }}
	d.create(t, "dlq", nil)
	d.create(t, "src", deadLetterAttrs("dlq"))
	d.deadLetter(t, "src", "dlq", 4)

	// Deleted after the check: refused by src's shard, back in the DLQ.
	srv := n.ShardServer(router.ShardOf(partShards, server.DevTenant, "dlq", 0))
	g := &gate{next: srv.DelivererForTest(), target: "src", release: make(chan struct{}), arrived: make(chan struct{})}
	srv.SetDeliverer(g.deliver)
	if r, err := n.Client.RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq"}); err != nil || r.GetMoved() != 4 {
		t.Fatalf("redrive: %v %v", r, err)
	}
	select {
	case <-g.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay never tried to deliver the redrive")
	}
	if _, err := n.Client.DeleteQueue(tctx(t), &qv1.DeleteQueueRequest{Name: "src"}); err != nil {
		t.Fatal(err)
	}
	close(g.release)
	d.waitDepth(t, "dlq", 4, 10*time.Second)

	// Checked at the call now.
	_, err := n.Client.RedriveMessages(tctx(t), &qv1.RedriveMessagesRequest{DeadLetterQueue: "dlq"})
	wantReason(t, err, codes.NotFound, server.ReasonQueueNotFound)
	d.waitDepth(t, "dlq", 4, time.Second)
}

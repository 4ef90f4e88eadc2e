package quorumq_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	quorumq "github.com/quorumq/quorumq/sdk"
	"github.com/quorumq/quorumq/sdk/internal/testcluster"
)

// A queue's calls learn where its shard leader is: a node that forwards a
// call says so in a response header, the SDK then tries the next endpoint,
// and once a node serves the queue itself every later call goes there,
// skipping the forwarding hop.
func TestQueueCallsGoToTheLeader(t *testing.T) {
	cl := startCluster(t, testcluster.Config{Size: 3})
	ctx := tctx(t, 60*time.Second)
	leader, err := cl.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all := cl.Endpoints()
	leaderEP := all[leader-1]
	// Start at the node after the leader: the first call is forwarded.
	eps := append(append([]string{}, all[leader%3:]...), all[:leader%3]...)

	type seen struct {
		target    string
		forwarded bool
	}
	var mu sync.Mutex
	var calls []seen
	spy := quorumq.WithDialOptions(grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			var md metadata.MD
			err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&md))...)
			if strings.HasSuffix(method, "/SendMessage") || strings.HasSuffix(method, "/ReceiveMessages") {
				mu.Lock()
				calls = append(calls, seen{cc.Target(), len(md.Get("x-quorumq-forwarded-to")) > 0})
				mu.Unlock()
			}
			return err
		}))
	name := queueName(t)
	createQueue(t, dial(t, all), name, quorumq.QueueAttributes{})
	q := dial(t, eps, spy).Queue(name)
	for range 10 {
		if _, err := q.Send(ctx, quorumq.OutgoingMessage{Body: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := q.Receive(ctx, quorumq.MaxMessages(10)); err != nil || len(got) != 10 {
		t.Fatalf("receive: %d messages, %v", len(got), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 11 || calls[0].target == leaderEP || !calls[0].forwarded {
		t.Fatalf("calls %+v: want the first one forwarded by a follower (leader at %s)", calls, leaderEP)
	}
	first := -1
	for i, c := range calls {
		if c.target == leaderEP {
			first = i
			break
		}
		if !c.forwarded {
			t.Errorf("call %d to follower %s not marked forwarded", i, c.target)
		}
	}
	if first < 0 || first > 2 {
		t.Fatalf("calls %+v: the leader %s not found within 3 calls", calls, leaderEP)
	}
	for i, c := range calls[first:] {
		if c.target != leaderEP || c.forwarded {
			t.Errorf("call %d went to %s (forwarded %v) after the leader %s was found", first+i, c.target, c.forwarded, leaderEP)
		}
	}
}

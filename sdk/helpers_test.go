package quorumq_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	quorumq "github.com/quorumq/quorumq/sdk"
	"github.com/quorumq/quorumq/sdk/internal/testcluster"
)

// endpoints are the gRPC addresses of the dev node that TestMain starts
// for the examples and the tests that need no special cluster.
var endpoints []string

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	c, err := testcluster.Start(ctx, testcluster.Config{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start dev node:", err)
		os.Exit(1)
	}
	endpoints = c.Endpoints()
	code := m.Run()
	c.Stop()
	os.Exit(code)
}

// startCluster starts a cluster of its own for one test.
func startCluster(t *testing.T, cfg testcluster.Config) *testcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := testcluster.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

func dial(t *testing.T, eps []string, opts ...quorumq.Option) *quorumq.Client {
	t.Helper()
	c, err := quorumq.Dial(context.Background(), eps, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func tctx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var queueSeq atomic.Int64

// queueName is a queue name unique to the test run (tests share the dev
// node, and -count reruns them against it).
func queueName(t *testing.T) string {
	r := strings.NewReplacer("/", "-", " ", "-", "#", "-")
	name := r.Replace(t.Name())
	if len(name) > 60 {
		name = name[:60]
	}
	return fmt.Sprintf("%s-%d", name, queueSeq.Add(1))
}

func createQueue(t *testing.T, c *quorumq.Client, name string, attrs quorumq.QueueAttributes) *quorumq.Queue {
	t.Helper()
	if _, err := c.CreateQueue(tctx(t, 10*time.Second), name, attrs, nil); err != nil {
		t.Fatalf("create queue %s: %v", name, err)
	}
	return c.Queue(name)
}

// checkFor polls cond until it holds or the timeout passes.
func checkFor(t *testing.T, timeout, every time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		<-time.After(every)
	}
}

// calls counts the RPC attempts per method (short name, "SendMessage").
type calls struct {
	mu sync.Mutex
	n  map[string]int
	// before, when set, runs before each attempt; it may block.
	before atomic.Pointer[func(method string)]
}

func (c *calls) option() quorumq.Option {
	c.n = map[string]int{}
	return quorumq.WithDialOptions(grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			short := method[strings.LastIndex(method, "/")+1:]
			c.mu.Lock()
			c.n[short]++
			c.mu.Unlock()
			if f := c.before.Load(); f != nil {
				(*f)(short)
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}))
}

func (c *calls) count(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[method]
}

// stats returns the queue's counts.
func stats(ctx context.Context, c *quorumq.Client, name string) (quorumq.QueueStats, error) {
	info, err := c.GetQueue(ctx, name)
	if err != nil {
		return quorumq.QueueStats{}, err
	}
	return info.Stats, nil
}

// drainQueue receives and deletes everything visible, returning the bodies.
func drainQueue(t *testing.T, q *quorumq.Queue) []string {
	t.Helper()
	var bodies []string
	for {
		msgs, err := q.Receive(tctx(t, 10*time.Second), quorumq.MaxMessages(100), quorumq.WaitTime(0))
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			return bodies
		}
		for _, m := range msgs {
			bodies = append(bodies, m.Body)
			if err := m.Delete(tctx(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

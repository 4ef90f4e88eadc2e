package servertest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server/node"
	"github.com/quorumq/quorumq/server/shardserver"
)

// FakeClock is the leader clock of a test node: tests move time by hand.
type FakeClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewFakeClock returns a clock stopped at a fixed instant.
func NewFakeClock() *FakeClock { return &FakeClock{now: time.UnixMilli(1_800_000_000_000)} }

// Now returns the clock's time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock on by d.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Node is a started test node with a queue client on its gRPC listener.
type Node struct {
	*node.Node
	Client qv1.QueueServiceClient
	Base   string // http://host:port
}

// NodeOpts adjusts StartNode.
type NodeOpts struct {
	Clock  func() time.Time
	Shards int // Raft groups (default 1)
}

// StartNode starts a single-node cluster on loopback with its data in a
// temporary directory, and waits for its leader.
func StartNode(t *testing.T, o NodeOpts) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := node.Config{
		DataDir:  t.TempDir(),
		HTTPAddr: "127.0.0.1:0",
		GRPCAddr: "127.0.0.1:0",
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Server:   shardserver.Config{Now: o.Clock, HousekeepingInterval: 20 * time.Millisecond},
		Shards:   o.Shards,
	}
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Stop(sctx); err != nil {
			t.Errorf("stop node: %v", err)
		}
	})
	if err := n.WaitReady(ctx); err != nil {
		t.Fatalf("wait ready: %v", err)
	}
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &Node{Node: n, Client: qv1.NewQueueServiceClient(conn), Base: "http://" + n.HTTPAddr()}
}

// Ctx is a context for one call of a test, cancelled when the test ends.
func Ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ReasonOf returns the ErrorInfo reason and metadata of a gRPC error.
func ReasonOf(err error) (codes.Code, string, map[string]string) {
	st, ok := status.FromError(err)
	if !ok {
		return codes.Unknown, "", nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return st.Code(), info.GetReason(), info.GetMetadata()
		}
	}
	return st.Code(), "", nil
}

// WantReason fails the test unless err has code and ErrorInfo reason.
func WantReason(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	c, r, _ := ReasonOf(err)
	if c != code || r != reason {
		t.Fatalf("got %v (code %v reason %q), want code %v reason %q", err, c, r, code, reason)
	}
}

// CheckFor polls cond until it holds or the timeout passes.
func CheckFor(t *testing.T, timeout, every time.Duration, cond func() error) {
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

// ErrNotYet is what a CheckFor condition returns while it waits.
var ErrNotYet = errors.New("not yet")

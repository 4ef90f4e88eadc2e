package sqs

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

// redriver is a QueueService whose RedriveMessages moves batches from a
// fixed backlog, or blocks until its call ends when block is set.
type redriver struct {
	qv1.QueueServiceClient
	mu      sync.Mutex
	backlog int64
	block   bool
	tenants []string // the principal of each call
}

func (r *redriver) GetQueue(context.Context, *qv1.GetQueueRequest, ...grpc.CallOption) (*qv1.GetQueueResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &qv1.GetQueueResponse{Queue: &qv1.Queue{Stats: &qv1.QueueStats{Visible: r.backlog}}}, nil
}

func (r *redriver) RedriveMessages(ctx context.Context, req *qv1.RedriveMessagesRequest, _ ...grpc.CallOption) (*qv1.RedriveMessagesResponse, error) {
	md, _ := metadata.FromOutgoingContext(ctx)
	r.mu.Lock()
	r.tenants = append(r.tenants, md.Get(mdTenant)...)
	block := r.block
	n := min(r.backlog, int64(req.GetMaxMessages()))
	r.backlog -= n
	r.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &qv1.RedriveMessagesResponse{Moved: n}, nil
}

func taskCall(t *testing.T, h *Handler) *call {
	p := &server.Principal{Tenant: "acme", Scopes: map[string]bool{server.ScopeQueuesAdmin: true}}
	return &call{h: h, ctx: withPrincipal(context.Background(), p), tenant: "acme", host: "h", jsonAPI: true}
}

func listTasks(t *testing.T, c *call) []moveTaskOut {
	t.Helper()
	out, err := listMessageMoveTasks(c, []byte(`{"SourceArn":"arn:aws:sqs:us-east-1:acme:dlq","MaxResults":10}`))
	if err != nil {
		t.Fatal(err)
	}
	return out.(listMoveOut).Results
}

// waitStatus polls the newest task's status (a task runs on its own
// goroutine) until it is want or the deadline passes.
func waitStatus(t *testing.T, c *call, want string) moveTaskOut {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		l := listTasks(t, c)
		if len(l) > 0 && l[0].Status == want {
			return l[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("task status %+v, want %s", l, want)
		}
		<-time.After(10 * time.Millisecond)
	}
}

func TestMoveTaskCompletes(t *testing.T) {
	r := &redriver{backlog: 7}
	h, err := New(Config{Client: r, Auth: DevAuthenticator{}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c := taskCall(t, h)
	out, err := startMessageMoveTask(c, []byte(`{"SourceArn":"arn:aws:sqs:us-east-1:acme:dlq","MaxNumberOfMessagesPerSecond":5}`))
	if err != nil {
		t.Fatal(err)
	}
	done := waitStatus(t, c, "COMPLETED")
	if done.ApproximateNumberOfMessagesMoved != 7 || done.ApproximateNumberOfMessagesToMove != 7 || done.TaskHandle != "" ||
		done.MaxNumberOfMessagesPerSecond != 5 {
		t.Fatalf("completed task %+v", done)
	}
	r.mu.Lock()
	for _, tenant := range r.tenants {
		if tenant != "acme" {
			t.Errorf("a redrive ran as tenant %q, want the starter's", tenant)
		}
	}
	r.mu.Unlock()
	b, _ := json.Marshal(map[string]string{"TaskHandle": out.(startMoveOut).TaskHandle})
	if _, err := cancelMessageMoveTask(c, b); asAPIError(err).code != "ResourceNotFoundException" {
		t.Fatalf("cancel a completed task: %v", err)
	}
	// Another tenant neither sees nor cancels it.
	other := taskCall(t, h)
	other.tenant = "other"
	if _, err := cancelMessageMoveTask(other, b); asAPIError(err).code != "ResourceNotFoundException" {
		t.Fatalf("another tenant's cancel: %v", err)
	}
}

func TestMoveTaskCancelAndClose(t *testing.T) {
	r := &redriver{backlog: 100, block: true}
	h, err := New(Config{Client: r, Auth: DevAuthenticator{}})
	if err != nil {
		t.Fatal(err)
	}
	c := taskCall(t, h)
	out, err := startMessageMoveTask(c, []byte(`{"SourceArn":"arn:aws:sqs:us-east-1:acme:dlq"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := startMessageMoveTask(c, []byte(`{"SourceArn":"arn:aws:sqs:us-east-1:acme:dlq"}`)); asAPIError(err).shape != "UnsupportedOperation" {
		t.Fatalf("a second task on the same source: %v", err)
	}
	b, _ := json.Marshal(map[string]string{"TaskHandle": out.(startMoveOut).TaskHandle})
	if _, err := cancelMessageMoveTask(c, b); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, "CANCELLED")

	// Close ends a running task too, and waits for it.
	if _, err := startMessageMoveTask(c, []byte(`{"SourceArn":"arn:aws:sqs:us-east-1:acme:dlq"}`)); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if l := listTasks(t, c); l[0].Status != "CANCELLED" {
		t.Fatalf("after Close: %+v", l[0])
	}
}

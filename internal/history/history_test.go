package history

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

// t0 is the start of an interval.
var t0 = time.Unix(1_800_000_000, 0).UTC()

func counts(bs []Bucket, k Kind) []int64 {
	out := make([]int64, len(bs))
	for i, b := range bs {
		out[i] = b.Counts[k]
	}
	return out
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRingBuckets(t *testing.T) {
	r := New(0)
	r.Add(t0, "acme", "jobs", Sent, 3)
	r.Add(t0.Add(5*time.Second), "acme", "jobs", Sent, 2)
	r.Add(t0.Add(10*time.Second), "acme", "jobs", Received, 4)
	r.Add(t0.Add(25*time.Second), "acme", "mail", Deleted, 1)
	r.Add(t0.Add(25*time.Second), "other", "jobs", Sent, 100) // another tenant
	r.Add(t0, "acme", "jobs", Sent, 0)                        // nothing

	now := t0.Add(27 * time.Second)
	total, per := r.Query(now, "acme", "", 4, true)
	if len(total) != 4 || !total[0].Start.Equal(t0.Add(-10*time.Second)) || !total[3].Start.Equal(t0.Add(20*time.Second)) {
		t.Fatalf("window: %+v", total)
	}
	if total[3].Length != 7*time.Second || total[2].Length != Interval {
		t.Errorf("lengths %v %v, want 7s (current, partial) and 10s", total[3].Length, total[2].Length)
	}
	if got := counts(total, Sent); !equal(got, []int64{0, 5, 0, 0}) {
		t.Errorf("sent %v", got)
	}
	if got := counts(total, Received); !equal(got, []int64{0, 0, 4, 0}) {
		t.Errorf("received %v", got)
	}
	if got := counts(total, Deleted); !equal(got, []int64{0, 0, 0, 1}) {
		t.Errorf("deleted %v", got)
	}
	if len(per) != 2 || per[0].Queue != "jobs" || per[1].Queue != "mail" {
		t.Fatalf("per queue (busiest first): %+v", per)
	}
	if got := counts(per[1].Buckets, Deleted); !equal(got, []int64{0, 0, 0, 1}) {
		t.Errorf("mail deleted %v", got)
	}

	only, per := r.Query(now, "acme", "mail", 4, false)
	if per != nil || !equal(counts(only, Sent), []int64{0, 0, 0, 0}) || !equal(counts(only, Deleted), []int64{0, 0, 0, 1}) {
		t.Errorf("queue filter: %+v %+v", only, per)
	}
}

// An hour later the ring has reused every slot: old counts must not show
// up in the new window.
func TestRingWrapsAfterAnHour(t *testing.T) {
	r := New(0)
	r.Add(t0, "acme", "jobs", Sent, 7)
	later := t0.Add(Buckets * Interval)
	r.Add(later, "acme", "jobs", Sent, 1)
	total, _ := r.Query(later, "acme", "", 0, false)
	if len(total) != Buckets {
		t.Fatalf("%d buckets, want %d", len(total), Buckets)
	}
	var sum int64
	for _, b := range total {
		sum += b.Counts[Sent]
	}
	if sum != 1 || total[Buckets-1].Counts[Sent] != 1 {
		t.Errorf("after an hour: sum %d, last %d; want 1, 1", sum, total[Buckets-1].Counts[Sent])
	}
	// A series idle for longer than the window is left out.
	if _, per := r.Query(later.Add(2*Buckets*Interval), "acme", "", 10, true); len(per) != 0 {
		t.Errorf("idle series still listed: %+v", per)
	}
}

func TestRingCapsSeries(t *testing.T) {
	r := New(2)
	r.Add(t0, "acme", "a", Sent, 1)
	r.Add(t0, "acme", "b", Sent, 1)
	r.Add(t0, "acme", "c", Sent, 5)
	r.Add(t0, "acme", "d", Sent, 1)
	if len(r.series) != 3 {
		t.Errorf("%d series, want 2 + the tenant's %s", len(r.series), OtherQueue)
	}
	_, per := r.Query(t0, "acme", "", 1, true)
	if len(per) != 3 || per[0].Queue != OtherQueue || per[0].Buckets[0].Counts[Sent] != 6 {
		t.Errorf("per queue: %+v", per)
	}
}

func withPrincipal(scopes ...string) context.Context {
	p := &server.Principal{Tenant: "acme", Scopes: map[string]bool{}}
	for _, s := range scopes {
		p.Scopes[s] = true
	}
	// The principal reaches a service only through the authenticating
	// interceptor: run it with an authenticator that returns p.
	var out context.Context
	icpt := server.UnaryInterceptor(authFunc(func(context.Context) (*server.Principal, error) { return p, nil }), nil)
	_, _ = icpt(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/quorumq.v1.QueueService/GetQueue"},
		func(ctx context.Context, _ any) (any, error) { out = ctx; return nil, nil })
	return out
}

type authFunc func(context.Context) (*server.Principal, error)

func (f authFunc) Authenticate(ctx context.Context) (*server.Principal, error) { return f(ctx) }

func TestInterceptorCountsAnswers(t *testing.T) {
	r := New(0)
	now := func() time.Time { return t0 }
	icpt := Interceptor(r, now)
	ctx := withPrincipal(server.ScopeMessagesSend)
	call := func(req, resp any, err error) {
		t.Helper()
		_, _ = icpt(ctx, req, &grpc.UnaryServerInfo{}, func(context.Context, any) (any, error) { return resp, err })
	}
	call(&qv1.SendMessageRequest{Queue: "jobs"}, &qv1.SendMessageResponse{}, nil)
	call(&qv1.SendMessageBatchRequest{Queue: "jobs"}, &qv1.SendMessageBatchResponse{
		Successful: make([]*qv1.SendMessageBatchResult, 3), Failed: make([]*qv1.BatchResultError, 2)}, nil)
	call(&qv1.SendMessageRequest{Queue: "jobs"}, nil, status.Error(codes.NotFound, "no")) // failed: not counted
	call(&qv1.ReceiveMessagesRequest{Queue: "jobs"}, &qv1.ReceiveMessagesResponse{Messages: make([]*qv1.ReceivedMessage, 2)}, nil)
	call(&qv1.DeleteMessageRequest{Queue: "jobs"}, &qv1.DeleteMessageResponse{}, nil)
	call(&qv1.DeleteMessageBatchRequest{Queue: "jobs"}, &qv1.DeleteMessageBatchResponse{Successful: make([]*qv1.BatchResultOk, 1)}, nil)
	call(&qv1.GetQueueRequest{Name: "jobs"}, &qv1.Queue{}, nil) // not a message call
	total, _ := r.Query(t0, "acme", "jobs", 1, false)
	if c := total[0].Counts; c != [kinds]int64{4, 2, 2} {
		t.Errorf("counts %v, want sent 4 received 2 deleted 2", c)
	}
	// Without a principal (a call the auth interceptor did not see) nothing counts.
	_, _ = icpt(context.Background(), &qv1.SendMessageRequest{Queue: "jobs"}, &grpc.UnaryServerInfo{},
		func(context.Context, any) (any, error) { return &qv1.SendMessageResponse{}, nil })
	if total, _ := r.Query(t0, "acme", "jobs", 1, false); total[0].Counts[Sent] != 4 {
		t.Errorf("an unauthenticated call was counted")
	}
}

func TestServiceScopesAndLimits(t *testing.T) {
	r := New(0)
	r.Add(t0, "acme", "jobs", Sent, 2)
	r.Add(t0, "beta", "jobs", Sent, 9)
	s := Service{Ring: r, Node: 7, Now: func() time.Time { return t0.Add(time.Second) }}

	resp, err := s.GetMessageHistory(withPrincipal(server.ScopeMessagesPeek), &qv1.GetMessageHistoryRequest{Points: 2, PerQueue: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetNodeId() != 7 || resp.GetInterval().AsDuration() != Interval || len(resp.GetTotal()) != 2 {
		t.Fatalf("resp %v", resp)
	}
	if got := resp.GetTotal()[1].GetSent(); got != 2 { // the caller's tenant only
		t.Errorf("sent %d, want 2", got)
	}
	if len(resp.GetQueues()) != 1 || resp.GetQueues()[0].GetQueue() != "jobs" {
		t.Errorf("queues %v", resp.GetQueues())
	}
	if resp, err := s.GetMessageHistory(withPrincipal(server.ScopeQueuesAdmin), &qv1.GetMessageHistoryRequest{}); err != nil || len(resp.GetTotal()) != Buckets {
		t.Errorf("default points: %d buckets, %v", len(resp.GetTotal()), err)
	}

	for name, tc := range map[string]struct {
		ctx  context.Context
		req  *qv1.GetMessageHistoryRequest
		code codes.Code
	}{
		"no read scope":       {withPrincipal(server.ScopeClusterAdmin), &qv1.GetMessageHistoryRequest{}, codes.PermissionDenied},
		"no principal":        {context.Background(), &qv1.GetMessageHistoryRequest{}, codes.Unauthenticated},
		"too many points":     {withPrincipal(server.ScopeMessagesPeek), &qv1.GetMessageHistoryRequest{Points: Buckets + 1}, codes.InvalidArgument},
		"per queue, too many": {withPrincipal(server.ScopeMessagesPeek), &qv1.GetMessageHistoryRequest{Points: 31, PerQueue: true}, codes.InvalidArgument},
	} {
		// The error goes through the node's interceptor, which maps it.
		icpt := server.UnaryInterceptor(server.DevAuthenticator{}, nil)
		_, err := icpt(context.Background(), tc.req, &grpc.UnaryServerInfo{FullMethod: "/x"}, func(context.Context, any) (any, error) {
			return s.GetMessageHistory(tc.ctx, tc.req)
		})
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", name, err, tc.code)
		}
	}
}

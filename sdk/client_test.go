package quorumq_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	quorumq "github.com/quorumq/quorumq/sdk"
	"github.com/quorumq/quorumq/sdk/internal/testcluster"
	"github.com/quorumq/quorumq/server/auth"
)

// Server errors come back as *Error values that match their sentinels.
func TestTypedErrors(t *testing.T) {
	var cnt calls
	c := dial(t, endpoints, cnt.option())
	ctx := tctx(t, 30*time.Second)
	name := queueName(t)
	q := createQueue(t, c, name, quorumq.QueueAttributes{VisibilityTimeout: time.Minute, MaxMessageSize: 1024})

	_, err := c.GetQueue(ctx, "missing")
	if !errors.Is(err, quorumq.ErrQueueNotFound) {
		t.Errorf("get missing queue: %v, want ErrQueueNotFound", err)
	}
	if status.Code(err) != codes.NotFound {
		t.Errorf("status.Code = %v, want NotFound", status.Code(err))
	}
	if _, err := c.Queue("missing").Send(ctx, quorumq.OutgoingMessage{Body: "x"}); !errors.Is(err, quorumq.ErrQueueNotFound) {
		t.Errorf("send to missing queue: %v", err)
	}

	_, err = c.CreateQueue(ctx, name, quorumq.QueueAttributes{VisibilityTimeout: 2 * time.Minute}, nil)
	if !errors.Is(err, quorumq.ErrQueueExists) {
		t.Errorf("create with other attributes: %v, want ErrQueueExists", err)
	}

	_, err = q.Send(ctx, quorumq.OutgoingMessage{Body: strings.Repeat("x", 2048)})
	if !errors.Is(err, quorumq.ErrMessageTooLarge) || !errors.Is(err, quorumq.ErrInvalidArgument) {
		t.Errorf("oversized send: %v, want ErrMessageTooLarge and ErrInvalidArgument", err)
	}

	_, err = q.Send(ctx, quorumq.OutgoingMessage{Body: "x", Delay: 30 * 24 * time.Hour})
	var qe *quorumq.Error
	if !errors.Is(err, quorumq.ErrInvalidArgument) || !errors.As(err, &qe) || qe.Field != "delay" {
		t.Errorf("send with a month's delay: %v (field %q), want ErrInvalidArgument on delay", err, fieldOf(err))
	}

	if err := q.Delete(ctx, "garbage"); !errors.Is(err, quorumq.ErrInvalidReceipt) {
		t.Errorf("delete with a garbage handle: %v, want ErrInvalidReceipt", err)
	}

	// A handle superseded by a later receive is stale.
	if _, err := q.Send(ctx, quorumq.OutgoingMessage{Body: "stale"}); err != nil {
		t.Fatal(err)
	}
	first, err := q.Receive(ctx, quorumq.VisibilityTimeout(0), quorumq.WaitTime(time.Second))
	if err != nil || len(first) != 1 {
		t.Fatalf("receive: %v %d", err, len(first))
	}
	second, err := q.Receive(ctx, quorumq.WaitTime(time.Second))
	if err != nil || len(second) != 1 {
		t.Fatalf("receive again: %v %d", err, len(second))
	}
	if err := first[0].Delete(ctx); !errors.Is(err, quorumq.ErrStaleReceipt) {
		t.Errorf("delete with a superseded handle: %v, want ErrStaleReceipt", err)
	}
	if err := second[0].Delete(ctx); err != nil {
		t.Errorf("delete with the current handle: %v", err)
	}

	// Batch entries fail on their own, with typed errors.
	res, err := q.SendBatch(ctx, []quorumq.OutgoingMessage{{Body: "ok"}, {Body: strings.Repeat("y", 4096)}})
	var be *quorumq.BatchError
	if !errors.As(err, &be) || be.Failed != 1 || be.Errors[0] != nil || !errors.Is(be.Errors[1], quorumq.ErrMessageTooLarge) {
		t.Errorf("batch with one oversized entry: %v", err)
	}
	if !errors.Is(err, quorumq.ErrMessageTooLarge) || res[0].MessageID == "" {
		t.Errorf("batch error does not unwrap to its entries, or the good entry has no id: %v %+v", err, res)
	}

	// None of these non-retryable failures was retried.
	for m, want := range map[string]int{"GetQueue": 1, "CreateQueue": 2, "DeleteMessage": 3} {
		if n := cnt.count(m); n != want {
			t.Errorf("%s called %d times, want %d", m, n, want)
		}
	}
}

func fieldOf(err error) string {
	var qe *quorumq.Error
	if errors.As(err, &qe) {
		return qe.Field
	}
	return ""
}

// A token source is asked per call; the server's auth answers map to
// ErrUnauthenticated and ErrPermissionDenied.
func TestTokenSourceAndAuthErrors(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef-test-secret")
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{HS256SecretFile: file, ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	cl := startCluster(t, testcluster.Config{Authenticator: a})
	mint := func(scope string) string {
		tok, err := auth.Mint("HS256", secret, "", jwt.MapClaims{"tenant": "acme", "scope": scope,
			"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	ctx := tctx(t, 30*time.Second)

	var asked sync.WaitGroup
	admin := mint("queues:admin messages:send messages:receive")
	asked.Add(1)
	var once sync.Once
	c := dial(t, cl.Endpoints(), quorumq.WithTokenSource(func(context.Context) (string, error) {
		once.Do(asked.Done)
		return admin, nil
	}))
	q := createQueue(t, c, "secured", quorumq.QueueAttributes{})
	if _, err := q.Send(ctx, quorumq.OutgoingMessage{Body: "hi"}); err != nil {
		t.Fatalf("send with a good token: %v", err)
	}
	asked.Wait()

	anon := dial(t, cl.Endpoints())
	if _, err := anon.GetQueue(ctx, "secured"); !errors.Is(err, quorumq.ErrUnauthenticated) {
		t.Errorf("no token: %v, want ErrUnauthenticated", err)
	}
	reader := dial(t, cl.Endpoints(), quorumq.WithTokenSource(quorumq.StaticToken(mint("messages:receive"))))
	if _, err := reader.Queue("secured").Send(ctx, quorumq.OutgoingMessage{Body: "x"}); !errors.Is(err, quorumq.ErrPermissionDenied) {
		t.Errorf("send without the scope: %v, want ErrPermissionDenied", err)
	}
	failing := dial(t, cl.Endpoints(), quorumq.WithTokenSource(func(context.Context) (string, error) {
		return "", errors.New("idp down")
	}))
	if _, err := failing.GetQueue(ctx, "secured"); err == nil || !strings.Contains(err.Error(), "idp down") {
		t.Errorf("token source failure: %v", err)
	}
}

// fakeServer is a QueueService whose answers a test scripts.
type fakeServer struct {
	qv1.UnimplementedQueueServiceServer
	send    func(context.Context, *qv1.SendMessageRequest) (*qv1.SendMessageResponse, error)
	receive func(context.Context, *qv1.ReceiveMessagesRequest) (*qv1.ReceiveMessagesResponse, error)
	changes func(context.Context, *qv1.ChangeMessageVisibilityBatchRequest) (*qv1.ChangeMessageVisibilityBatchResponse, error)
	nacks   func(context.Context, *qv1.NackMessageBatchRequest) (*qv1.NackMessageBatchResponse, error)
	deletes func(context.Context, *qv1.DeleteMessageBatchRequest) (*qv1.DeleteMessageBatchResponse, error)
	purge   func(context.Context, *qv1.PurgeQueueRequest) (*qv1.PurgeQueueResponse, error)
	batch   func(context.Context, *qv1.SendMessageBatchRequest) (*qv1.SendMessageBatchResponse, error)
}

func (f *fakeServer) SendMessageBatch(ctx context.Context, r *qv1.SendMessageBatchRequest) (*qv1.SendMessageBatchResponse, error) {
	return f.batch(ctx, r)
}

func (f *fakeServer) DeleteMessageBatch(ctx context.Context, r *qv1.DeleteMessageBatchRequest) (*qv1.DeleteMessageBatchResponse, error) {
	return f.deletes(ctx, r)
}

func (f *fakeServer) PurgeQueue(ctx context.Context, r *qv1.PurgeQueueRequest) (*qv1.PurgeQueueResponse, error) {
	return f.purge(ctx, r)
}

func (f *fakeServer) ChangeMessageVisibilityBatch(ctx context.Context, r *qv1.ChangeMessageVisibilityBatchRequest) (*qv1.ChangeMessageVisibilityBatchResponse, error) {
	return f.changes(ctx, r)
}

func (f *fakeServer) NackMessageBatch(ctx context.Context, r *qv1.NackMessageBatchRequest) (*qv1.NackMessageBatchResponse, error) {
	return f.nacks(ctx, r)
}

func (f *fakeServer) SendMessage(ctx context.Context, r *qv1.SendMessageRequest) (*qv1.SendMessageResponse, error) {
	return f.send(ctx, r)
}

func (f *fakeServer) ReceiveMessages(ctx context.Context, r *qv1.ReceiveMessagesRequest) (*qv1.ReceiveMessagesResponse, error) {
	return f.receive(ctx, r)
}

func startFake(t *testing.T, f *fakeServer) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	qv1.RegisterQueueServiceServer(s, f)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

func reasonStatus(code codes.Code, reason string, retryDelay time.Duration) error {
	st := status.New(code, strings.ToLower(reason))
	info := &errdetails.ErrorInfo{Reason: reason, Domain: quorumq.ErrorDomain}
	var err error
	if retryDelay > 0 {
		st, err = st.WithDetails(info, &errdetails.RetryInfo{RetryDelay: durationpb.New(retryDelay)})
	} else {
		st, err = st.WithDetails(info)
	}
	if err != nil {
		panic(err)
	}
	return st.Err()
}

// Retries: UNAVAILABLE reasons are retried with the same idempotency key,
// RESOURCE_EXHAUSTED after the server's retry delay, and INVALID_ARGUMENT
// not at all.
func TestRetries(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	var attempts []time.Time
	script := []error{
		reasonStatus(codes.Unavailable, quorumq.ReasonNotLeader, 0),
		reasonStatus(codes.Unavailable, quorumq.ReasonNoQuorum, 0),
		reasonStatus(codes.Unavailable, quorumq.ReasonLeadershipLost, 0),
		reasonStatus(codes.ResourceExhausted, quorumq.ReasonQuotaExceeded, 300*time.Millisecond),
		nil,
	}
	f := &fakeServer{send: func(_ context.Context, r *qv1.SendMessageRequest) (*qv1.SendMessageResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, r.GetIdempotencyKey())
		attempts = append(attempts, time.Now())
		if r.GetBody() == "bad" {
			return nil, reasonStatus(codes.InvalidArgument, quorumq.ReasonInvalidArgument, 0)
		}
		if err := script[0]; err != nil {
			script = script[1:]
			return nil, err
		}
		return &qv1.SendMessageResponse{MessageId: "m1", Sequence: 1}, nil
	}}
	addr := startFake(t, f)
	c := dial(t, []string{addr}, quorumq.WithRetryPolicy(quorumq.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}))
	ctx := tctx(t, 30*time.Second)

	res, err := c.Queue("q").Send(ctx, quorumq.OutgoingMessage{Body: "hello"})
	if err != nil || res.MessageID != "m1" {
		t.Fatalf("send: %v %+v", err, res)
	}
	mu.Lock()
	if len(keys) != 5 {
		t.Fatalf("%d attempts, want 5", len(keys))
	}
	for _, k := range keys {
		if k == "" || k != keys[0] {
			t.Fatalf("idempotency keys across retries: %q", keys)
		}
	}
	if gap := attempts[4].Sub(attempts[3]); gap < 300*time.Millisecond {
		t.Errorf("retry after QUOTA_EXCEEDED came %v later, want at least the 300ms retry delay", gap)
	}
	keys = nil
	mu.Unlock()

	// A second send has a key of its own.
	if _, err := c.Queue("q").Send(ctx, quorumq.OutgoingMessage{Body: "again"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Queue("q").Send(ctx, quorumq.OutgoingMessage{Body: "bad"})
	if !errors.Is(err, quorumq.ErrInvalidArgument) {
		t.Errorf("bad send: %v", err)
	}
	mu.Lock()
	if len(keys) != 2 || keys[0] == keys[1] {
		t.Errorf("attempts of two sends (one bad, not retried): keys %q", keys)
	}
	mu.Unlock()

	// Retries end with the policy's attempts, as ErrUnavailable.
	f2 := &fakeServer{send: func(context.Context, *qv1.SendMessageRequest) (*qv1.SendMessageResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, "x")
		return nil, reasonStatus(codes.Unavailable, quorumq.ReasonShuttingDown, 0)
	}}
	few := dial(t, []string{startFake(t, f2)}, quorumq.WithRetryPolicy(quorumq.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond}))
	mu.Lock()
	keys = nil
	mu.Unlock()
	if _, err := few.Queue("q").Send(ctx, quorumq.OutgoingMessage{Body: "x"}); !errors.Is(err, quorumq.ErrUnavailable) {
		t.Errorf("send to a node shutting down: %v, want ErrUnavailable", err)
	}
	mu.Lock()
	if len(keys) != 3 {
		t.Errorf("%d attempts, want 3", len(keys))
	}
	mu.Unlock()
}

// A retried receive carries the same receive_attempt_id.
func TestReceiveRetryReusesAttemptID(t *testing.T) {
	var mu sync.Mutex
	var ids []string
	f := &fakeServer{receive: func(_ context.Context, r *qv1.ReceiveMessagesRequest) (*qv1.ReceiveMessagesResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		ids = append(ids, r.GetReceiveAttemptId())
		if len(ids) < 3 {
			return nil, reasonStatus(codes.Unavailable, quorumq.ReasonNoQuorum, 0)
		}
		return &qv1.ReceiveMessagesResponse{Messages: []*qv1.ReceivedMessage{{MessageId: "m", ReceiptHandle: "h", Body: "b", ReceiveCount: 1}}}, nil
	}}
	c := dial(t, []string{startFake(t, f)}, quorumq.WithRetryPolicy(quorumq.RetryPolicy{InitialBackoff: time.Millisecond}))
	msgs, err := c.Queue("q").Receive(tctx(t, 10*time.Second), quorumq.WaitTime(0))
	if err != nil || len(msgs) != 1 || msgs[0].Body != "b" {
		t.Fatalf("receive: %v %v", err, msgs)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ids) != 3 || ids[0] == "" || ids[0] != ids[1] || ids[1] != ids[2] {
		t.Errorf("receive attempt ids across retries: %q", ids)
	}
}

// A dead endpoint is failed over: the call succeeds through the next one.
func TestFailover(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	var cnt calls
	c := dial(t, []string{dead, endpoints[0]}, cnt.option(), quorumq.WithRetryPolicy(quorumq.RetryPolicy{InitialBackoff: time.Millisecond}))
	ctx := tctx(t, 20*time.Second)
	for range 4 {
		if _, err := c.ListQueues(ctx, ""); err != nil {
			t.Fatalf("list through a dead and a live endpoint: %v", err)
		}
	}
	// The first call may try the dead endpoint once; after that it is
	// skipped while marked down.
	if n := cnt.count("ListQueues"); n > 5 {
		t.Errorf("%d attempts for 4 calls", n)
	}
}

// A quota without a retry delay (queue count, stored bytes) does not clear
// by waiting: it fails at once with ErrQuotaExceeded.
func TestQuotaWithoutRetryDelayNotRetried(t *testing.T) {
	var mu sync.Mutex
	attempts := 0
	f := &fakeServer{send: func(context.Context, *qv1.SendMessageRequest) (*qv1.SendMessageResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		return nil, reasonStatus(codes.ResourceExhausted, quorumq.ReasonQuotaExceeded, 0)
	}}
	c := dial(t, []string{startFake(t, f)})
	if _, err := c.Queue("q").Send(tctx(t, 10*time.Second), quorumq.OutgoingMessage{Body: "x"}); !errors.Is(err, quorumq.ErrQuotaExceeded) {
		t.Errorf("send over a stored-bytes quota: %v, want ErrQuotaExceeded", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts != 1 {
		t.Errorf("%d attempts, want 1", attempts)
	}
}

// Entries of a batch refused by the send-rate quota carry a retry delay:
// the SDK sends those entries again (with their idempotency keys) after
// the delay, and only those.
func TestBatchEntriesRetriedAfterTheirDelay(t *testing.T) {
	const delay = 150 * time.Millisecond
	var mu sync.Mutex
	var calls [][]string
	var times []time.Time
	f := &fakeServer{batch: func(_ context.Context, r *qv1.SendMessageBatchRequest) (*qv1.SendMessageBatchResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		var ids []string
		resp := &qv1.SendMessageBatchResponse{}
		for _, e := range r.GetEntries() {
			ids = append(ids, e.GetId())
			if len(calls) == 0 && e.GetId() != "0" {
				resp.Failed = append(resp.Failed, &qv1.BatchResultError{Id: e.GetId(), Code: "RESOURCE_EXHAUSTED",
					Reason: quorumq.ReasonQuotaExceeded, Message: "over the send rate", RetryDelay: durationpb.New(delay)})
				continue
			}
			resp.Successful = append(resp.Successful, &qv1.SendMessageBatchResult{Id: e.GetId(), MessageId: "m" + e.GetId()})
		}
		calls = append(calls, ids)
		times = append(times, time.Now())
		return resp, nil
	}}
	c := dial(t, []string{startFake(t, f)}, quorumq.WithRetryPolicy(quorumq.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxAttempts: 3}))
	res, err := c.Queue("q").SendBatch(tctx(t, 10*time.Second), []quorumq.OutgoingMessage{{Body: "a"}, {Body: "b"}, {Body: "c"}})
	if err != nil {
		t.Fatalf("SendBatch: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 || strings.Join(calls[1], ",") != "1,2" {
		t.Fatalf("calls %v, want the refused entries 1,2 sent again once", calls)
	}
	if gap := times[1].Sub(times[0]); gap < delay {
		t.Errorf("retried after %v, before the retry delay %v", gap, delay)
	}
	for i, r := range res {
		if r.MessageID != fmt.Sprint("m", i) {
			t.Errorf("entry %d: %+v", i, r)
		}
	}
}

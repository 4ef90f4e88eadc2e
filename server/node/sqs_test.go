package node_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/node"
	"github.com/quorumq/quorumq/sqs"
)

// sqsCall posts an AWS JSON 1.0 request and returns the status, the
// x-amzn-query-error header and the decoded body.
func sqsCall(t *testing.T, addr, action, body string, hdr ...string) (int, string, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodPost, "http://"+addr+"/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", "AmazonSQS."+action)
	req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s: %d %s: %v", action, resp.StatusCode, b, err)
	}
	return resp.StatusCode, resp.Header.Get("x-amzn-query-error"), out
}

// An SQS call is traced like a gRPC call: the sqs.<Action> span is the
// parent of the QueueService server span, under which the proposal runs.
func TestSQSTraces(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	n := startNode(t, node.Config{TracerProvider: tp, SQSAddr: "127.0.0.1:0"})
	if err := n.WaitReady(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if st, _, out := sqsCall(t, n.SQSAddr(), "CreateQueue", `{"QueueName":"traced"}`); st != 200 {
		t.Fatalf("CreateQueue: %d %v", st, out)
	}
	st, _, out := sqsCall(t, n.SQSAddr(), "SendMessage", `{"QueueUrl":"http://`+n.SQSAddr()+`/default/traced","MessageBody":"hi"}`)
	if st != 200 {
		t.Fatalf("SendMessage: %d %v", st, out)
	}
	// The gRPC server span ends after its reply is written, so it may be
	// exported just after the SQS response reaches us.
	var root, rpc, propose *tracetest.SpanStub
	var spans tracetest.SpanStubs
	waitFor(t, func() error {
		root, rpc, propose = nil, nil, nil
		spans = exp.GetSpans()
		for i := range spans {
			s := &spans[i]
			switch {
			case s.Name == "sqs.SendMessage" && s.SpanKind == trace.SpanKindServer:
				root = s
			case s.Name == "quorumq.v1.QueueService/SendMessage" && s.SpanKind == trace.SpanKindServer:
				rpc = s
			case s.Name == "quorumq.propose":
				propose = s
			}
		}
		if root == nil || rpc == nil || propose == nil {
			return fmt.Errorf("spans: sqs %v, rpc server %v, propose %v", root != nil, rpc != nil, propose != nil)
		}
		return nil
	})
	tid := root.SpanContext.TraceID()
	if rpc.SpanContext.TraceID() != tid || propose.SpanContext.TraceID() != tid {
		t.Fatal("the gRPC and propose spans are not in the SQS request's trace")
	}
	// rpc server ← rpc client (in-process connection) ← sqs.SendMessage.
	var client *tracetest.SpanStub
	for i := range spans {
		if spans[i].SpanContext.SpanID() == rpc.Parent.SpanID() {
			client = &spans[i]
		}
	}
	if client == nil || client.Parent.SpanID() != root.SpanContext.SpanID() {
		t.Fatalf("the gRPC server span's parent is not a client span of the SQS span")
	}
}

type fixedSQSAuth struct {
	p   *server.Principal
	err error
}

func (a fixedSQSAuth) AuthenticateSQS(*http.Request, []byte) (*server.Principal, error) {
	return a.p, a.err
}

// With authentication configured the endpoint verifies SigV4 (an unsigned
// request is refused); a verifier's principal scopes every call to its
// tenant, and its refusals keep their SQS code and status.
func TestSQSAuthentication(t *testing.T) {
	n := startNode(t, node.Config{Authenticator: denyAll{}, SQSAddr: "127.0.0.1:0"})
	if err := n.WaitReady(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	st, qe, out := sqsCall(t, n.SQSAddr(), "ListQueues", `{}`)
	if st != 403 || qe != "MissingAuthenticationToken;Sender" || out["__type"] != "com.amazonaws.sqs#MissingAuthenticationToken" {
		t.Fatalf("unsigned request: %d %s %v", st, qe, out)
	}

	acme := &server.Principal{Tenant: "acme", Scopes: map[string]bool{server.ScopeQueuesAdmin: true, server.ScopeMessagesSend: true}}
	n2 := startNode(t, node.Config{Authenticator: denyAll{}, SQSAddr: "127.0.0.1:0", SQSAuthenticator: fixedSQSAuth{p: acme}, SQSRegion: "eu-west-1"})
	if err := n2.WaitReady(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	st, _, out = sqsCall(t, n2.SQSAddr(), "CreateQueue", `{"QueueName":"jobs"}`)
	if st != 200 || out["QueueUrl"] != "http://"+n2.SQSAddr()+"/acme/jobs" {
		t.Fatalf("CreateQueue as acme: %d %v", st, out)
	}
	st, _, out = sqsCall(t, n2.SQSAddr(), "GetQueueAttributes", `{"QueueUrl":"http://`+n2.SQSAddr()+`/acme/jobs","AttributeNames":["QueueArn"]}`)
	if st != 200 || out["Attributes"].(map[string]any)["QueueArn"] != "arn:aws:sqs:eu-west-1:acme:jobs" {
		t.Fatalf("QueueArn: %d %v", st, out)
	}
	// Another account's URL names no queue of the caller's.
	st, qe, _ = sqsCall(t, n2.SQSAddr(), "SendMessage", `{"QueueUrl":"http://`+n2.SQSAddr()+`/default/jobs","MessageBody":"x"}`)
	if st != 400 || qe != "AWS.SimpleQueueService.NonExistentQueue;Sender" {
		t.Fatalf("another account's queue: %d %s", st, qe)
	}
	// The principal's scopes apply: no messages:receive.
	st, qe, _ = sqsCall(t, n2.SQSAddr(), "ReceiveMessage", `{"QueueUrl":"http://`+n2.SQSAddr()+`/acme/jobs"}`)
	if st != 403 || qe != "AccessDenied;Sender" {
		t.Fatalf("receive without the scope: %d %s", st, qe)
	}

	n3 := startNode(t, node.Config{Authenticator: denyAll{}, SQSAddr: "127.0.0.1:0",
		SQSAuthenticator: fixedSQSAuth{err: &sqs.AuthError{Code: "SignatureDoesNotMatch", Message: "bad signature"}}})
	st, qe, out = sqsCall(t, n3.SQSAddr(), "ListQueues", `{}`)
	if st != 403 || qe != "SignatureDoesNotMatch;Sender" || out["message"] != "bad signature" {
		t.Fatalf("verifier refusal: %d %s %v", st, qe, out)
	}
}

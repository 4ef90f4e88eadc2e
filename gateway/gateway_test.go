package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func newTestHandler(t *testing.T, ready func() error) http.Handler {
	t.Helper()
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "quorumq_up 1\n") })
	h, err := New(context.Background(), Config{Conn: conn, Ready: ready, Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestProbesAndSpec(t *testing.T) {
	var notReady error = errors.New("no leader")
	h := newTestHandler(t, func() error { return notReady })
	if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, h, "/readyz"); code != 503 || !strings.Contains(body, "no leader") {
		t.Fatalf("/readyz while not ready = %d %q", code, body)
	}
	notReady = nil
	if code, _ := get(t, h, "/readyz"); code != 200 {
		t.Fatalf("/readyz when ready = %d", code)
	}
	code, body := get(t, h, "/openapi.json")
	var spec struct {
		Paths map[string]any `json:"paths"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &spec) != nil || spec.Paths["/v1/queues"] == nil {
		t.Fatalf("/openapi.json = %d, paths %v", code, spec.Paths)
	}
	if code, body := get(t, h, "/metrics"); code != 200 || !strings.Contains(body, "quorumq_up") {
		t.Fatalf("/metrics = %d %q", code, body)
	}
}

// restError is the JSON error body of the REST mapping.
type restError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details []struct {
		Type     string            `json:"@type"`
		Reason   string            `json:"reason"`
		Domain   string            `json:"domain"`
		Metadata map[string]string `json:"metadata"`
	} `json:"details"`
}

// reason returns the ErrorInfo reason and field of a REST error body.
func (e restError) reason() (reason, field string) {
	for _, d := range e.Details {
		if strings.HasSuffix(d.Type, "google.rpc.ErrorInfo") {
			return d.Reason, d.Metadata["field"]
		}
	}
	return "", ""
}

func newLimitedHandler(t *testing.T, lim limits) http.Handler {
	t.Helper()
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	h, err := newHandler(context.Background(), Config{Conn: conn}, lim)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// do serves one request and decodes its error body (if it is one).
func do(t *testing.T, h http.Handler, req *http.Request) (*httptest.ResponseRecorder, restError) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var e restError
	if rec.Code >= 300 {
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
			t.Fatalf("%s %s: %d with a body that is not JSON: %q", req.Method, req.URL, rec.Code, rec.Body.String())
		}
	}
	return rec, e
}

// failingReader fails the test if the handler reads the body.
type failingReader struct{ t *testing.T }

func (f failingReader) Read([]byte) (int, error) {
	f.t.Error("the body of an over-long request was read")
	return 0, io.ErrUnexpectedEOF
}

func TestBodyOverLimitIs413WithReason(t *testing.T) {
	h := newLimitedHandler(t, limits{body: 1024, grpc: 8 << 20})
	big := `{"body": "` + strings.Repeat("x", 2000) + `"}`
	cases := map[string]*http.Request{}
	// Declared length over the cap: refused before any of it is read.
	declared := httptest.NewRequest(http.MethodPost, "/v1/queues/q/messages", failingReader{t})
	declared.ContentLength = 1025
	cases["content-length"] = declared
	// Chunked (no length): the cap stops the decoder.
	chunked := httptest.NewRequest(http.MethodPost, "/v1/queues/q/messages", io.MultiReader(strings.NewReader(big)))
	chunked.ContentLength = -1
	cases["chunked"] = chunked
	// A small JSON value followed by more than the cap of padding: the
	// generated handler drains and ignores the rest, the edge must not.
	padded := httptest.NewRequest(http.MethodPost, "/v1/queues/q/messages",
		strings.NewReader(`{"body": "x"}`+strings.Repeat(" ", 2000)))
	padded.ContentLength = -1
	cases["padded"] = padded
	// PATCH reads its body whole (field mask from the body).
	patch := httptest.NewRequest(http.MethodPatch, "/v1/queues/q", strings.NewReader(big))
	patch.ContentLength = -1
	cases["patch"] = patch
	for name, req := range cases {
		rec, e := do(t, h, req)
		reason, _ := e.reason()
		if rec.Code != http.StatusRequestEntityTooLarge || reason != "MESSAGE_TOO_LARGE" || !strings.Contains(e.Message, "1024") {
			t.Errorf("%s: %d reason %q message %q, want 413 MESSAGE_TOO_LARGE", name, rec.Code, reason, e.Message)
		}
	}
}

func TestDefaultBodyLimitAdmitsLargestBatch(t *testing.T) {
	// 4 MiB of bodies over 100 entries, escaped by half, fits; the cap is
	// under the node's gRPC receive limit.
	if MaxBodyBytes < 6<<20 || MaxBodyBytes >= maxGRPCRequest {
		t.Fatalf("MaxBodyBytes = %d, want in [6 MiB, %d)", MaxBodyBytes, maxGRPCRequest)
	}
	h := newTestHandler(t, nil)
	req := httptest.NewRequest(http.MethodPost, "/v1/queues/q/messages:batchSend", failingReader{t})
	req.ContentLength = 300 << 20
	rec, e := do(t, h, req)
	if reason, _ := e.reason(); rec.Code != http.StatusRequestEntityTooLarge || reason != "MESSAGE_TOO_LARGE" {
		t.Fatalf("300 MiB declared: %d %q, want 413 MESSAGE_TOO_LARGE", rec.Code, reason)
	}
}

func TestRequestOverGRPCLimitIs413NotSent(t *testing.T) {
	// The body fits the REST cap but its protobuf form not the node's
	// receive limit: refused with 413, never RESOURCE_EXHAUSTED's 429.
	body := `{"body": "` + strings.Repeat("y", 200) + `"}`
	h := newLimitedHandler(t, limits{body: 1 << 20, grpc: 100})
	rec, e := do(t, h, httptest.NewRequest(http.MethodPost, "/v1/queues/q/messages", strings.NewReader(body)))
	if reason, _ := e.reason(); rec.Code != http.StatusRequestEntityTooLarge || reason != "MESSAGE_TOO_LARGE" {
		t.Fatalf("%d %q %q, want 413 MESSAGE_TOO_LARGE", rec.Code, reason, e.Message)
	}
	// Under the limit the same request is sent (and finds no node: 503).
	h = newLimitedHandler(t, limits{body: 1 << 20, grpc: 8 << 20})
	if rec, _ := do(t, h, httptest.NewRequest(http.MethodPost, "/v1/queues/q/messages", strings.NewReader(body))); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("request under the limits: %d %s, want 503 from the unreachable node", rec.Code, rec.Body.String())
	}
}

func TestTransportLimitIsNever429(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   int
		reason string
	}{
		// The transport's own refusal (no quorumq reason): not a quota.
		{status.Error(codes.ResourceExhausted, "grpc: received message larger than max (9000000 vs. 8388608)"), http.StatusInternalServerError, "INTERNAL"},
		// The server's quota keeps its 429.
		{withInfo(codes.ResourceExhausted, "QUOTA_EXCEEDED", "quota", nil, "").Err(), http.StatusTooManyRequests, "QUOTA_EXCEEDED"},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/v1/queues/q/messages:receive", nil)
		errorHandler(req.Context(), runtime.NewServeMux(), fieldMarshaler{jsonOptions}, rec, req, tc.err)
		var e restError
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		if reason, _ := e.reason(); rec.Code != tc.code || reason != tc.reason {
			t.Errorf("%v: %d %q, want %d %q", tc.err, rec.Code, reason, tc.code, tc.reason)
		}
	}
}

func TestUndecodableBodyIs400WithField(t *testing.T) {
	h := newTestHandler(t, nil)
	for _, tc := range []struct {
		method, path, body string
		field              string
	}{
		{http.MethodPost, "/v1/queues/q/messages", `{"body": "x",`, ""},
		{http.MethodPost, "/v1/queues/q/messages", `{"body": "x", "bogus": 1}`, "bogus"},
		{http.MethodPost, "/v1/queues/q/messages:receive", `{"maxMessages": 2, "waitTime": "soon"}`, "wait_time"},
		{http.MethodPost, "/v1/queues/q/messages:receive", "{\n  \"visibility_timeout\": 5\n}", "visibility_timeout"},
		{http.MethodPost, "/v1/queues/q/messages:batchSend",
			`{"entries": [{"id": "a", "body": "é"}, {"id": "b", "body": "x", "delay": "later"}]}`, "entries[1].delay"},
		{http.MethodPost, "/v1/queues", `{"name": "q", "attributes": {"deadLetter": {"maxReceiveCount": "many"}}}`, "attributes.dead_letter.max_receive_count"},
		{http.MethodPatch, "/v1/queues/q", `{"visibilityTimeout": "x"}`, "attributes.visibility_timeout"},
		{http.MethodPost, "/v1/queues/q/messages", `{"body": "x", "attributes": {"k": 1}}`, "attributes"},
	} {
		req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
		rec, e := do(t, h, req)
		reason, field := e.reason()
		if rec.Code != http.StatusBadRequest || reason != "INVALID_ARGUMENT" || field != tc.field {
			t.Errorf("%s %s %s: %d reason %q field %q (%s), want 400 INVALID_ARGUMENT field %q",
				tc.method, tc.path, tc.body, rec.Code, reason, field, e.Message, tc.field)
		}
	}
}

func TestRoutingErrors(t *testing.T) {
	h := newTestHandler(t, nil)
	for _, tc := range []struct {
		method, path string
		code         int
		allow        string
	}{
		{http.MethodGet, "/v1//queues", http.StatusNotFound, ""},
		{http.MethodPost, "/v1/queues//messages", http.StatusNotFound, ""},
		{http.MethodPost, "/v1/queues/q/../r/messages", http.StatusNotFound, ""},
		{http.MethodGet, "/v1", http.StatusNotFound, ""},
		{http.MethodGet, "/v1/nothing", http.StatusNotFound, ""},
		{http.MethodDelete, "/v1/queues", http.StatusMethodNotAllowed, "GET, POST"},
		{http.MethodPut, "/v1/queues/q", http.StatusMethodNotAllowed, "DELETE, GET, PATCH"},
		{http.MethodGet, "/v1/queues/q/messages:receive", http.StatusMethodNotAllowed, "POST"},
	} {
		rec, e := do(t, h, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.code || rec.Header().Get("Allow") != tc.allow || e.Message == "" {
			t.Errorf("%s %s: %d Allow %q body %q, want %d Allow %q", tc.method, tc.path,
				rec.Code, rec.Header().Get("Allow"), rec.Body.String(), tc.code, tc.allow)
		}
	}
}

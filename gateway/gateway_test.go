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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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

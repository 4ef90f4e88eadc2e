package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/quorumq/quorumq/raftnode"
)

// A production build (no chaos tag, as `make build` and `make test` build)
// refuses fault injection; a chaos build accepts it on loopback only.
func TestFaultInjectionNeedsChaosBuild(t *testing.T) {
	cfg := Config{FaultInjection: true, HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", DataDir: t.TempDir()}
	f, err := newFaultFilter(cfg)
	if !faultInjectionBuilt {
		if !errors.Is(err, ErrFaultInjectionUnavailable) || f != nil {
			t.Fatalf("production build: newFaultFilter = %v, %v; want ErrFaultInjectionUnavailable", f, err)
		}
		n, err := Start(context.Background(), cfg)
		if !errors.Is(err, ErrFaultInjectionUnavailable) {
			if n != nil {
				_ = n.Stop(context.Background())
			}
			t.Fatalf("production build: Start = %v; want ErrFaultInjectionUnavailable", err)
		}
		return
	}
	if err != nil || f == nil {
		t.Fatalf("chaos build: newFaultFilter = %v, %v; want a filter", f, err)
	}
	cfg.HTTPAddr = "0.0.0.0:8080"
	if _, err := newFaultFilter(cfg); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("chaos build on a non-loopback address: err = %v; want a loopback refusal", err)
	}
}

func TestFaultInjectionOffByDefault(t *testing.T) {
	f, err := newFaultFilter(Config{HTTPAddr: "0.0.0.0:8080"})
	if f != nil || err != nil {
		t.Fatalf("newFaultFilter without FaultInjection = %v, %v; want nil, nil", f, err)
	}
	next := http.NotFoundHandler()
	if h := faultHandler(nil, nil, next); h == nil {
		t.Fatal("faultHandler(nil) must pass through")
	}
	if faultDialOptions(nil, map[uint64]string{2: "x"}) != nil {
		t.Fatal("no dial options without a filter")
	}
}

func TestFaultHandler(t *testing.T) {
	f := raftnode.NewFaultFilter()
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	synced := 0
	h := faultHandler(f, func() error { synced++; return nil }, next)
	do := func(method, path, body, remote string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := do(http.MethodPost, FaultsPath, `{"blocked":[3,2]}`, "127.0.0.1:5000"); w.Code != http.StatusOK {
		t.Fatalf("POST: %d %s", w.Code, w.Body)
	}
	w := do(http.MethodGet, FaultsPath, "", "[::1]:5000")
	var s FaultState
	if err := json.Unmarshal(w.Body.Bytes(), &s); err != nil || !slices.Equal(s.Blocked, []uint64{2, 3}) {
		t.Fatalf("GET: %s (%v); want blocked [2 3]", w.Body, err)
	}
	if !f.Drop(2) || f.Drop(1) {
		t.Fatal("the filter must block exactly the posted peers")
	}
	if w := do(http.MethodPost, FaultsPath, `{"blocked":[]}`, "10.0.0.1:5000"); w.Code != http.StatusForbidden {
		t.Fatalf("non-loopback caller: %d; want 403", w.Code)
	}
	if w := do(http.MethodPost, FaultsPath, `{"blocked":`, "127.0.0.1:5000"); w.Code != http.StatusBadRequest {
		t.Fatalf("bad body: %d; want 400", w.Code)
	}
	if w := do(http.MethodGet, "/v1/queues", "", "127.0.0.1:5000"); w.Code != http.StatusTeapot {
		t.Fatalf("other paths must reach the gateway: %d", w.Code)
	}
	if w := do(http.MethodPost, FaultsPath, `{"blocked":[]}`, "127.0.0.1:5000"); w.Code != http.StatusOK || len(f.Blocked()) != 0 {
		t.Fatalf("heal: %d, blocked %v", w.Code, f.Blocked())
	}
	if w := do(http.MethodPost, FaultsSyncPath, "", "10.0.0.1:5000"); w.Code != http.StatusForbidden || synced != 0 {
		t.Fatalf("sync from a non-loopback caller: %d, synced %d; want 403 and no sync", w.Code, synced)
	}
	if w := do(http.MethodGet, FaultsSyncPath, "", "127.0.0.1:5000"); w.Code != http.StatusMethodNotAllowed || synced != 0 {
		t.Fatalf("GET sync: %d, synced %d; want 405 and no sync", w.Code, synced)
	}
	if w := do(http.MethodPost, FaultsSyncPath, "", "127.0.0.1:5000"); w.Code != http.StatusNoContent || synced != 1 {
		t.Fatalf("sync: %d, synced %d; want 204 and one sync", w.Code, synced)
	}
}

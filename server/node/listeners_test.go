package node_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/quorumq/quorumq/server/node"
)

// /metrics is served on its own listener only: the REST listener answers
// 404, so series naming every tenant's queues never reach API clients.
func TestMetricsOwnListener(t *testing.T) {
	n := startNode(t, node.Config{})
	get := func(addr string) (int, string) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(n.HTTPAddr()); code != http.StatusNotFound {
		t.Errorf("GET /metrics on the REST listener = %d, want 404", code)
	}
	if code, body := get(n.MetricsAddr()); code != http.StatusOK || !strings.Contains(body, "quorumq_raft_term") {
		t.Errorf("GET /metrics on the metrics listener = %d:\n%.500s", code, body)
	}
}

// The REST listener caps request headers at 64 KiB (net/http's default is
// 1 MiB).
func TestHTTPHeaderCap(t *testing.T) {
	n := startNode(t, node.Config{})
	req, err := http.NewRequest(http.MethodGet, "http://"+n.HTTPAddr()+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Big", strings.Repeat("a", 200<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("200 KiB of headers: %d, want 431", resp.StatusCode)
	}
	req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("16 KiB of headers: %d, want 200", resp.StatusCode)
	}
}

// /metrics carries the Go runtime and process collectors next to the
// node's own series.
func TestMetricsRuntimeCollectors(t *testing.T) {
	n := startNode(t, node.Config{})
	resp, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "process_open_fds"} {
		if !strings.Contains(string(b), "\n"+name+" ") {
			t.Errorf("/metrics has no %s", name)
		}
	}
}

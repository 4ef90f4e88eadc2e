package ui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRoute(t *testing.T) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "api "+r.URL.Path)
	})
	h := Route(next, Options{Auth: true})
	get := func(method, path string) *http.Response {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Result()
	}

	resp := get("GET", "/ui/")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `<main id="main"`) {
		t.Fatalf("GET /ui/: %d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
		t.Errorf("index Cache-Control %q, want no-cache", got)
	}
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Errorf("no CSP on the console: %q", resp.Header.Get("Content-Security-Policy"))
	}
	// The index names its hashed assets under /ui/assets/, which are served.
	asset := strings.SplitN(strings.SplitN(string(body), `src="/ui/assets/`, 2)[1], `"`, 2)[0]
	resp = get("GET", "/ui/assets/"+asset)
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("asset %s: %d cache %q", asset, resp.StatusCode, resp.Header.Get("Cache-Control"))
	}

	resp = get("GET", "/ui/config.json")
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "{\"auth\":true}\n" {
		t.Errorf("GET /ui/config.json: %d %q", resp.StatusCode, body)
	}
	if resp := get("GET", "/ui"); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d to %q, want 301 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := get("POST", "/ui/"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/: %d, want 405", resp.StatusCode)
	}
	if resp := get("GET", "/ui/assets/"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/assets/: %d, want 404 (no listing)", resp.StatusCode)
	}
	if resp := get("GET", "/ui/nope.js"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/nope.js: %d, want 404", resp.StatusCode)
	}
	// Everything else reaches next with its path as sent ("//" included).
	for _, p := range []string{"/v1/queues", "//v1/queues", "/uix", "/healthz"} {
		resp := get("GET", p)
		body, _ := io.ReadAll(resp.Body)
		if string(body) != "api "+p {
			t.Errorf("GET %s reached %q, want next", p, body)
		}
	}
}

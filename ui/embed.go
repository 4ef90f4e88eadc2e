// Package ui serves the web console: the Vite build of this directory
// (dist/, committed like generated code; `make generate` rebuilds it), embedded
// in the binary so `go build` needs no Node. The page talks only to the
// public REST API on the same listener.
package ui

import (
	"embed"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed all:dist
var dist embed.FS

// Prefix is where the console is served.
const Prefix = "/ui/"

// csp allows the page its own scripts and styles and nothing else; uPlot
// sets inline styles from script, which style-src 'unsafe-inline' covers.
const csp = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

// Options are what the page needs to know about the node before its first
// API call.
type Options struct {
	// Auth: calls need a bearer token (a node with --auth-*). The page then
	// asks for one first instead of calling the API and being refused.
	Auth bool
}

// Handler serves GET/HEAD under Prefix (and redirects "/ui" to it). Hashed
// assets are cached for good; index.html is revalidated, so a new binary's
// console is picked up on reload.
func Handler(opts Options) http.Handler {
	sub, err := fs.Sub(dist, "dist")
	if err != nil { // dist is embedded at build time: cannot happen
		panic(err)
	}
	files := http.StripPrefix(Prefix, http.FileServer(http.FS(sub)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Path == strings.TrimSuffix(Prefix, "/") {
			http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/") && r.URL.Path != Prefix {
			http.NotFound(w, r) // no directory listings
			return
		}
		h := w.Header()
		if r.URL.Path == Prefix+"config.json" {
			h.Set("Content-Type", "application/json")
			h.Set("Cache-Control", "no-store")
			_, _ = fmt.Fprintf(w, "{\"auth\":%t}\n", opts.Auth)
			return
		}
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if strings.HasPrefix(r.URL.Path, Prefix+"assets/") {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			h.Set("Cache-Control", "no-cache")
		}
		files.ServeHTTP(w, r)
	})
}

// Route sends requests for the console (Prefix and "/ui") to Handler and
// everything else to next, untouched: next keeps its own path handling.
func Route(next http.Handler, opts Options) http.Handler {
	console := Handler(opts)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == strings.TrimSuffix(Prefix, "/") || strings.HasPrefix(r.URL.Path, Prefix) {
			console.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

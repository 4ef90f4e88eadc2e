package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime/debug"
)

// BuildVersion is the version of the running binary: the main module's
// version from its build info (a tagged `go install` or a module build), or
// "dev" for a build from a source tree.
func BuildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	return moduleVersion(bi.Main.Version)
}

func moduleVersion(v string) string {
	if v == "" || v == "(devel)" {
		return "dev"
	}
	return v
}

// probePaths are the routes the gateway serves beside the API. The
// generated document only knows the RPCs, so they are added when served.
var probePaths = map[string]any{
	"/healthz": map[string]any{"get": probeOp("Healthz",
		"Liveness: 200 while the process runs.",
		map[string]any{"200": textResponse(`"ok"`)})},
	"/readyz": map[string]any{"get": probeOp("Readyz",
		"Readiness: 200 when this node can serve (its shards have leaders), 503 with the cause otherwise.",
		map[string]any{"200": textResponse(`"ready"`), "503": textResponse("not ready, and why")})},
}

func probeOp(id, summary string, responses map[string]any) map[string]any {
	return map[string]any{
		"summary":     summary,
		"operationId": id,
		"tags":        []any{"Probes"},
		"produces":    []any{"text/plain"},
		"security":    []any{}, // no token
		"responses":   responses,
	}
}

func textResponse(desc string) map[string]any {
	return map[string]any{"description": desc, "schema": map[string]any{"type": "string"}}
}

// servedSpec returns the OpenAPI document a node serves at /openapi.json:
// the generated one with info.version set to version and the probe routes
// added.
func servedSpec(spec []byte, version string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(spec))
	dec.UseNumber() // keep numbers as written
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("read OpenAPI document: %w", err)
	}
	info, _ := doc["info"].(map[string]any)
	if info == nil {
		info = map[string]any{}
		doc["info"] = info
	}
	info["version"] = version
	paths, _ := doc["paths"].(map[string]any)
	if paths == nil {
		paths = map[string]any{}
		doc["paths"] = paths
	}
	for p, item := range probePaths {
		paths[p] = item
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("write OpenAPI document: %w", err)
	}
	return append(out, '\n'), nil
}

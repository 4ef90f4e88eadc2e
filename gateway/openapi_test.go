package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"

	"github.com/quorumq/quorumq/openapi"
)

// validate loads a Swagger 2.0 document, converts it to OpenAPI 3 and
// validates that (kin-openapi validates only version 3 documents).
func validate(t *testing.T, spec []byte) *openapi2.T {
	t.Helper()
	var doc2 openapi2.T
	if err := json.Unmarshal(spec, &doc2); err != nil {
		t.Fatalf("load Swagger 2.0: %v", err)
	}
	doc3, err := openapi2conv.ToV3(&doc2)
	if err != nil {
		t.Fatalf("convert to OpenAPI 3: %v", err)
	}
	if err := doc3.Validate(context.Background()); err != nil {
		t.Fatalf("OpenAPI 3 validation: %v", err)
	}
	return &doc2
}

// TestOpenAPIGenerated pins what the generated document says beyond the
// RPCs: its title, bearer-token security, the error shape and updateMask.
func TestOpenAPIGenerated(t *testing.T) {
	doc := validate(t, openapi.Spec)
	if doc.Info.Title != "quorumq" {
		t.Errorf("info.title = %q, want quorumq", doc.Info.Title)
	}
	for _, want := range []string{"Authorization: Bearer <JWT>", "google.rpc.ErrorInfo", "/healthz", "/readyz", "--metrics-addr"} {
		if !strings.Contains(doc.Info.Description, want) {
			t.Errorf("info.description does not mention %q", want)
		}
	}
	sec := doc.SecurityDefinitions["bearer"]
	if sec == nil || sec.Type != "apiKey" || sec.In != "header" || sec.Name != "Authorization" {
		t.Errorf("securityDefinitions.bearer = %+v, want an apiKey in the Authorization header", sec)
	}
	if len(doc.Security) != 1 || doc.Security[0]["bearer"] == nil {
		t.Errorf("global security = %v, want bearer", doc.Security)
	}
	if st := doc.Definitions["rpcStatus"]; st == nil || st.Value.Properties["details"] == nil {
		t.Errorf("definitions.rpcStatus has no details: %+v", st)
	}
	patch := doc.Paths["/v1/queues/{name}"].Patch
	found := false
	for _, p := range patch.Parameters {
		found = found || (p.Name == "updateMask" && p.In == "query")
	}
	if !found {
		t.Errorf("PATCH /v1/queues/{name} has no updateMask query parameter")
	}
}

// TestOpenAPIServed: the served document carries the build's version and
// the probe routes, and is still valid.
func TestOpenAPIServed(t *testing.T) {
	out, err := servedSpec(openapi.Spec, "v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	doc := validate(t, out)
	if doc.Info.Version != "v1.2.3" || doc.Info.Title != "quorumq" {
		t.Errorf("info = %q %q, want quorumq v1.2.3", doc.Info.Title, doc.Info.Version)
	}
	for _, p := range []string{"/healthz", "/readyz", "/v1/queues", "/v1/cluster"} {
		if doc.Paths[p] == nil {
			t.Errorf("served document has no path %s", p)
		}
	}
	if r := doc.Paths["/readyz"].Get; r == nil || r.Responses.Value("503") == nil || r.Security == nil || len(*r.Security) != 0 {
		t.Errorf("/readyz: want GET with a 503 response and no security, got %+v", r)
	}

	h := newTestHandler(t, nil)
	code, body := get(t, h, "/openapi.json")
	var served struct {
		Info  struct{ Version string } `json:"info"`
		Paths map[string]any           `json:"paths"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &served) != nil {
		t.Fatalf("/openapi.json = %d", code)
	}
	if served.Info.Version != BuildVersion() || served.Paths["/healthz"] == nil {
		t.Errorf("/openapi.json: version %q (want %q), /healthz documented: %v", served.Info.Version, BuildVersion(), served.Paths["/healthz"] != nil)
	}
}

func TestModuleVersion(t *testing.T) {
	for in, want := range map[string]string{"": "dev", "(devel)": "dev", "v0.3.1": "v0.3.1", "v0.0.0-20261206-abcdef": "v0.0.0-20261206-abcdef"} {
		if got := moduleVersion(in); got != want {
			t.Errorf("moduleVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

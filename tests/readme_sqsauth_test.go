package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const accessKeySection = "### Access keys for the SQS endpoint"

// The README's access key block runs as written against a node with
// HS256 auth (the auth section's secret and serve line, on free ports):
// create sets AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY through eval,
// list and the REST GET show the key without its secret, revoke removes
// it (a list after the block no longer shows it).
func TestReadmeAccessKeyWalkthrough(t *testing.T) {
	needTools(t, "bash", "curl", "head", "base64", "seq")
	blocks := readmeBlockList(t, accessKeySection)
	if len(blocks) != 1 {
		t.Fatalf("the README's access key section has %d sh blocks, want 1", len(blocks))
	}
	httpAddr, grpcAddr, metricsAddr := freePort(t), freePort(t), freePort(t)
	defaultPort := regexp.MustCompile(`:(8080|9090|9100|7000)\b`)
	var script strings.Builder
	script.WriteString("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true; wait || true' EXIT\n" +
		"curl() { command curl --fail-with-body \"$@\"; }\n" +
		"head -c 32 /dev/urandom | base64 > secret\n" +
		"./bin/quorumq serve --auth-hs256-secret-file secret --http-addr " + httpAddr + " --grpc-addr " + grpcAddr +
		" --metrics-addr " + metricsAddr + " >serve.log 2>&1 &\n" +
		"for i in $(seq 300); do command curl -sf -m 1 -o /dev/null " + httpAddr + "/readyz && break; sleep 0.1; done\n")
	for _, c := range blocks[0] {
		c = strings.ReplaceAll(c, "localhost:8080", httpAddr)
		if defaultPort.MatchString(c) {
			t.Fatalf("README access key line names a default port the test does not remap: %s", c)
		}
		script.WriteString(echoed(c) + "echo\n")
	}
	script.WriteString(`echo "KEY=$AWS_ACCESS_KEY_ID SECRET=$AWS_SECRET_ACCESS_KEY"` + "\n" +
		`echo "AFTER:"; ./bin/quorumq credentials list --tenant acme --token "$ADMIN"` + "\n")
	dir := withBin(t)
	t.Cleanup(func() {
		if log, err := os.ReadFile(filepath.Join(dir, "serve.log")); err == nil && t.Failed() {
			t.Logf("serve.log:\n%s", log)
		}
	})
	out := runGroupScript(t, dir, script.String(), "QUORUMQ_ENDPOINT="+grpcAddr)

	m := regexp.MustCompile(`KEY=(AKQQ[A-Z2-7]{16}) SECRET=(\S{40})\n`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("create set no AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY:\n%s", out)
	}
	id, secret := m[1], m[2]
	before, after, _ := strings.Cut(out, "AFTER:")
	if strings.Count(before, secret) != 1 { // only our echo: never listed
		t.Fatalf("the secret was shown outside create:\n%s", out)
	}
	_, rest, ok := strings.Cut(before, "/v1/tenants/acme/accessKeys\n")
	if !ok {
		t.Fatalf("the transcript lacks the REST GET:\n%s", out)
	}
	var listed struct {
		AccessKeys []struct {
			AccessKeyID string   `json:"accessKeyId"`
			Scopes      []string `json:"scopes"`
		} `json:"accessKeys"`
	}
	if err := json.NewDecoder(strings.NewReader(rest)).Decode(&listed); err != nil || len(listed.AccessKeys) != 1 ||
		listed.AccessKeys[0].AccessKeyID != id || strings.Join(listed.AccessKeys[0].Scopes, " ") != "messages:receive messages:send" {
		t.Fatalf("REST list (%v): %s", err, rest)
	}
	if !strings.Contains(before, "revoked access key "+id) || strings.Contains(after, id) {
		t.Fatalf("revoke did not remove the key:\n%s", out)
	}
}

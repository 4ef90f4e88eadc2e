package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// quorumq credentials create / list / revoke against a dev node: the
// secret is printed by create only; revoke of a revoked key exits 2.
func TestCredentialsCommands(t *testing.T) {
	n := startBenchNode(t)
	ep := "--endpoint=" + n.GRPCAddr()
	stdout, stderr, _, err := runCLI(t, nil, "credentials", "create", "--tenant", "acme", "--scope", "messages:send", "--scope", "messages:receive",
		"--description", "ci runner", "-o", "json", ep)
	var created struct {
		AccessKey struct {
			AccessKeyID string   `json:"accessKeyId"`
			Tenant      string   `json:"tenant"`
			Scopes      []string `json:"scopes"`
		} `json:"accessKey"`
		SecretAccessKey string `json:"secretAccessKey"`
	}
	if err != nil || json.Unmarshal([]byte(stdout), &created) != nil || created.SecretAccessKey == "" || created.AccessKey.Tenant != "acme" ||
		strings.Join(created.AccessKey.Scopes, " ") != "messages:receive messages:send" {
		t.Fatalf("create: %v %q %s", err, stdout, stderr)
	}
	id := created.AccessKey.AccessKeyID
	stdout, stderr, _, err = runCLI(t, nil, "credentials", "create", "--tenant", "acme", ep)
	if err != nil || !strings.HasPrefix(stdout, "export AWS_ACCESS_KEY_ID=AKQQ") || !strings.Contains(stdout, "\nexport AWS_SECRET_ACCESS_KEY='") ||
		!strings.Contains(stderr, "shown only now") {
		t.Fatalf("create (text): %v %q %s", err, stdout, stderr)
	}
	stdout, stderr, _, err = runCLI(t, nil, "credentials", "list", "--tenant", "acme", ep)
	if err != nil || !strings.Contains(stdout, id) || !strings.Contains(stdout, "ci runner") || strings.Contains(stdout, created.SecretAccessKey) ||
		strings.Count(stdout, "\n") != 3 {
		t.Fatalf("list: %v %q %s", err, stdout, stderr)
	}
	stdout, stderr, _, err = runCLI(t, nil, "credentials", "revoke", id, "--tenant", "acme", ep)
	if err != nil || strings.TrimSpace(stdout) != "revoked access key "+id {
		t.Fatalf("revoke: %v %q %s", err, stdout, stderr)
	}
	_, stderr, exit, err := runCLI(t, nil, "credentials", "revoke", id, "--tenant", "acme", ep)
	if err == nil || exit != exitNotFound || !strings.Contains(stderr, "access key not found") {
		t.Fatalf("second revoke: err %v, exit %d, stderr %s", err, exit, stderr)
	}
	if stdout, _, _, err = runCLI(t, nil, "credentials", "list", "--tenant", "acme", ep); err != nil || strings.Contains(stdout, id) {
		t.Fatalf("list after revoke: %v %q", err, stdout)
	}
}

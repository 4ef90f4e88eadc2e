package check

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestGenSecrets runs example/gen-secrets.sh (in a copy, so the real
// ./secrets is left alone) and checks that what it writes is what the nodes
// check: every certificate chains to ca.pem, names its node in the
// quorumq:// URI SAN (quorumq refuses to start otherwise) and, for storage
// nodes, carries the DNS name peers dial (the host in --peers); the HS256
// secret is at least 32 bytes.
func TestGenSecrets(t *testing.T) {
	dir := t.TempDir()
	script, err := os.ReadFile(filepath.Join(root, "example", "gen-secrets.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "gen-secrets.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bash", filepath.Join(dir, "gen-secrets.sh"), "queues").CombinedOutput(); err != nil {
		t.Fatalf("gen-secrets.sh (needs openssl): %v\n%s", err, out)
	}
	sec := filepath.Join(dir, "secrets")
	// Every file the example overlay reads exists.
	for _, f := range placeholderSecrets {
		if _, err := os.Stat(filepath.Join(sec, f)); err != nil {
			t.Errorf("gen-secrets.sh did not write %s: %v", f, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(sec, "hs256.secret")); err != nil || len(b) < 32 {
		t.Errorf("hs256.secret: %d bytes (%v), want at least 32", len(b), err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, filepath.Join(sec, "ca.pem")))

	peers := flags(t, container(t, render(t, "base").statefulSets["quorumq"].Spec.Template.Spec).Args)["peers"]
	check := func(name, uri, dns string) {
		c := readCert(t, filepath.Join(sec, name+".pem"))
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: dns,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s.pem: %v", name, err)
		}
		var uris []string
		for _, u := range c.URIs {
			uris = append(uris, u.String())
		}
		if !slices.Equal(uris, []string{uri}) {
			t.Errorf("%s.pem URI SANs = %v, want [%s]", name, uris, uri)
		}
		if dns != "" && !slices.Contains(c.DNSNames, dns+".queues.svc.cluster.local") {
			t.Errorf("%s.pem DNS SANs %v lack the namespace's full name", name, c.DNSNames)
		}
	}
	for i := 1; i <= 3; i++ {
		var host string
		for _, p := range strings.Split(peers, ",") {
			if id, addr, _ := strings.Cut(p, "="); id == fmt.Sprint(i) {
				host, _, _ = strings.Cut(addr, ":")
			}
		}
		if host == "" {
			t.Fatalf("--peers %q has no node %d", peers, i)
		}
		check(fmt.Sprintf("node-%d", i), fmt.Sprintf("quorumq://node/%d", i), host)
	}
	check("api-100", "quorumq://api/100", "")
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

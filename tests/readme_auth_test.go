package tests

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

const authSection = "## Authentication, tenants and quotas"

// authBlocks returns the three ```sh blocks of the README's auth section
// (dev token, quotas, peer certificates), each as logical commands: a
// line ending in a backslash is joined with the next.
func authBlocks(t *testing.T) [3][]string {
	t.Helper()
	blocks := readmeBlockList(t, authSection)
	if len(blocks) != 3 {
		t.Fatalf("the README's auth section has %d sh blocks, want 3 (dev token, quota, TLS)", len(blocks))
	}
	var out [3][]string
	for i, b := range blocks {
		var cur string
		for _, line := range b {
			cur += line
			if strings.HasSuffix(line, `\`) {
				cur += "\n"
				continue
			}
			out[i] = append(out[i], cur)
			cur = ""
		}
		if cur != "" {
			t.Fatalf("README auth block %d ends in a line continuation", i+1)
		}
	}
	return out
}

// withBin makes a directory where ./bin/quorumq is the binary under test.
func withBin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, filepath.Join(dir, "bin", "quorumq")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runGroupScript runs script with bash in dir in its own process group,
// which is killed when the test ends (whatever the script left running in
// the background), and returns its transcript.
func runGroupScript(t *testing.T, dir, script string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	err = cmd.Wait()
	t.Logf("walkthrough transcript:\n%s", out.String())
	if err != nil {
		t.Fatalf("README walkthrough failed: %v", err)
	}
	return out.String()
}

var serveLine = regexp.MustCompile(`^(\./bin/quorumq serve\b.*?)\s*&$`)

// The README's dev-token and quota blocks run as written in one shell (in
// a directory where ./bin/quorumq is the binary under test): the secret
// is made, `serve … &` starts (given free listen ports, killed at the
// end), the minted token lists queues over REST and the CLI, a request
// without it is refused, and a cluster:admin token ($ADMIN, minted first
// with the same secret) sets acme's quota, which GET then shows.
func TestReadmeAuthAndQuotaWalkthrough(t *testing.T) {
	needTools(t, "bash", "curl", "head", "base64", "seq")
	blocks := authBlocks(t)
	httpAddr, grpcAddr, metricsAddr := freePort(t), freePort(t), freePort(t)
	defaultPort := regexp.MustCompile(`:(8080|9090|9100|7000)\b`)
	remap := func(c string) string {
		c = strings.ReplaceAll(c, "localhost:8080", httpAddr)
		if defaultPort.MatchString(c) {
			t.Fatalf("README auth line names a default port the test does not remap: %s", c)
		}
		return c
	}
	var script strings.Builder
	// The trap stops the background node however the script ends; the
	// process group kill in runGroupScript is the backstop.
	script.WriteString("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true; wait || true' EXIT\n" +
		"curl() { command curl --fail-with-body \"$@\"; }\n")
	served := false
	for _, c := range blocks[0] {
		if m := serveLine.FindStringSubmatch(c); m != nil {
			// Free ports instead of the defaults; the node's output goes
			// to a file so the transcript shows the walkthrough's.
			script.WriteString("echo '$ " + strings.ReplaceAll(c, "'", `'\''`) + "'\n")
			script.WriteString(m[1] + " --http-addr " + httpAddr + " --grpc-addr " + grpcAddr +
				" --metrics-addr " + metricsAddr + " --sqs-addr= >serve.log 2>&1 &\n")
			// A user types the next line later; the test waits for /readyz.
			script.WriteString("for i in $(seq 300); do command curl -sf -m 1 -o /dev/null " + httpAddr + "/readyz && break; sleep 0.1; done\n")
			served = true
			continue
		}
		if strings.Contains(c, "./bin/quorumq serve") {
			t.Fatalf("README serve line is not `./bin/quorumq serve … &`: %s", c)
		}
		script.WriteString(echoed(remap(c)) + "echo\n")
	}
	if !served {
		t.Fatal("the README's dev token block starts no `./bin/quorumq serve … &`")
	}
	// The token is needed: the same call without it is refused.
	script.WriteString("code=$(command curl -s -o /dev/null -w '%{http_code}' " + httpAddr + "/v1/queues)\n" +
		"echo \"without a token: HTTP $code\"\n[ \"$code\" = 401 ]\n")
	script.WriteString(echoed(`ADMIN=$(./bin/quorumq token --hs256-secret-file secret --tenant ops --scope cluster:admin --ttl 1h)`))
	var get string
	for _, c := range blocks[1] {
		c = remap(c)
		if !strings.Contains(c, "-X PUT") && strings.Contains(c, "/v1/tenants/acme/quota") {
			get = c
		}
		script.WriteString(echoed(c) + "echo\n")
	}
	if get == "" {
		t.Fatal("the README's quota block has no GET of /v1/tenants/acme/quota")
	}
	dir := withBin(t)
	t.Cleanup(func() {
		if log, err := os.ReadFile(filepath.Join(dir, "serve.log")); err == nil && t.Failed() {
			t.Logf("serve.log:\n%s", log)
		}
	})
	out := runGroupScript(t, dir, script.String(), "QUORUMQ_ENDPOINT="+grpcAddr)

	// The GET's output is the JSON document after its echo.
	_, after, ok := strings.Cut(out, "$ "+get+"\n")
	if !ok {
		t.Fatalf("the transcript lacks the quota GET %q", get)
	}
	var resp struct {
		Quota map[string]string `json:"quota"`
	}
	if err := json.NewDecoder(strings.NewReader(after)).Decode(&resp); err != nil {
		t.Fatalf("GET quota printed no JSON (%v): %q", err, after)
	}
	for k, v := range map[string]string{"maxQueues": "100", "maxSendRate": "5000", "maxStoredBytes": "10737418240"} {
		if resp.Quota[k] != v {
			t.Errorf("GET quota: %s = %q, want %q (%s)", k, resp.Quota[k], v, after)
		}
	}
}

// The README's TLS block (openssl, bash process substitution) runs as
// written and makes a CA and node 1's peer certificate that quorumq
// accepts: it names quorumq://node/1 and 127.0.0.1, node 1 starts with it
// (node 2 refuses it), and node 1's peer port takes it both as its server
// certificate and as a storage node's client certificate.
func TestReadmePeerCertificateRecipe(t *testing.T) {
	needTools(t, "bash", "openssl")
	blocks := authBlocks(t)
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for _, c := range blocks[2] {
		script.WriteString(echoed(c))
	}
	dir := t.TempDir()
	runScript(t, dir, script.String())

	certFile, keyFile, caFile := filepath.Join(dir, "n1.pem"), filepath.Join(dir, "n1.key"), filepath.Join(dir, "ca.pem")
	readCert := func(file string) *x509.Certificate {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("%s holds no PEM", file)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ca, leaf := readCert(caFile), readCert(certFile)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "quorumq://node/1" {
		t.Errorf("n1.pem URI SANs %v, want exactly quorumq://node/1", leaf.URIs)
	}
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("n1.pem IP SANs %v, want 127.0.0.1", leaf.IPAddresses)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			t.Errorf("n1.pem does not verify against ca.pem for usage %v: %v", u, err)
		}
	}

	raft1, raft2 := freePort(t), freePort(t)
	flags := []string{"--peers", "1=" + raft1 + ",2=" + raft2,
		"--peer-tls-cert-file", certFile, "--peer-tls-key-file", keyFile, "--peer-tls-ca-file", caFile}
	// Node 2 refuses node 1's certificate: the identity check is on.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	args := append([]string{"serve", "--data-dir", t.TempDir(), "--node-id", "2", "--raft-addr", raft2,
		"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--metrics-addr=", "--sqs-addr="}, flags...)
	out, err := exec.CommandContext(ctx, binary, args...).CombinedOutput()
	if err == nil || ctx.Err() != nil || !strings.Contains(string(out), "quorumq://node/2") {
		t.Errorf("node 2 with node 1's certificate did not refuse to start naming quorumq://node/2 (err %v):\n%s", err, out)
	}

	startServe(t, t.TempDir(), append(flags, "--node-id", "1", "--raft-addr", raft1)...)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(raft1, grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// DeliverOutbox is for storage nodes only; without a shard header it
	// fails in the handler, past the TLS handshake and the identity check.
	ictx, icancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer icancel()
	err = conn.Invoke(ictx, "/quorumq.internal.v1.Peer/DeliverOutbox", &storepb.DeliverOutbox{}, &storepb.AckOutbox{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("DeliverOutbox with the README's node 1 certificate: %v, want InvalidArgument (past TLS and the peer identity check)", err)
	}
}

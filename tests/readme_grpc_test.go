package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// grpcurlVersion is the grpcurl the README's gRPC block is checked with;
// the test installs it from the module proxy into a scratch directory, so
// go.mod does not carry grpcurl's dependencies.
const grpcurlVersion = "v1.9.3"

// The README's gRPC block (reflection, error-detail types, health) runs
// verbatim with grpcurl against a fresh node (only the port is changed),
// and each line shows what the README says it does.
func TestReadmeGRPCConventions(t *testing.T) {
	needTools(t, "bash", "go")
	cmds := readmeBlocks(t, "## gRPC")
	if len(cmds) != 3 {
		t.Fatalf("the README's gRPC block has %d lines, this test checks 3: %q", len(cmds), cmds)
	}
	bin := t.TempDir()
	install := exec.Command("go", "install", "github.com/fullstorydev/grpcurl/cmd/grpcurl@"+grpcurlVersion)
	install.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("installing grpcurl %s: %v\n%s", grpcurlVersion, err, out)
	}
	p := startServe(t, t.TempDir())
	waitReady(t, p.client(t))
	waitServing(t, p.grpcAddr, "quorumq.v1.QueueService")
	path := "PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH")
	wants := [][]string{
		{"quorumq.v1.QueueService", "quorumq.v1.ClusterService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"},
		{"google.rpc.ErrorInfo is a message", "string reason", "map<string, string> metadata"},
		{`"status": "SERVING"`},
	}
	for i, c := range cmds {
		if !strings.HasPrefix(c, "grpcurl ") || !strings.Contains(c, "127.0.0.1:9090") {
			t.Fatalf("README gRPC line %d is not a grpcurl call on 127.0.0.1:9090: %q", i+1, c)
		}
		out := runScript(t, filepath.Clean(bin), "set -euo pipefail\n"+strings.ReplaceAll(c, "127.0.0.1:9090", p.grpcAddr), path)
		for _, w := range wants[i] {
			if !strings.Contains(out, w) {
				t.Errorf("%s\nprinted no %q:\n%s", c, w, out)
			}
		}
	}
}

// waitServing polls grpc.health.v1 until service reports SERVING: health
// follows /readyz, which a node passes a little after it first answers.
func waitServing(t *testing.T, addr, service string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never reported SERVING: %v, %v", service, r.GetStatus(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

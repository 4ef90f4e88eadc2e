package chaos

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Regression (found by the chaos suite, seed 327171: a node started on a
// port another process had just taken): `quorumq serve` whose gRPC or HTTP
// port is taken must exit with the listen error. It panicked with a nil
// pointer dereference instead: node.Start's error return sets its named
// result n to nil while goroutines it already started (the leader
// balancer, the gRPC server) still dereference n.
func TestServeReportsBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := func() string {
		a, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, tc := range []struct{ flag, want string }{{"--grpc-addr", "listen grpc"}, {"--http-addr", "listen http"}} {
		t.Run(tc.flag, func(t *testing.T) {
			raft := addr()
			args := []string{"serve", "--data-dir", t.TempDir(), "--raft-addr", raft, "--grpc-addr", addr(), "--http-addr", addr(),
				"--peers", "1=" + raft + ",2=" + addr(), "--shards", "2", "--metrics-addr=", "--sqs-addr=", tc.flag, busy.Addr().String()}
			cmd := exec.Command(prodBin, args...)
			done := make(chan struct{})
			var out []byte
			go func() {
				defer close(done)
				out, err = cmd.CombinedOutput()
			}()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("serve with a busy %s still runs after 30s", tc.flag)
			}
			if err == nil || strings.Contains(string(out), "panic:") || !strings.Contains(string(out), tc.want) {
				t.Fatalf("serve with a busy %s: want an exit with %q and no panic; err %v, output:\n%s", tc.flag, tc.want, err, out)
			}
		})
	}
}

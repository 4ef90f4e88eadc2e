// Package tests holds end-to-end tests that run the real quorumq binary as
// separate processes on loopback.
package tests

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// binary is the quorumq executable under test: $QUORUMQ_BIN (set by `make
// test`) or one built for this run.
var binary string

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	binary = os.Getenv("QUORUMQ_BIN")
	if binary == "" {
		dir, err := os.MkdirTemp("", "quorumq-bin")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "quorumq")
		out, err := exec.Command("go", "build", "-o", binary, "github.com/quorumq/quorumq/cmd/quorumq").CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("build quorumq: %v\n%s", err, out)
		}
	}
	return m.Run(), nil
}

// proc is a running `quorumq serve`.
type proc struct {
	cmd      *exec.Cmd
	grpcAddr string
	httpAddr string
	// metricsAddr serves GET /metrics ("" if the banner says off).
	metricsAddr string
	// sqsAddr serves the SQS protocols ("" if the banner says off).
	sqsAddr string
	stderr  *lockedBuffer
	exited  chan struct{}

	connOnce sync.Once
	conn     *grpc.ClientConn
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var addrLine = regexp.MustCompile(`^\s+(REST|gRPC|SQS|metrics|health)\s+(?:https?://)?([0-9.]+:[0-9]+)?`)

// startServe runs `quorumq serve` on free loopback ports with its data in
// dir and waits until it prints its addresses. extra flags are appended.
func startServe(t *testing.T, dir string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"serve", "--data-dir", dir,
		"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--sqs-addr=", "--log-level", "warn"}, extra...)
	cmd := exec.Command(binary, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stderr: &lockedBuffer{}}
	cmd.Stderr = p.stderr
	p.exited = startOwned(t, cmd, fmt.Sprintf("quorumq serve %s", strings.Join(extra, " ")), p.stderr)
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := addrLine.FindStringSubmatch(sc.Text()); m != nil {
				switch m[1] {
				case "REST":
					p.httpAddr = m[2]
				case "gRPC":
					p.grpcAddr = m[2]
				case "metrics":
					p.metricsAddr = m[2]
				case "SQS":
					p.sqsAddr = m[2]
				}
				if m[1] == "health" { // the banner's last line
					close(found)
					break
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case <-found:
	case <-p.exited:
		t.Fatalf("quorumq serve exited: %s", p.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("quorumq serve did not start: %s", p.stderr.String())
	}
	return p
}

// logTail logs the end of a failed test's node log: warnings (a leader
// handing over, a snapshot failing) say why a call failed.
// startOwned starts cmd and returns a channel closed when it exits; the
// test's cleanup kills it and, if the test failed, logs the tail of its
// stderr under name.
func startOwned(t *testing.T, cmd *exec.Cmd, name string, stderr *lockedBuffer) chan struct{} {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			logTail(t, name, stderr.String())
		}
	})
	return exited
}

func logTail(t *testing.T, name, log string) {
	const max = 16 << 10
	if log == "" {
		return
	}
	if len(log) > max {
		log = "..." + log[len(log)-max:]
	}
	t.Logf("stderr of %s:\n%s", name, log)
}

// grpcConn is the process's client connection, made once.
func (p *proc) grpcConn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	p.connOnce.Do(func() {
		conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		p.conn = conn
	})
	return p.conn
}

func (p *proc) client(t *testing.T) qv1.QueueServiceClient {
	return qv1.NewQueueServiceClient(p.grpcConn(t))
}

// waitReady retries a cheap call until the node's shard has a leader.
func waitReady(t *testing.T, c qv1.QueueServiceClient) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.ListQueues(ctx, &qv1.ListQueuesRequest{})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not ready: %v", err)
		}
		<-time.After(50 * time.Millisecond)
	}
}

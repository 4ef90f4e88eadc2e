package tests

import (
	"bufio"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// --sqs-addr defaults to the SQS emulators' port on loopback, and an empty
// value turns the endpoint off: the banner says so.
func TestSQSListenerFlag(t *testing.T) {
	out, err := exec.Command(binary, "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("serve --help: %v\n%s", err, out)
	}
	var flag string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "--sqs-addr ") {
			flag = line
		}
	}
	if !strings.Contains(flag, `(default "127.0.0.1:9324")`) {
		t.Fatalf("--sqs-addr help: %q, want the default 127.0.0.1:9324", flag)
	}

	for _, tc := range []struct{ addr, want string }{
		{"", "off (--sqs-addr)"},
		{"127.0.0.1:0", "http://127.0.0.1:"},
	} {
		cmd := exec.Command(binary, "serve", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
			"--metrics-addr", "127.0.0.1:0", "--sqs-addr", tc.addr, "--log-level", "warn")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if f := strings.Fields(sc.Text()); len(f) > 1 && f[0] == "SQS" {
					line <- sc.Text()
					break
				}
			}
			close(line)
		}()
		var got string
		select {
		case got = <-line:
		case <-time.After(time.Minute):
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if !strings.Contains(got, tc.want) {
			t.Fatalf("--sqs-addr %q: banner line %q, want %q", tc.addr, got, tc.want)
		}
	}
}

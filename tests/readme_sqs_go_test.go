package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The README's Go example for the SQS endpoint is a whole program: it is
// compiled and run as written (only the port changes) against a real node,
// and must print the message it sent.
func TestReadmeSQSGoExample(t *testing.T) {
	needTools(t, "go")
	var src []string
	inGo := false
	for _, line := range readmeSection(t, "## Use it from the AWS SDK / CLI") {
		switch {
		case strings.HasPrefix(line, "```go"):
			inGo = true
		case inGo && strings.HasPrefix(line, "```"):
			inGo = false
		case inGo:
			src = append(src, line)
		}
	}
	if len(src) < 10 || !strings.Contains(strings.Join(src, "\n"), "package main") {
		t.Fatalf("the README's SQS section has no whole Go program: %q", src)
	}
	p := startServe(t, t.TempDir(), "--sqs-addr", "127.0.0.1:0")
	waitReady(t, p.client(t))
	program := strings.ReplaceAll(strings.Join(src, "\n"), "127.0.0.1:9324", p.sqsAddr)

	// Inside the module (a directory starting with "_" is outside ./...),
	// so the program builds against go.mod's aws-sdk-go-v2.
	dir, err := os.MkdirTemp("..", "_readme_sqs_go")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	file, err := filepath.Abs(filepath.Join(dir, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(program+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", file)
	cmd.Dir = ".."
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go run of the README example: %v\n%s%s", err, out, stderr.String())
	}
	if strings.TrimSpace(string(out)) != "hello" {
		t.Fatalf("the README example printed %q, want hello", out)
	}
}

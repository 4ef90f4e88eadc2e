package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// runCLI runs the binary against endpoint with stdin; it returns stdout,
// stderr and the exit code.
func runCLI(t *testing.T, endpoint string, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	args = append(args, "--endpoint", endpoint)
	cmd := exec.Command(binary, args...)
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("quorumq %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// cli runs the binary against p and fails the test unless it succeeds; it
// returns stdout.
func cli(t *testing.T, p *proc, args ...string) string {
	t.Helper()
	out, errOut, code := runCLI(t, p.grpcAddr, nil, args...)
	if code != 0 {
		t.Fatalf("quorumq %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

type cliMessages struct {
	Messages []struct {
		MessageID     string   `json:"messageId"`
		Body          string   `json:"body"`
		Tags          []string `json:"tags"`
		ReceiptHandle string   `json:"receiptHandle"`
		ReceiveCount  int      `json:"receiveCount"`
	} `json:"messages"`
}

func decode(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%v in:\n%s", err, s)
	}
}

// The client subcommands drive a queue end to end, in tables and in JSON,
// and /metrics counts it.
func TestCLIRoundTrip(t *testing.T) {
	p := startServe(t, t.TempDir())
	waitReady(t, p.client(t))

	if got := cli(t, p, "queue", "create", "cli", "--visibility-timeout", "1m"); !regexp.MustCompile(`(?m)^visibility timeout +1m$`).MatchString(got) {
		t.Fatalf("queue create printed:\n%s", got)
	}
	if got := cli(t, p, "send", "cli", "hello from the cli", "--tag", "urgent"); !regexp.MustCompile(`(?m)^message id +\S+\nsequence +\d+\n$`).MatchString(got) {
		t.Fatalf("send printed:\n%s", got)
	}
	var recv cliMessages
	decode(t, cli(t, p, "receive", "cli", "--max", "10", "--wait", "1s", "--all", "urgent", "-o", "json"), &recv)
	if len(recv.Messages) != 1 || recv.Messages[0].Body != "hello from the cli" || recv.Messages[0].ReceiptHandle == "" ||
		recv.Messages[0].MessageID == "" || recv.Messages[0].ReceiveCount != 1 || len(recv.Messages[0].Tags) != 1 {
		t.Fatalf("received %+v", recv)
	}
	if got := cli(t, p, "delete", "cli", recv.Messages[0].ReceiptHandle); got != "deleted 1 message\n" {
		t.Fatalf("delete printed %q", got)
	}

	// Bulk input: 50 lines through the producer, with a summary on stdout.
	var lines strings.Builder
	for i := 1; i <= 50; i++ {
		fmt.Fprintf(&lines, "line %d\n", i)
	}
	out, errOut, code := runCLI(t, p.grpcAddr, strings.NewReader(lines.String()), "send", "cli", "--file", "-")
	if code != 0 || !strings.HasPrefix(out, "sent 50 messages in ") || strings.Contains(out, "failed") {
		t.Fatalf("send --file -: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runCLI(t, p.grpcAddr, strings.NewReader("one\ntwo\n"), "send", "cli", "--file", "-", "-o", "json")
	var sum struct{ Sent, Failed int }
	if decode(t, out, &sum); code != 0 || sum.Sent != 2 || sum.Failed != 0 {
		t.Fatalf("send --file - -o json: exit %d\n%s%s", code, out, errOut)
	}

	var q struct {
		Name  string `json:"name"`
		Stats struct {
			Visible string `json:"visible"`
		} `json:"stats"`
	}
	decode(t, cli(t, p, "queue", "get", "cli", "-o", "json"), &q)
	if q.Name != "cli" || q.Stats.Visible != "52" {
		t.Fatalf("queue get -o json: %+v", q)
	}
	if got := cli(t, p, "queue", "get", "cli"); !regexp.MustCompile(`(?m)^visible +52$`).MatchString(got) || !strings.Contains(got, "name") {
		t.Fatalf("queue get printed:\n%s", got)
	}
	cli(t, p, "queue", "create", "other")
	got := cli(t, p, "queue", "list")
	if !regexp.MustCompile(`^NAME +VISIBLE +INFLIGHT +DELAYED +FIFO +DLQ`).MatchString(got) ||
		!regexp.MustCompile(`(?m)^cli +52 +0 +0 +no +- +1m `).MatchString(got) || !regexp.MustCompile(`(?m)^other +0 `).MatchString(got) {
		t.Fatalf("queue list printed:\n%s", got)
	}
	var list struct {
		Queues []struct {
			Name string `json:"name"`
		} `json:"queues"`
	}
	decode(t, cli(t, p, "queue", "list", "--prefix", "cl", "-o", "json"), &list)
	if len(list.Queues) != 1 || list.Queues[0].Name != "cli" {
		t.Fatalf("queue list -o json: %+v", list)
	}

	// The table of a receive: one block per message, oldest first.
	got = cli(t, p, "receive", "cli", "--max", "3")
	blocks := strings.Split(strings.TrimSpace(got), "\n\n")
	if len(blocks) != 3 || !regexp.MustCompile(`^message id +\S+\nreceive count +1\nreceipt handle +\S+\n`).MatchString(blocks[0]) ||
		!strings.HasSuffix(blocks[0], "\nbody            line 1") || !strings.HasSuffix(blocks[2], "line 3") {
		t.Fatalf("receive printed:\n%s", got)
	}

	// Several endpoints: a dead one is skipped.
	out, errOut, code = runCLI(t, "127.0.0.1:1,"+p.grpcAddr, nil, "queue", "get", "cli")
	if code != 0 || !strings.Contains(out, "cli") {
		t.Fatalf("queue get over two endpoints, one dead: exit %d\n%s%s", code, out, errOut)
	}

	cli(t, p, "queue", "purge", "cli")

	// /metrics is on its own listener, not beside REST (series name tenants' queues).
	if resp, err := http.Get("http://" + p.httpAddr + "/metrics"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /metrics on the REST listener: %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}
	resp, err := http.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`quorumq_messages_sent_total{queue="cli",tenant="default"} 53`,
		`quorumq_messages_received_total{queue="cli",tenant="default"} 4`,
		`quorumq_messages_deleted_total{queue="cli",tenant="default"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}

	if got := cli(t, p, "queue", "delete", "cli"); got != "deleted queue cli\n" {
		t.Fatalf("queue delete printed %q", got)
	}
	// Not found: exit status 2 and "quorumq: ..." on stderr; other errors 1.
	for _, args := range [][]string{{"queue", "get", "cli"}, {"receive", "cli"}, {"queue", "purge", "cli", "-o", "json"}} {
		out, errOut, code = runCLI(t, p.grpcAddr, nil, args...)
		if code != 2 || out != "" || !strings.HasPrefix(errOut, "quorumq: ") || !strings.Contains(errOut, "QUEUE_NOT_FOUND") {
			t.Errorf("%v on a deleted queue: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	out, errOut, code = runCLI(t, p.grpcAddr, nil, "receive", "other", "--max", "1000")
	if code != 1 || !strings.HasPrefix(errOut, "quorumq: ") || !strings.Contains(errOut, "INVALID_ARGUMENT") {
		t.Errorf("receive --max 1000: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// receive --wait long-polls: an empty receive waits it out, and a message
// that becomes visible during the wait is returned at once.
func TestCLIReceiveWait(t *testing.T) {
	p := startServe(t, t.TempDir())
	waitReady(t, p.client(t))
	cli(t, p, "queue", "create", "poll")

	start := time.Now()
	out, errOut, code := runCLI(t, p.grpcAddr, nil, "receive", "poll", "--wait", "1s", "-o", "json")
	if took := time.Since(start); code != 0 || out != "{\n  \"messages\": []\n}\n" || took < 900*time.Millisecond {
		t.Fatalf("empty receive --wait 1s: exit %d after %v\n%s%s", code, took, out, errOut)
	}
	if out, errOut, code = runCLI(t, p.grpcAddr, nil, "receive", "poll"); code != 0 || out != "" || errOut != "no messages\n" {
		t.Fatalf("empty receive (table): exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	cli(t, p, "send", "poll", "late", "--delay", "1s")
	start = time.Now()
	var recv cliMessages
	decode(t, cli(t, p, "receive", "poll", "--wait", "10s", "-o", "json"), &recv)
	if took := time.Since(start); len(recv.Messages) != 1 || recv.Messages[0].Body != "late" || took > 8*time.Second {
		t.Fatalf("receive --wait 10s of a message delayed 1s: %+v after %v", recv, took)
	}
}

// The binary's shared flags: -o yaml and json on cluster status and
// version, the older --json and --endpoints (notice on stderr only),
// queue update as a PATCH, shell completion scripts, and exit codes in
// every help.
func TestCLIConsistentFlags(t *testing.T) {
	p := startServe(t, t.TempDir())
	waitReady(t, p.client(t))

	cli(t, p, "queue", "create", "flags", "--retention", "1h")
	var q struct {
		Attributes struct{ VisibilityTimeout, MessageRetention string }
	}
	decode(t, cli(t, p, "queue", "update", "flags", "--visibility-timeout", "45s", "-o", "json"), &q)
	if q.Attributes.VisibilityTimeout != "45s" || q.Attributes.MessageRetention != "3600s" {
		t.Fatalf("queue update --visibility-timeout 45s: %+v", q)
	}
	if out, errOut, code := runCLI(t, p.grpcAddr, nil, "queue", "update", "nope", "--delay", "1s"); code != 2 || out != "" {
		t.Fatalf("queue update of a missing queue: exit %d\n%s%s", code, out, errOut)
	}

	if got := cli(t, p, "queue", "get", "flags", "-o", "yaml"); !strings.HasPrefix(got, "name: flags\nattributes:\n  visibilityTimeout: 45s\n") {
		t.Fatalf("queue get -o yaml:\n%s", got)
	}
	if got := cli(t, p, "cluster", "status", "-o", "yaml"); !regexp.MustCompile(`(?m)^shards:\n  - id: "0"$`).MatchString(got) {
		t.Fatalf("cluster status -o yaml:\n%s", got)
	}
	// The older spellings: stdout stays a clean document.
	cmd := exec.Command(binary, "cluster", "status", "--json", "--endpoints", p.grpcAddr)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("cluster status --json --endpoints: %v\n%s", err, errOut.String())
	}
	var cluster struct{ Shards []any }
	decode(t, out.String(), &cluster)
	if len(cluster.Shards) != 1 || !strings.Contains(errOut.String(), "--json is deprecated") || !strings.Contains(errOut.String(), "--endpoints is deprecated") {
		t.Fatalf("cluster status --json --endpoints: %+v, stderr %q", cluster, errOut.String())
	}

	for _, args := range [][]string{{"version", "-o", "json"}, {"--version"}} {
		out, err := exec.Command(binary, args...).Output()
		if err != nil || !strings.Contains(string(out), "go1.") {
			t.Fatalf("quorumq %v: %v %q", args, err, out)
		}
	}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		out, err := exec.Command(binary, "completion", shell).Output()
		if err != nil || !strings.Contains(string(out), "quorumq") || len(out) < 500 {
			t.Errorf("completion %s: %v, %d bytes", shell, err, len(out))
		}
	}
	for _, args := range [][]string{{"serve"}, {"bench"}, {"cluster", "status"}, {"queue", "update"}, {"token"}, {"completion", "bash"}} {
		out, err := exec.Command(binary, append(args, "--help")...).Output()
		if err != nil || !strings.Contains(string(out), "Exit codes:\n  0  success\n") {
			t.Errorf("quorumq %v --help: %v, no exit codes:\n%s", args, err, out)
		}
	}
}

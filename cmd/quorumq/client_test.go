package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
)

// runCLI executes the CLI in process; it returns stdout, stderr, the exit
// code a NotFound error asked for (0 if none) and the error.
func runCLI(t *testing.T, stdin io.Reader, args ...string) (stdout, stderr string, exit int, err error) {
	t.Helper()
	orig := osExit
	osExit = func(code int) { exit = code }
	defer func() { osExit = orig }()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	if stdin != nil {
		root.SetIn(stdin)
	}
	root.SetArgs(args)
	err = root.Execute()
	return out.String(), errOut.String(), exit, err
}

// send --file - sends one message per non-empty line through the producer;
// a line the server refuses is reported with its number and the rest go
// on; a missing queue stops the send with exit status 2.
func TestSendFileInProcess(t *testing.T) {
	n := startBenchNode(t)
	ep := "--endpoint=" + n.GRPCAddr()
	if _, stderr, _, err := runCLI(t, nil, "queue", "create", "bulk", "--max-message-size", "1024", ep); err != nil {
		t.Fatalf("create: %v %s", err, stderr)
	}
	var in strings.Builder
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&in, "line %d\r\n", i)
		if i == 10 {
			in.WriteString("\n")                             // skipped
			in.WriteString(strings.Repeat("x", 2000) + "\n") // too large: line 12
		}
	}
	stdout, stderr, _, err := runCLI(t, strings.NewReader(in.String()), "send", "bulk", "--file", "-", "--tag", "bulk", "-o", "json", ep)
	if err == nil || !strings.Contains(stderr, "quorumq: line 12: ") || !strings.Contains(stderr, "MESSAGE_TOO_LARGE") ||
		!strings.Contains(stderr, "quorumq: 1 of 31 messages failed") {
		t.Fatalf("send with one oversized line: err %v\nstderr:\n%s", err, stderr)
	}
	var sum struct{ Sent, Failed, Skipped int }
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil || sum.Sent != 30 || sum.Failed != 1 || sum.Skipped != 1 {
		t.Fatalf("summary %q: %+v %v", stdout, sum, err)
	}

	stdout, stderr, _, err = runCLI(t, nil, "receive", "bulk", "--max", "100", "--wait", "1s", "-o", "json", ep)
	if err != nil {
		t.Fatalf("receive: %v %s", err, stderr)
	}
	var recv struct {
		Messages []struct {
			Body string   `json:"body"`
			Tags []string `json:"tags"`
		} `json:"messages"`
	}
	if err := json.Unmarshal([]byte(stdout), &recv); err != nil {
		t.Fatal(err)
	}
	if len(recv.Messages) == 0 || recv.Messages[0].Body != "line 1" || len(recv.Messages[0].Tags) != 1 {
		t.Fatalf("received %+v", recv)
	}

	_, stderr, exit, err := runCLI(t, strings.NewReader("a\nb\n"), "send", "nope", "--file", "-", ep)
	if err == nil || exit != exitNotFound || !strings.Contains(stderr, "QUEUE_NOT_FOUND") || strings.Count(stderr, "quorumq: ") != 1 {
		t.Fatalf("send to a missing queue: err %v, exit %d, stderr:\n%s", err, exit, stderr)
	}
	if _, _, _, err := runCLI(t, strings.NewReader("a\n"), "send", "bulk", "body", "--file", "-", ep); err == nil {
		t.Fatal("send with both BODY and --file was accepted")
	}
}

// A line that is not valid UTF-8 fails alone with INVALID_ARGUMENT: the
// other lines of its batch are stored, and the summary and the error
// name exactly the failed lines.
func TestSendFileInvalidLine(t *testing.T) {
	n := startBenchNode(t)
	ep := "--endpoint=" + n.GRPCAddr()
	if _, stderr, _, err := runCLI(t, nil, "queue", "create", "utf8", ep); err != nil {
		t.Fatalf("create: %v %s", err, stderr)
	}
	var in strings.Builder
	for i := 1; i <= 500; i++ {
		if i == 150 || i == 300 || i == 301 {
			fmt.Fprintf(&in, "bad \xff line %d\n", i)
			continue
		}
		fmt.Fprintf(&in, "line %d\n", i)
	}
	stdout, stderr, _, err := runCLI(t, strings.NewReader(in.String()), "send", "utf8", "--file", "-", "-o", "json", ep)
	if err == nil || !strings.Contains(stderr, "quorumq: line 150: INVALID_ARGUMENT") || !strings.Contains(stderr, "quorumq: line 301: INVALID_ARGUMENT") ||
		!strings.Contains(stderr, "quorumq: 3 of 500 messages failed (lines 150, 300-301), 497 sent\n") {
		t.Fatalf("send with invalid lines: err %v\nstderr:\n%s", err, stderr)
	}
	var sum struct {
		Sent, Failed int
		FailedLines  [][2]int
		NotSentFrom  int
	}
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil || sum.Sent != 497 || sum.Failed != 3 ||
		fmt.Sprint(sum.FailedLines) != "[[150 150] [300 301]]" || sum.NotSentFrom != 0 {
		t.Fatalf("summary %q: %+v %v", stdout, sum, err)
	}
	stdout, stderr, _, err = runCLI(t, nil, "queue", "get", "utf8", "-o", "json", ep)
	var q struct {
		Stats struct {
			Visible string `json:"visible"`
		} `json:"stats"`
	}
	if err != nil || json.Unmarshal([]byte(stdout), &q) != nil || q.Stats.Visible != "497" {
		t.Fatalf("queue get: %v %s\n%s", err, stderr, stdout)
	}
}

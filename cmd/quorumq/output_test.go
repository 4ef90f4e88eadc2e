package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	quorumq "github.com/quorumq/quorumq/sdk"
)

var created = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testQueues() []*quorumq.QueueInfo {
	return []*quorumq.QueueInfo{
		{
			Name: "orders",
			Attributes: quorumq.QueueAttributes{
				VisibilityTimeout: time.Minute, MessageRetention: 96 * time.Hour, MaxMessageSize: 1 << 20,
				DeadLetterQueue: "orders-dlq", MaxReceiveCount: 5, Partitions: 1,
			},
			Tags: map[string]string{"team": "shop", "env": "prod"}, CreatedAt: created,
			Stats: quorumq.QueueStats{Visible: 12, InFlight: 3, Delayed: 1},
		},
		{
			Name: "jobs.fifo",
			Attributes: quorumq.QueueAttributes{
				VisibilityTimeout: 90 * time.Second, MessageRetention: 96 * time.Hour, MaxMessageSize: 1 << 20,
				FIFO: true, ContentBasedDeduplication: true, Partitions: 4,
			},
			CreatedAt: created,
		},
	}
}

func TestQueueTable(t *testing.T) {
	var out bytes.Buffer
	if err := printQueueTable(&out, testQueues(), true); err != nil {
		t.Fatal(err)
	}
	want := `NAME       VISIBLE  INFLIGHT  DELAYED  FIFO  DLQ         VISIBILITY  PARTITIONS
orders     12       3         1        no    orders-dlq  1m          1
jobs.fifo  0        0         0        yes   -           1m30s       4
`
	if out.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", out.String(), want)
	}

	out.Reset()
	if err := printQueueTable(&out, testQueues()[:1], false); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(out.String(), "\n"); !strings.HasPrefix(lines[1], "orders  -        -         -        no") {
		t.Errorf("table without stats:\n%s", out.String())
	}
}

func TestQueueDetail(t *testing.T) {
	var out bytes.Buffer
	if err := printQueue(&out, testQueues()[0], true); err != nil {
		t.Fatal(err)
	}
	want := `name                orders
fifo                no
visibility timeout  1m
retention           96h
delivery delay      0s
receive wait        0s
max message size    1048576
partitions          1
dead-letter queue   orders-dlq (after 5 receives)
tags                env=prod, team=shop
created             2026-03-01T12:00:00Z
visible             12
in flight           3
delayed             1
`
	if out.String() != want {
		t.Errorf("queue get:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	if err := printQueue(&out, testQueues()[1], false); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "content-based dedup  yes\n") || strings.Contains(s, "visible") {
		t.Errorf("queue create of a FIFO queue:\n%s", s)
	}
}

func testMessages() []*quorumq.Message {
	return []*quorumq.Message{
		{ID: "m1", ReceiptHandle: "h1", Body: "hello", ReceiveCount: 1, SentAt: created, Tags: []string{"urgent", "eu"}},
		{ID: "m2", ReceiptHandle: "h2", Body: "two\nlines", ReceiveCount: 3, SentAt: created, GroupID: "g",
			Attributes: map[string]string{"k": "v"}, DeadLetterSource: "orders", Sequence: 7},
	}
}

func TestMessageBlocks(t *testing.T) {
	var out bytes.Buffer
	if err := printMessages(&out, testMessages()); err != nil {
		t.Fatal(err)
	}
	want := `message id      m1
receive count   1
receipt handle  h1
sent at         2026-03-01T12:00:00Z
tags            urgent, eu
body            hello

message id          m2
receive count       3
receipt handle      h2
sent at             2026-03-01T12:00:00Z
group               g
attributes          k=v
dead-letter source  orders
body                two
                    lines
`
	if out.String() != want {
		t.Errorf("receive:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestSendResultTable(t *testing.T) {
	var out bytes.Buffer
	if err := printSendResult(&out, quorumq.SendResult{MessageID: "01ABC", Sequence: 42}); err != nil {
		t.Fatal(err)
	}
	if want := "message id  01ABC\nsequence    42\n"; out.String() != want {
		t.Errorf("send: %q, want %q", out.String(), want)
	}
}

// -o json prints what the REST API prints: lowerCamel names, every field,
// and byte-stable output.
func TestReceiveJSON(t *testing.T) {
	var out bytes.Buffer
	if err := writeJSON(&out, receiveProto(testMessages())); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Messages []map[string]any `json:"messages"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(got.Messages) != 2 {
		t.Fatalf("messages: %s", out.String())
	}
	m := got.Messages[1]
	for k, want := range map[string]any{
		"messageId": "m2", "receiptHandle": "h2", "body": "two\nlines", "receiveCount": float64(3),
		"groupId": "g", "sequence": "7", "deadLetterSource": "orders", "sentAt": "2026-03-01T12:00:00Z",
		"firstReceivedAt": nil,
	} {
		if v, ok := m[k]; !ok || fmt.Sprint(v) != fmt.Sprint(want) {
			t.Errorf("%s = %v (present %v), want %v", k, v, ok, want)
		}
	}
	if !strings.HasPrefix(out.String(), "{\n  \"messages\": [\n    {\n      \"messageId\": \"m1\",") {
		t.Errorf("not indented as expected:\n%s", out.String())
	}
	for range 20 { // protojson randomizes whitespace between builds; ours must not vary
		var again bytes.Buffer
		if err := writeJSON(&again, receiveProto(testMessages())); err != nil {
			t.Fatal(err)
		}
		if again.String() != out.String() {
			t.Fatal("writeJSON output is not stable")
		}
	}

	out.Reset()
	if err := writeJSON(&out, receiveProto(nil)); err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"messages\": []\n}\n"; out.String() != want {
		t.Errorf("empty receive: %q, want %q", out.String(), want)
	}
}

func TestQueueJSON(t *testing.T) {
	var out bytes.Buffer
	if err := writeJSON(&out, queueProto(testQueues()[0], true)); err != nil {
		t.Fatal(err)
	}
	var q struct {
		Name       string `json:"name"`
		Attributes struct {
			VisibilityTimeout string `json:"visibilityTimeout"`
			DeliveryDelay     any    `json:"deliveryDelay"`
			DeadLetter        struct {
				Queue           string `json:"queue"`
				MaxReceiveCount int    `json:"maxReceiveCount"`
			} `json:"deadLetter"`
		} `json:"attributes"`
		Tags      map[string]string `json:"tags"`
		CreatedAt string            `json:"createdAt"`
		Stats     *struct {
			Visible  string `json:"visible"`
			InFlight string `json:"inFlight"`
			Delayed  string `json:"delayed"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(out.Bytes(), &q); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	a := q.Attributes
	if q.Name != "orders" || a.VisibilityTimeout != "60s" || a.DeadLetter.Queue != "orders-dlq" || a.DeadLetter.MaxReceiveCount != 5 ||
		q.Tags["team"] != "shop" || q.CreatedAt != "2026-03-01T12:00:00Z" || q.Stats == nil ||
		q.Stats.Visible != "12" || q.Stats.InFlight != "3" || q.Stats.Delayed != "1" {
		t.Errorf("queue JSON:\n%s", out.String())
	}

	out.Reset()
	if err := writeJSON(&out, queueProto(testQueues()[1], false)); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, `"stats": null`) || !strings.Contains(s, `"deadLetter": null`) || !strings.Contains(s, `"fifo": true`) {
		t.Errorf("queue JSON without stats:\n%s", s)
	}
}

func TestSendSummary(t *testing.T) {
	s := sendSummary{Sent: 48, Failed: 2, Skipped: 1, Elapsed: 1500 * time.Millisecond}
	var out bytes.Buffer
	if err := printSendSummary(&out, outputTable, s); err != nil {
		t.Fatal(err)
	}
	if want := "sent 48 messages in 1.5s (32 msg/s), 2 failed, 1 empty lines skipped\n"; out.String() != want {
		t.Errorf("summary %q, want %q", out.String(), want)
	}
	out.Reset()
	if err := printSendSummary(&out, outputJSON, s); err != nil {
		t.Fatal(err)
	}
	var got map[string]float64
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got["sent"] != 48 || got["failed"] != 2 || got["skipped"] != 1 || got["seconds"] != 1.5 {
		t.Errorf("JSON summary %s (%v)", out.String(), err)
	}
	s.FailedLines, s.NotSentFrom = []lineRange{{3, 3}, {7, 7}}, 60
	out.Reset()
	if err := printSendSummary(&out, outputTable, s); err != nil {
		t.Fatal(err)
	}
	if want := "sent 48 messages in 1.5s (32 msg/s), 2 failed (lines 3, 7), not sent from line 60, 1 empty lines skipped\n"; out.String() != want {
		t.Errorf("summary %q, want %q", out.String(), want)
	}
	var lines []lineRange
	for _, l := range []int{4, 5, 6, 9, 11, 12} {
		lines = addLine(lines, l)
	}
	if got := lineList(lines); got != "lines 4-6, 9, 11-12" {
		t.Errorf("lineList %q", got)
	}
	if got := lineList([]lineRange{{8, 8}}); got != "line 8" {
		t.Errorf("lineList %q", got)
	}
	lines = nil
	for l := 1; l < 100; l += 2 {
		lines = addLine(lines, l)
	}
	if got := lineList(lines); !strings.HasSuffix(got, ", 39, and 30 more ranges") {
		t.Errorf("lineList of 50 ranges %q", got)
	}
	if got := progressLine(10, 0, 99.6); got != "sent 10 (100 msg/s)" {
		t.Errorf("progress %q", got)
	}
	if got := progressLine(10, 2, 5); got != "sent 10, failed 2 (5 msg/s)" {
		t.Errorf("progress %q", got)
	}
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 30 * time.Second: "30s", time.Minute: "1m", 90 * time.Second: "1m30s",
		96 * time.Hour: "96h", time.Hour + time.Minute: "1h1m", 1500 * time.Millisecond: "1.5s",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestExitCode(t *testing.T) {
	notFound := &quorumq.Error{Code: codes.NotFound, Reason: quorumq.ReasonQueueNotFound, Message: `queue "x" not found`}
	for err, want := range map[error]int{
		nil:                                 0,
		notFound:                            exitNotFound,
		fmt.Errorf("after 3: %w", notFound): exitNotFound,
		&quorumq.Error{Code: codes.NotFound, Reason: quorumq.ReasonMessageNotFound}: exitNotFound,
		status.Error(codes.NotFound, "no"):                                          exitNotFound,
		&quorumq.Error{Code: codes.InvalidArgument}:                                 exitError,
		errors.New("boom"): exitError,
	} {
		if got := exitCode(err); got != want {
			t.Errorf("exitCode(%v) = %d, want %d", err, got, want)
		}
	}
	if got := errorMessage(fmt.Errorf("quorumq: send: giving up: %w", notFound)); got != `send: giving up: NOT_FOUND QUEUE_NOT_FOUND: queue "x" not found` {
		t.Errorf("errorMessage keeps the prefix: %q", got)
	}
}

// A client subcommand's error goes to stderr as "quorumq: ..." (not
// cobra's "Error: ..."), with exit status 2 for NotFound.
func TestRunEErrors(t *testing.T) {
	var exited []int
	orig := osExit
	osExit = func(code int) { exited = append(exited, code) }
	t.Cleanup(func() { osExit = orig })

	run := func(err error) string {
		var stderr bytes.Buffer
		cmd := &cobra.Command{Use: "x", SilenceUsage: true, RunE: runE(func(*cobra.Command, []string) error { return err })}
		cmd.SetErr(&stderr)
		cmd.SetOut(&stderr)
		cmd.SetArgs(nil)
		if got := cmd.Execute(); (got == nil) != (err == nil) {
			t.Errorf("Execute = %v, want %v", got, err)
		}
		return stderr.String()
	}
	if got := run(errors.New("boom")); got != "quorumq: boom\n" || len(exited) != 0 {
		t.Errorf("stderr %q, exits %v", got, exited)
	}
	nf := &quorumq.Error{Code: codes.NotFound, Reason: quorumq.ReasonQueueNotFound, Message: `queue "x" not found`}
	if got := run(nf); got != "quorumq: NOT_FOUND QUEUE_NOT_FOUND: queue \"x\" not found\n" || len(exited) != 1 || exited[0] != exitNotFound {
		t.Errorf("stderr %q, exits %v", got, exited)
	}
}

// Usage errors of client subcommands carry the same prefix, bad -o values
// are refused at parse time, and --help documents the exit codes.
func TestClientCommandUsage(t *testing.T) {
	for _, args := range [][]string{
		{"receive"},
		{"queue", "get", "q", "-o", "xml"},
	} {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		if err := root.Execute(); err == nil || !strings.HasPrefix(out.String(), "quorumq: ") {
			t.Errorf("%v: %v %q", args, err, out.String())
		}
	}
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"send", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Exit codes:", "2  the queue or message does not exist", "--file", "-o, --output"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("send --help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestEndpoints(t *testing.T) {
	c := clientFlags{endpoint: " a:1, b:2 ,,c:3"}
	got, err := c.endpoints()
	if err != nil || strings.Join(got, "|") != "a:1|b:2|c:3" {
		t.Errorf("endpoints = %q, %v", got, err)
	}
	c.endpoint = " , "
	if _, err := c.endpoints(); err == nil {
		t.Error("an empty --endpoint was accepted")
	}
}

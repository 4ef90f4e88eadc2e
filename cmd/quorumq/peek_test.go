package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// peek lists messages without leasing them (-o json is the API's
// PeekMessagesResponse), filters by state, and `message get` shows one
// message or exits 2 for an unknown id.
func TestPeekAndMessageGet(t *testing.T) {
	n := startBenchNode(t)
	ep := "--endpoint=" + n.GRPCAddr()
	if _, stderr, _, err := runCLI(t, nil, "queue", "create", "browse", ep); err != nil {
		t.Fatalf("create: %v %s", err, stderr)
	}
	for _, b := range []string{"one", "two"} {
		if _, stderr, _, err := runCLI(t, nil, "send", "browse", b, ep); err != nil {
			t.Fatalf("send: %v %s", err, stderr)
		}
	}
	if _, stderr, _, err := runCLI(t, nil, "receive", "browse", "--visibility-timeout", "1h", ep); err != nil {
		t.Fatalf("receive: %v %s", err, stderr)
	}
	stdout, stderr, _, err := runCLI(t, nil, "peek", "browse", "-o", "json", ep)
	if err != nil {
		t.Fatalf("peek: %v %s", err, stderr)
	}
	var page struct {
		Messages []struct {
			MessageID    string `json:"messageId"`
			Body         string `json:"body"`
			State        string `json:"state"`
			ReceiveCount int    `json:"receiveCount"`
		} `json:"messages"`
	}
	if err := json.Unmarshal([]byte(stdout), &page); err != nil || len(page.Messages) != 2 || strings.Contains(stdout, "receiptHandle") {
		t.Fatalf("peek -o json: %v\n%s", err, stdout)
	}
	if m := page.Messages[0]; m.Body != "one" || m.State != "MESSAGE_STATE_IN_FLIGHT" || m.ReceiveCount != 1 {
		t.Fatalf("first message %+v", m)
	}
	stdout, stderr, _, err = runCLI(t, nil, "peek", "browse", "--state", "visible", ep)
	if err != nil || !strings.Contains(stdout, "two") || strings.Contains(stdout, "one") || !strings.Contains(stdout, "VISIBLE") {
		t.Fatalf("peek --state visible: %v\n%s%s", err, stdout, stderr)
	}
	stdout, stderr, _, err = runCLI(t, nil, "peek", "browse", "--limit", "1", ep)
	if err != nil || !strings.Contains(stderr, "--page-token ") {
		t.Fatalf("peek --limit 1: %v\n%s%s", err, stdout, stderr)
	}
	if _, _, _, err := runCLI(t, nil, "peek", "browse", "--state", "gone", ep); err == nil {
		t.Fatal("peek --state gone was accepted")
	}
	stdout, stderr, _, err = runCLI(t, nil, "message", "get", "browse", page.Messages[1].MessageID, ep)
	if err != nil || !strings.Contains(stdout, "two") || !strings.Contains(stdout, "VISIBLE") {
		t.Fatalf("message get: %v\n%s%s", err, stdout, stderr)
	}
	_, stderr, exit, err := runCLI(t, nil, "message", "get", "browse", "nope", ep)
	if err == nil || exit != exitNotFound || !strings.Contains(stderr, "MESSAGE_NOT_FOUND") {
		t.Fatalf("message get of an unknown id: err %v exit %d\n%s", err, exit, stderr)
	}
}

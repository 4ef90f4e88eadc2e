package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// quorumq send --priority, queue create --priority-mode / --fairness,
// queue update --priority-weight: a receive takes the highest priority
// first and its JSON carries each message's priority.
func TestSendPriorityFlag(t *testing.T) {
	n := startBenchNode(t)
	ep := "--endpoint=" + n.GRPCAddr()
	stdout, stderr, _, err := runCLI(t, nil, "queue", "create", "urgent", "--priority-mode", "weighted", ep)
	if err != nil || !strings.Contains(stdout, "weighted (10:1)") {
		t.Fatalf("create: %v %q %s", err, stdout, stderr)
	}
	if stdout, stderr, _, err = runCLI(t, nil, "queue", "update", "urgent", "--priority-weight", "3", ep); err != nil || !strings.Contains(stdout, "weighted (3:1)") {
		t.Fatalf("update: %v %q %s", err, stdout, stderr)
	}
	if stdout, stderr, _, err = runCLI(t, nil, "queue", "create", "tenants", "--fairness", "group", ep); err != nil || !strings.Contains(stdout, "fairness") {
		t.Fatalf("create fair: %v %q %s", err, stdout, stderr)
	}
	for _, m := range []struct{ body, prio string }{{"low", "0"}, {"default", ""}, {"high", "9"}} {
		args := []string{"send", "urgent", m.body, ep}
		if m.prio != "" {
			args = append(args, "--priority", m.prio)
		}
		if _, stderr, _, err := runCLI(t, nil, args...); err != nil {
			t.Fatalf("send %s: %v %s", m.body, err, stderr)
		}
	}
	if _, _, _, err := runCLI(t, nil, "send", "urgent", "x", "--priority", "10", ep); err == nil {
		t.Fatal("--priority 10 was accepted")
	}
	stdout, stderr, _, err = runCLI(t, nil, "receive", "urgent", "--max", "3", "-o", "json", ep)
	var r struct {
		Messages []struct {
			Body     string `json:"body"`
			Priority int    `json:"priority"`
		} `json:"messages"`
	}
	if err != nil || json.Unmarshal([]byte(stdout), &r) != nil {
		t.Fatalf("receive: %v %q %s", err, stdout, stderr)
	}
	var got []string
	for _, m := range r.Messages {
		got = append(got, fmt.Sprintf("%s/%d", m.Body, m.Priority))
	}
	if fmt.Sprint(got) != "[high/9 default/4 low/0]" {
		t.Errorf("received %v", got)
	}
}

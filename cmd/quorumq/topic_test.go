package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// quorumq topic create / publish / subscribe / group / read against a dev
// node: a subscribed queue gets the message, a group reads it and commits,
// a reset replays it.
func TestTopicCommands(t *testing.T) {
	n := startBenchNode(t)
	ep := "--endpoint=" + n.GRPCAddr()
	run := func(args ...string) string {
		t.Helper()
		stdout, stderr, _, err := runCLI(t, nil, append(args, ep)...)
		if err != nil {
			t.Fatalf("%v: %v %s", args, err, stderr)
		}
		return stdout
	}
	if out := run("topic", "create", "news", "--partitions", "2", "--retention", "1h"); !strings.Contains(out, "news\tpartitions=2 retention=1h0m0s") {
		t.Fatalf("create: %q", out)
	}
	run("queue", "create", "inbox")
	if out := run("topic", "subscribe", "news", "inbox", "--all", "sport"); !strings.Contains(out, "subscribed queue inbox to topic news") {
		t.Fatalf("subscribe: %q", out)
	}
	run("topic", "group", "create", "news", "g")
	out := run("topic", "publish", "news", "goal!", "--key", "k", "--tag", "sport")
	if !strings.Contains(out, "offset=0") {
		t.Fatalf("publish: %q", out)
	}
	run("topic", "publish", "news", "rain", "--key", "k")
	// The key decides the partition: both messages are on the same one.
	var pub struct {
		Partition int `json:"partition"`
	}
	if err := json.Unmarshal([]byte(run("topic", "publish", "news", "third", "--key", "k", "-o", "json")), &pub); err != nil {
		t.Fatal(err)
	}
	p := []string{"--partition", []string{"0", "1"}[pub.Partition]}
	if out := run(append([]string{"topic", "read", "news", "--group", "g", "--commit"}, p...)...); strings.Count(out, "\n") != 3 ||
		!strings.HasPrefix(out, "0\t") || !strings.Contains(out, "goal!") || !strings.Contains(out, "\t"+"rain") {
		t.Fatalf("read: %q", out)
	}
	stdout, stderr, _, err := runCLI(t, nil, append([]string{"topic", "read", "news", "--group", "g", ep}, p...)...)
	if err != nil || stdout != "" || !strings.Contains(stderr, "no messages") {
		t.Fatalf("read after commit: %v %q %q", err, stdout, stderr)
	}
	run("topic", "group", "reset", "news", "g")
	if out := run(append([]string{"topic", "read", "news", "--group", "g", "--max", "1"}, p...)...); !strings.Contains(out, "goal!") {
		t.Fatalf("read after reset: %q", out)
	}
	if out := run("receive", "inbox", "--max", "10", "--wait", "10s"); !strings.Contains(out, "goal!") || strings.Contains(out, "rain") {
		t.Fatalf("subscribed queue: %q", out)
	}
	if out := run("topic", "get", "news"); !strings.Contains(out, "subscription=inbox[all:sport") || !strings.Contains(out, "3 messages") {
		t.Fatalf("get: %q", out)
	}
	run("topic", "delete", "news")
	_, _, exit, err := runCLI(t, nil, "topic", "get", "news", ep)
	if err == nil || exit != exitNotFound {
		t.Fatalf("get after delete: %v exit %d", err, exit)
	}
}

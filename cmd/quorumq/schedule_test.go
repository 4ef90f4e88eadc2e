package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// quorumq message cancel / reschedule: by id, with -o json and exit code 2
// for an id that names nothing.
func TestMessageCancelAndReschedule(t *testing.T) {
	n := startBenchNode(t)
	ep := "--endpoint=" + n.GRPCAddr()
	if _, stderr, _, err := runCLI(t, nil, "queue", "create", "sched", ep); err != nil {
		t.Fatalf("create: %v %s", err, stderr)
	}
	send := func() string {
		t.Helper()
		stdout, stderr, _, err := runCLI(t, nil, "send", "sched", "hello", "--delay", "1h", "-o", "json", ep)
		var r struct {
			MessageID string `json:"messageId"`
		}
		if err != nil || json.Unmarshal([]byte(stdout), &r) != nil || r.MessageID == "" {
			t.Fatalf("send: %v %q %s", err, stdout, stderr)
		}
		return r.MessageID
	}
	id := send()
	at := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	stdout, stderr, _, err := runCLI(t, nil, "message", "reschedule", "sched", id, "--at", at.Format(time.RFC3339), "-o", "json", ep)
	var rr struct {
		VisibleAt time.Time `json:"visibleAt"`
	}
	if err != nil || json.Unmarshal([]byte(stdout), &rr) != nil || !rr.VisibleAt.Equal(at) {
		t.Fatalf("reschedule --at: %v %q %s, want visibleAt %v", err, stdout, stderr, at)
	}
	stdout, stderr, _, err = runCLI(t, nil, "message", "reschedule", "sched", id, "--delay", "0s", ep)
	if err != nil || !strings.Contains(stdout, "message "+id+" visible at ") {
		t.Fatalf("reschedule --delay: %v %q %s", err, stdout, stderr)
	}
	if _, _, _, err := runCLI(t, nil, "message", "reschedule", "sched", id, ep); err == nil {
		t.Fatal("reschedule without --delay or --at was accepted")
	}
	stdout, stderr, _, err = runCLI(t, nil, "message", "cancel", "sched", id, ep)
	if err != nil || strings.TrimSpace(stdout) != "cancelled message "+id {
		t.Fatalf("cancel: %v %q %s", err, stdout, stderr)
	}
	_, stderr, exit, err := runCLI(t, nil, "message", "cancel", "sched", id, ep)
	if err == nil || exit != exitNotFound || !strings.Contains(stderr, "MESSAGE_NOT_FOUND") {
		t.Fatalf("second cancel: err %v, exit %d, stderr %s", err, exit, stderr)
	}
}

package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// quorumq queue create/update --retry-* --message-ttl --max-length,
// send --ttl, nack (failed, --released, --redeliver-after).
func TestNackAndLimitFlags(t *testing.T) {
	n := startBenchNode(t)
	ep := "--endpoint=" + n.GRPCAddr()
	stdout, stderr, _, err := runCLI(t, nil, "queue", "create", "jobs", "--retry-base", "1h", "--retry-factor", "3",
		"--message-ttl", "10m", "--max-length", "5", "--overflow", "drop_oldest", ep)
	if err != nil || !strings.Contains(stdout, "retry backoff") || !strings.Contains(stdout, "message ttl") ||
		!strings.Contains(stdout, "overflow drop_oldest") {
		t.Fatalf("create: %v %q %s", err, stdout, stderr)
	}
	if _, _, _, err := runCLI(t, nil, "queue", "create", "bad", "--retry-factor", "3", ep); err == nil {
		t.Fatal("--retry-factor without --retry-base was accepted")
	}
	if _, _, _, err := runCLI(t, nil, "queue", "create", "bad", "--overflow", "spill", ep); err == nil {
		t.Fatal("--overflow spill was accepted")
	}
	stdout, stderr, _, err = runCLI(t, nil, "queue", "update", "jobs", "--max-length", "7", "-o", "json", ep)
	var q struct {
		Attributes struct {
			MaxLength   string `json:"maxLength"`
			Overflow    string `json:"overflow"`
			MessageTtl  string `json:"messageTtl"`
			RetryPolicy struct {
				Base   string  `json:"base"`
				Factor float64 `json:"factor"`
			} `json:"retryPolicy"`
		} `json:"attributes"`
	}
	if err != nil || json.Unmarshal([]byte(stdout), &q) != nil || q.Attributes.MaxLength != "7" ||
		q.Attributes.Overflow != "OVERFLOW_POLICY_DROP_OLDEST" || q.Attributes.MessageTtl != "600s" ||
		q.Attributes.RetryPolicy.Base != "3600s" || q.Attributes.RetryPolicy.Factor != 3 {
		t.Fatalf("update --max-length: %v %q %s", err, stdout, stderr)
	}
	if _, stderr, _, err := runCLI(t, nil, "send", "jobs", "work", "--ttl", "1m", ep); err != nil {
		t.Fatalf("send --ttl: %v %s", err, stderr)
	}
	receive := func() (handle string, failed, released int) {
		t.Helper()
		stdout, stderr, _, err := runCLI(t, nil, "receive", "jobs", "--wait", "0s", "-o", "json", ep)
		var r struct {
			Messages []struct {
				ReceiptHandle string `json:"receiptHandle"`
				FailedCount   int    `json:"failedCount"`
				ReleasedCount int    `json:"releasedCount"`
			} `json:"messages"`
		}
		if err != nil || json.Unmarshal([]byte(stdout), &r) != nil {
			t.Fatalf("receive: %v %q %s", err, stdout, stderr)
		}
		if len(r.Messages) == 0 {
			return "", 0, 0
		}
		return r.Messages[0].ReceiptHandle, r.Messages[0].FailedCount, r.Messages[0].ReleasedCount
	}
	h, _, _ := receive()
	if h == "" {
		t.Fatal("nothing received")
	}
	// Released: back at once, counted as released.
	if stdout, stderr, _, err := runCLI(t, nil, "nack", "jobs", h, "--released", ep); err != nil || !strings.Contains(stdout, "visible again at") {
		t.Fatalf("nack --released: %v %q %s", err, stdout, stderr)
	}
	h, failed, released := receive()
	if h == "" || failed != 0 || released != 1 {
		t.Fatalf("after --released: handle %q failed %d released %d", h, failed, released)
	}
	// Failed: the queue's backoff (1h) keeps it away.
	stdout, stderr, _, err = runCLI(t, nil, "nack", "jobs", h, "-o", "json", ep)
	var nr struct {
		VisibleAt time.Time `json:"visibleAt"`
	}
	if err != nil || json.Unmarshal([]byte(stdout), &nr) != nil || time.Until(nr.VisibleAt) < 50*time.Minute {
		t.Fatalf("nack: %v %q %s, want visible in about an hour", err, stdout, stderr)
	}
	if h, _, _ := receive(); h != "" {
		t.Fatal("received during the backoff")
	}
}

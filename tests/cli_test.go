package tests

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

func cli(t *testing.T, p *proc, args ...string) string {
	t.Helper()
	args = append(args, "--endpoint", p.grpcAddr)
	out, err := exec.Command(binary, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("quorumq %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The client subcommands drive a queue end to end, and /metrics counts it.
func TestCLIRoundTrip(t *testing.T) {
	p := startServe(t, t.TempDir())
	waitReady(t, p.client(t))
	cli(t, p, "queue", "create", "cli", "--visibility-timeout", "1m")
	cli(t, p, "send", "cli", "hello from the cli", "--tag", "urgent")
	var recv struct {
		Messages []struct {
			Body          string   `json:"body"`
			Tags          []string `json:"tags"`
			ReceiptHandle string   `json:"receiptHandle"`
		} `json:"messages"`
	}
	if err := json.Unmarshal([]byte(cli(t, p, "receive", "cli", "--max", "10", "--wait", "1s", "--all", "urgent")), &recv); err != nil {
		t.Fatal(err)
	}
	if len(recv.Messages) != 1 || recv.Messages[0].Body != "hello from the cli" {
		t.Fatalf("received %+v", recv)
	}
	cli(t, p, "delete", "cli", recv.Messages[0].ReceiptHandle)
	if got := cli(t, p, "queue", "get", "cli"); !strings.Contains(got, `"name"`) {
		t.Fatalf("queue get printed %s", got)
	}
	if got := cli(t, p, "queue", "list"); !strings.Contains(got, "cli") {
		t.Fatalf("queue list printed %s", got)
	}
	cli(t, p, "queue", "purge", "cli")

	resp, err := http.Get("http://" + p.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`quorumq_messages_sent_total{queue="cli",tenant="default"} 1`,
		`quorumq_messages_received_total{queue="cli",tenant="default"} 1`,
		`quorumq_messages_deleted_total{queue="cli",tenant="default"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
	cli(t, p, "queue", "delete", "cli")
	out, err := exec.Command(binary, "queue", "get", "cli", "--endpoint", p.grpcAddr).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "NotFound") {
		t.Fatalf("get of a deleted queue: %v %s", err, out)
	}
}

package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const topicsSection = "## Topics: fan-out and replay"

// The README's topic block runs as written against a dev node (on free
// ports): the subscribed queue gets only the matching message, the group
// reads both in order, commits (lag 0) and reads them again after a reset.
func TestReadmeTopicsWalkthrough(t *testing.T) {
	needTools(t, "bash", "curl", "seq")
	blocks := readmeBlockList(t, topicsSection)
	if len(blocks) != 1 {
		t.Fatalf("the README's topics section has %d sh blocks, want 1", len(blocks))
	}
	httpAddr, grpcAddr, metricsAddr, raftAddr := freePort(t), freePort(t), freePort(t), freePort(t)
	defaultPort := regexp.MustCompile(`:(8080|9090|9100|7000)\b`)
	var script strings.Builder
	script.WriteString("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true; wait || true' EXIT\n" +
		"curl() { command curl --fail-with-body \"$@\"; }\n" +
		"./bin/quorumq serve --data-dir data --http-addr " + httpAddr + " --grpc-addr " + grpcAddr +
		" --metrics-addr " + metricsAddr + " --raft-addr " + raftAddr + " --sqs-addr '' >serve.log 2>&1 &\n" +
		"for i in $(seq 300); do command curl -sf -m 1 -o /dev/null " + httpAddr + "/readyz && break; sleep 0.1; done\n")
	for _, c := range blocks[0] {
		c = strings.ReplaceAll(c, "localhost:8080", httpAddr)
		if defaultPort.MatchString(c) {
			t.Fatalf("README topic line names a default port the test does not remap: %s", c)
		}
		script.WriteString(echoed(c) + "echo\n")
	}
	dir := withBin(t)
	t.Cleanup(func() {
		if log, err := os.ReadFile(filepath.Join(dir, "serve.log")); err == nil && t.Failed() {
			t.Logf("serve.log:\n%s", log)
		}
	})
	out := strings.ReplaceAll(runGroupScript(t, dir, script.String(), "QUORUMQ_ENDPOINT="+grpcAddr), " ", "")
	step := func(cmd string) string {
		t.Helper()
		_, rest, ok := strings.Cut(out, cmd)
		if !ok {
			t.Fatalf("the transcript lacks %q:\n%s", cmd, out)
		}
		if next := strings.Index(rest, "$"); next >= 0 {
			rest = rest[:next]
		}
		return rest
	}
	if r := step("billing/messages:receive"); !strings.Contains(r, "order1paid") || strings.Contains(r, "order2") {
		t.Fatalf("the subscribed queue should hold only the paid order:\n%s", r)
	}
	if r := step("audit:read"); !strings.Contains(r, "order1paid") || !strings.Contains(r, "order2placed") ||
		strings.Index(r, "order1") > strings.Index(r, "order2") {
		t.Fatalf("the group should read both orders in order:\n%s", r)
	}
	if r := step("groups/audit\n"); !strings.Contains(r, `"lag":"0"`) {
		t.Fatalf("after the commit the lag should be 0:\n%s", r)
	}
	if r := step("topicreadorders"); !strings.Contains(r, "0\t") || !strings.Contains(r, "order2placed") {
		t.Fatalf("after the reset the group should read both again:\n%s", r)
	}
	if r := step("v1/topics/orders\n"); !strings.Contains(r, `"endOffset":"2"`) {
		t.Fatalf("GetTopic should show partition 1's two messages:\n%s", r)
	}
	// The member gets every partition and prints partition 1's two orders
	// (the reset put the group back at the start), in order.
	if r := step("topicconsumeorders"); !strings.Contains(r, "assignedpartitions[0123]") || !strings.Contains(r, "1\t0\t") ||
		!strings.Contains(r, "order1paid") || strings.Index(r, "order1paid") > strings.Index(r, "order2placed") {
		t.Fatalf("topic consume should print both orders in order:\n%s", r)
	}
	if r := strings.ReplaceAll(step("audit:join"), "\n", ""); !strings.Contains(r, `"memberId"`) || !strings.Contains(r, `"partitions":[0,1,2,3]`) {
		t.Fatalf("a join should answer a member id and every partition:\n%s", r)
	}
}

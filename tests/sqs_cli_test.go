//go:build sqscli

package tests

import (
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Run by `make test-sqs` (the aws CLI starts slowly: about a minute for
// the two CLIs), not by `make test`, whose SQS tests use the Go SDK and
// raw Query requests.

// The README's "Use it from the AWS SDK / CLI" walkthrough works verbatim
// with the aws CLI (only the port changes), with the aws found first in
// PATH and, where it is another program, Debian's /usr/bin/aws (v2, which
// speaks the Query protocol to SQS).
func TestReadmeSQSWalkthrough(t *testing.T) {
	needTools(t, "bash", "aws")
	cmds := readmeBlocks(t, "## Use it from the AWS SDK / CLI")
	if len(cmds) < 6 {
		t.Fatalf("found only %d commands in the README's SQS section", len(cmds))
	}
	clis := []string{""}
	first, _ := exec.LookPath("aws")
	if deb, err := filepath.EvalSymlinks("/usr/bin/aws"); err == nil {
		if f, _ := filepath.EvalSymlinks(first); f != deb {
			clis = append(clis, "/usr/bin")
		}
	}
	for _, dir := range clis {
		p := startServe(t, t.TempDir(), "--sqs-addr", "127.0.0.1:0")
		waitReady(t, p.client(t))
		var script strings.Builder
		script.WriteString("set -euo pipefail\n")
		if dir != "" {
			script.WriteString("export PATH=" + dir + ":$PATH\n")
		}
		script.WriteString("aws --version\n")
		for _, c := range cmds {
			script.WriteString(echoed(strings.ReplaceAll(c, "127.0.0.1:9324", p.sqsAddr)))
		}
		out := runScript(t, t.TempDir(), script.String(), "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
		if !strings.Contains(out, `"Body": "hello"`) || !strings.Contains(out, "http://"+p.sqsAddr+"/default/q") {
			t.Fatalf("the walkthrough did not show the queue and the message")
		}
		// The delete took the message away.
		code, body := queryCall(t, p.sqsAddr, url.Values{"Action": {"GetQueueAttributes"}, "QueueUrl": {"http://" + p.sqsAddr + "/default/q"},
			"AttributeName.1": {"All"}})
		if code != 200 || !strings.Contains(body, "<Name>ApproximateNumberOfMessages</Name><Value>0</Value>") ||
			!strings.Contains(body, "<Name>ApproximateNumberOfMessagesNotVisible</Name><Value>0</Value>") {
			t.Fatalf("after the walkthrough: %s", body)
		}
	}
}

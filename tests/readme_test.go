package tests

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// readmeCommands returns the shell lines of the README's curl walkthrough,
// in order.
func readmeCommands(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		cmds           []string
		inWalk, inCode bool
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "### A walk through the REST API"):
			inWalk = true
		case inWalk && strings.HasPrefix(line, "### "):
			return cmds
		case inWalk && strings.HasPrefix(line, "```sh"):
			inCode = true
		case inWalk && inCode && strings.HasPrefix(line, "```"):
			inCode = false
		case inWalk && inCode && strings.TrimSpace(line) != "":
			cmds = append(cmds, line)
		}
	}
	return cmds
}

// The README's curl walkthrough works verbatim against a fresh node (only
// the port is changed): every call succeeds except the one that shows an
// error.
func TestReadmeCurlWalkthrough(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for the README walkthrough: %v", tool, err)
		}
	}
	cmds := readmeCommands(t)
	if len(cmds) < 15 {
		t.Fatalf("found only %d commands in the README walkthrough", len(cmds))
	}
	p := startServe(t, t.TempDir())
	waitReady(t, p.client(t))
	var script strings.Builder
	// --fail-with-body makes an HTTP error fail the step; the function keeps
	// the README's lines unchanged.
	script.WriteString("set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; }\n")
	for _, c := range cmds {
		c = strings.ReplaceAll(c, "localhost:8080", p.httpAddr)
		if strings.Contains(c, "/v1/queues/nope") {
			script.WriteString("out=$(command " + c + ")\necho \"$out\"\ngrep -q QUEUE_NOT_FOUND <<<\"$out\"\n")
			continue
		}
		script.WriteString("echo '$ " + strings.ReplaceAll(c, "'", `'\''`) + "'\n" + c + "\necho\n")
	}
	out, err := exec.Command("bash", "-c", script.String()).CombinedOutput()
	t.Logf("walkthrough transcript:\n%s", out)
	if err != nil {
		t.Fatalf("README walkthrough failed: %v", err)
	}
}

package tests

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// Which README command blocks are run or checked, and by what:
//   - "### A walk through the REST API with curl": TestReadmeCurlWalkthrough
//   - "### The command line": TestReadmeCLIWalkthrough
//   - "## Quick start" (make run, make test) and "## A three-node cluster"
//     (make cluster, its ports): TestReadmeMakeTargetsAndPorts; the
//     cluster section's CLI lines, kill included: TestReadmeClusterWalkthrough
//   - "## Authentication, tenants and quotas": the dev token and quota
//     blocks by TestReadmeAuthAndQuotaWalkthrough, the TLS block by
//     TestReadmePeerCertificateRecipe (readme_auth_test.go)
//   - "### Access keys for the SQS endpoint": TestReadmeAccessKeyWalkthrough
//     (readme_sqsauth_test.go)
//   - "## Topics: fan-out and replay": TestReadmeTopicsWalkthrough
//     (readme_topics_test.go)
//   - "## Use it from the AWS SDK / CLI": the aws CLI block by
//     TestReadmeSQSWalkthrough (sqs_cli_test.go, build tag sqscli, run by
//     `make test-sqs`), the Go program by TestReadmeSQSGoExample
//     (readme_sqs_go_test.go, in `make test`)
//   - "### Scale out from 3 to 5 nodes", "### Replace a failed machine",
//     "### Retire a node": TestReadmeMembershipWalkthroughs
//     (readme_membership_test.go)
//   - "## Go SDK" has no block; it points at sdk/examples (run by
//     sdk/examples/producer/main_test.go) and the sdk Example functions.

// readmeSection returns the README's lines under the heading that starts
// with heading, up to the next heading of any level.
func readmeSection(t *testing.T, heading string) []string {
	t.Helper()
	f, err := os.Open("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		lines          []string
		inSect, inCode bool
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```"):
			inCode = !inCode
		case !inCode && strings.HasPrefix(line, heading):
			inSect = true
			continue
		case !inCode && inSect && strings.HasPrefix(line, "#"):
			return lines
		}
		if inSect {
			lines = append(lines, line)
		}
	}
	if !inSect {
		t.Fatalf("README has no section %q", heading)
	}
	return lines
}

// readmeBlocks returns the non-empty lines of the ```sh blocks of a
// README section, in order.
func readmeBlocks(t *testing.T, heading string) []string {
	t.Helper()
	var cmds []string
	for _, b := range readmeBlockList(t, heading) {
		cmds = append(cmds, b...)
	}
	return cmds
}

// readmeBlockList returns the non-empty lines of each ```sh block of a
// README section, one slice per block.
func readmeBlockList(t *testing.T, heading string) [][]string {
	t.Helper()
	var blocks [][]string
	inCode := false
	for _, line := range readmeSection(t, heading) {
		switch {
		case strings.HasPrefix(line, "```sh"):
			inCode = true
			blocks = append(blocks, nil)
		case inCode && strings.HasPrefix(line, "```"):
			inCode = false
		case inCode && strings.TrimSpace(line) != "":
			blocks[len(blocks)-1] = append(blocks[len(blocks)-1], line)
		}
	}
	return blocks
}

// readmeCommands returns the shell lines of the README's curl walkthrough,
// in order.
func readmeCommands(t *testing.T) []string {
	return readmeBlocks(t, "### A walk through the REST API")
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for the README walkthrough: %v", tool, err)
		}
	}
}

// runScript runs script with bash in dir and returns its transcript.
func runScript(t *testing.T, dir, script string, env ...string) string {
	t.Helper()
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("walkthrough transcript:\n%s", out)
	if err != nil {
		t.Fatalf("README walkthrough failed: %v", err)
	}
	return string(out)
}

// echoed is the line c as the script prints it before running it.
func echoed(c string) string {
	return "echo '$ " + strings.ReplaceAll(c, "'", `'\''`) + "'\n" + c + "\n"
}

// The README's curl walkthrough works verbatim against a fresh node (only
// the port is changed): every call succeeds except the one that shows an
// error.
func TestReadmeCurlWalkthrough(t *testing.T) {
	needTools(t, "bash", "curl", "jq")
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
		script.WriteString(echoed(c) + "echo\n")
	}
	runScript(t, t.TempDir(), script.String())
}

// The README's CLI walkthrough runs verbatim (./bin/quorumq is the binary
// under test, the endpoint comes from QUORUMQ_ENDPOINT) against a fresh
// node, every line succeeds, and it does what its comments say: the
// poison message goes to the dead-letter queue and is redriven back.
func TestReadmeCLIWalkthrough(t *testing.T) {
	needTools(t, "bash", "jq", "seq")
	cmds := readmeBlocks(t, "### The command line")
	if len(cmds) < 15 {
		t.Fatalf("found only %d commands in the README's CLI walkthrough", len(cmds))
	}
	for _, c := range cmds {
		if !strings.Contains(c, "./bin/quorumq ") {
			t.Fatalf("README CLI line runs no ./bin/quorumq: %s", c)
		}
	}
	p := startServe(t, t.TempDir())
	waitReady(t, p.client(t))
	dir := withBin(t)
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for _, c := range cmds {
		script.WriteString(echoed(c))
	}
	out := runScript(t, dir, script.String(), "QUORUMQ_ENDPOINT="+p.grpcAddr)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^visibility timeout +2m$`),                          // queue update
		regexp.MustCompile(`(?m)^deleted 1 message$`),                               // delete "$handle"
		regexp.MustCompile(`(?m)^body +poison$`),                                    // the DLQ receive
		regexp.MustCompile(`(?m)^done: moved 1 messages from jobs-dlq in 2 calls$`), // redrive --all
		regexp.MustCompile(`(?m)^poison$`),                                          // back on jobs
		regexp.MustCompile(`(?m)^  visibilityTimeout: 120s$`),                       // -o yaml
		regexp.MustCompile(`(?m)^sent 1000 messages in `),                           // send --file -
		regexp.MustCompile(`(?m)^deleted queue jobs$`),
		regexp.MustCompile(`(?m)^quorumq \S+ \(commit `), // version
	} {
		if !want.MatchString(out) {
			t.Errorf("the walkthrough's transcript lacks %s", want)
		}
	}
}

// The Makefile targets the README names exist, and the three-node
// cluster section's ports and shard count are those of `make cluster`:
// every --endpoint its CLI lines use is a gRPC port the recipe listens on.
func TestReadmeMakeTargetsAndPorts(t *testing.T) {
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	makefile := string(mk)
	for _, heading := range []string{"## Quick start", "## A three-node cluster"} {
		for _, c := range readmeBlocks(t, heading) {
			if target, ok := strings.CutPrefix(c, "make "); ok {
				target = strings.Fields(target)[0]
				if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(target) + `:`).MatchString(makefile) {
					t.Errorf("README runs `make %s`; the Makefile has no such target", target)
				}
			}
		}
	}
	recipe := makefile[strings.Index(makefile, "\ncluster:"):]
	recipe = recipe[:strings.Index(recipe, "\n\n")]
	// The recipe's per-node ports are 808$$i, 909$$i, 700$$i for i in 1 2 3.
	for _, want := range []string{"for i in 1 2 3", "127.0.0.1:808$$i", "127.0.0.1:909$$i", "127.0.0.1:700$$i", "--role api"} {
		if !strings.Contains(recipe, want) {
			t.Errorf("the cluster recipe lacks %q:\n%s", want, recipe)
		}
	}
	if !strings.Contains(makefile, "SHARDS ?= 4") {
		t.Error("the Makefile's SHARDS default is not the README's 4")
	}
	section := strings.Join(readmeSection(t, "## A three-node cluster"), "\n")
	for _, want := range []string{"8081–8083", "9091–9093", "7001–7003", "`--shards 4`", "REST 8080, gRPC 9090"} {
		if !strings.Contains(section, want) {
			t.Errorf("the README's cluster section no longer says %q", want)
		}
	}
	for _, m := range regexp.MustCompile(`--endpoint (\S+)`).FindAllStringSubmatch(section, -1) {
		if !regexp.MustCompile(`^127\.0\.0\.1:909[123]$`).MatchString(m[1]) {
			t.Errorf("README cluster line uses --endpoint %s, not a gRPC port of `make cluster`", m[1])
		}
	}
}

// The three-node section's CLI lines run against a three-node cluster
// with the Makefile's shard count: README node N (gRPC 127.0.0.1:909N) is
// mapped to a test node, README node 1 being the leader of shard 0 (the
// one the README's kill hint names), and the kill line is done by the
// test. The message sent before the crash is received after it.
func TestReadmeClusterWalkthrough(t *testing.T) {
	needTools(t, "bash")
	cmds := readmeBlocks(t, "## A three-node cluster")
	if len(cmds) < 6 || cmds[0] != "make cluster" {
		t.Fatalf("unexpected cluster section blocks: %q", cmds)
	}
	cmds = cmds[1:] // make cluster: checked by TestReadmeMakeTargetsAndPorts
	c := startCluster(t, 3, "--shards", "4")
	leader := c.leader()
	addrs := []string{c.procs[leader].grpcAddr} // README node 1, 2, 3
	for id := uint64(1); id <= 3; id++ {
		if id != leader {
			addrs = append(addrs, c.procs[id].grpcAddr)
		}
	}
	dir := withBin(t)
	var script strings.Builder
	var transcript strings.Builder
	run := func() {
		if script.Len() > 0 {
			transcript.WriteString(runScript(t, dir, "set -euo pipefail\n"+script.String()))
			script.Reset()
		}
	}
	killed := false
	for _, line := range cmds {
		if strings.HasPrefix(line, "kill -9 ") {
			run()
			c.kill(leader)
			killed = true
			continue
		}
		for i, addr := range addrs {
			line = strings.ReplaceAll(line, fmt.Sprintf("127.0.0.1:909%d", i+1), addr)
		}
		if strings.Contains(line, "127.0.0.1:909") {
			t.Fatalf("README cluster line names a port the cluster does not have: %s", line)
		}
		script.WriteString(echoed(line))
	}
	run()
	if !killed {
		t.Fatal("the README's cluster walkthrough kills no node")
	}
	if !regexp.MustCompile(`(?m)^body +survives a crash$`).MatchString(transcript.String()) {
		t.Fatalf("the message sent before the crash was not received after it:\n%s", transcript.String())
	}
}

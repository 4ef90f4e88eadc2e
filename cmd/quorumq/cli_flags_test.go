package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
)

// walk calls fn for cmd and every command below it.
func walk(cmd *cobra.Command, fn func(*cobra.Command)) {
	fn(cmd)
	for _, c := range cmd.Commands() {
		walk(c, fn)
	}
}

// notClients are the commands that talk to no server.
var notClients = []string{"quorumq serve", "quorumq token", "quorumq version", "quorumq completion"}

// Every command's help lists the exit codes, and every command that talks
// to a server, bench and cluster status included, takes the same flags:
// -o, --endpoint (with the hidden older --endpoints), --token, --ca-file.
func TestEveryCommandHasTheSameFlags(t *testing.T) {
	root := newRoot()
	leaves := 0
	walk(root, func(cmd *cobra.Command) {
		if !strings.Contains(cmd.Long, exitStatusHelp) {
			t.Errorf("%s: the long help lacks the exit codes:\n%s", cmd.CommandPath(), cmd.Long)
		}
		if !cmd.Runnable() || cmd.HasSubCommands() {
			return
		}
		leaves++
		path := cmd.CommandPath()
		client := !slices.ContainsFunc(notClients, func(p string) bool { return strings.HasPrefix(path, p) })
		want := []string{"endpoint", "token", "ca-file", "output", "json", "endpoints"}
		if !client {
			want = nil
			if path == "quorumq version" {
				want = []string{"output", "json"}
			}
		}
		for _, name := range want {
			f := cmd.Flags().Lookup(name)
			switch {
			case f == nil:
				t.Errorf("%s has no --%s", path, name)
			case (name == "json" || name == "endpoints") != f.Hidden:
				t.Errorf("%s: --%s hidden = %v", path, name, f.Hidden)
			case name == "output" && f.Shorthand != "o":
				t.Errorf("%s: --output has no -o", path)
			}
		}
	})
	if leaves < 15 {
		t.Fatalf("walked only %d commands", leaves)
	}
}

// --json and --endpoints still work; -o takes yaml; an explicit older
// spelling is not overridden by the environment variable of the new one.
func TestDeprecatedAliasesAndYAML(t *testing.T) {
	n := startBenchNode(t)
	addr := n.GRPCAddr()
	if _, stderr, _, err := runCLI(t, nil, "queue", "create", "alias", "--endpoint", addr); err != nil {
		t.Fatalf("create: %v %s", err, stderr)
	}
	stdout, stderr, _, err := runCLI(t, nil, "cluster", "status", "--json", "--endpoints", addr)
	var cluster struct{ Shards []any }
	if err != nil || json.Unmarshal([]byte(stdout), &cluster) != nil || len(cluster.Shards) != 1 {
		t.Fatalf("cluster status --json --endpoints: %v\n%s%s", err, stdout, stderr)
	}
	if !strings.Contains(stderr, "deprecated") {
		t.Errorf("no deprecation notice on stderr: %q", stderr)
	}

	t.Setenv("QUORUMQ_ENDPOINT", "127.0.0.1:1") // nothing listens there
	stdout, stderr, _, err = runCLI(t, nil, "queue", "get", "alias", "-o", "yaml", "--endpoints", addr, "--timeout", "20s")
	var q struct {
		Name  string
		Stats struct{ Visible string }
	}
	if err != nil || yaml.Unmarshal([]byte(stdout), &q) != nil || q.Name != "alias" || q.Stats.Visible != "0" {
		t.Fatalf("queue get -o yaml --endpoints with QUORUMQ_ENDPOINT set: %v %+v\n%s%s", err, q, stdout, stderr)
	}
	t.Setenv("QUORUMQ_ENDPOINT", addr)
	if stdout, stderr, _, err = runCLI(t, nil, "queue", "get", "alias", "--json"); err != nil || !strings.HasPrefix(stdout, "{\n") {
		t.Fatalf("queue get --json: %v\n%s%s", err, stdout, stderr)
	}
}

// The YAML document is the JSON one: same keys, same values, protojson's
// int64 strings still strings.
func TestYAMLIsTheJSONDocument(t *testing.T) {
	for _, m := range []proto.Message{queueProto(testQueues()[0], true), receiveProto(testMessages())} {
		var js, ys bytes.Buffer
		if err := writeMessage(&js, outputJSON, m); err != nil {
			t.Fatal(err)
		}
		if err := writeMessage(&ys, outputYAML, m); err != nil {
			t.Fatal(err)
		}
		var fromJSON, fromYAML any
		if err := json.Unmarshal(js.Bytes(), &fromJSON); err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(ys.Bytes(), &fromYAML); err != nil {
			t.Fatalf("%v in:\n%s", err, ys.String())
		}
		// YAML integers decode as int, JSON numbers as float64: compare
		// both as JSON.
		b, err := json.Marshal(fromYAML)
		if err != nil {
			t.Fatal(err)
		}
		var normalized any
		if err := json.Unmarshal(b, &normalized); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fromJSON, normalized) {
			t.Errorf("YAML differs from JSON:\n%s\n%s", ys.String(), js.String())
		}
		if strings.ContainsAny(ys.String(), "{[") && !strings.Contains(ys.String(), "{}") && !strings.Contains(ys.String(), "[]") {
			t.Errorf("YAML in flow style:\n%s", ys.String())
		}
	}
}

// queue update changes only the attributes given (PATCH): the retention
// set at create survives a visibility change; a missing queue exits 2.
func TestQueueUpdate(t *testing.T) {
	n := startBenchNode(t)
	ep := "--endpoint=" + n.GRPCAddr()
	if _, stderr, _, err := runCLI(t, nil, "queue", "create", "upd", "--retention", "1h", "--delay", "2s", ep); err != nil {
		t.Fatalf("create: %v %s", err, stderr)
	}
	if _, stderr, _, err := runCLI(t, nil, "queue", "create", "upd-dlq", ep); err != nil {
		t.Fatalf("create: %v %s", err, stderr)
	}
	type attrs struct {
		VisibilityTimeout, MessageRetention, DeliveryDelay string
		DeadLetter                                         *struct {
			Queue           string
			MaxReceiveCount int
		}
	}
	update := func(args ...string) attrs {
		t.Helper()
		stdout, stderr, _, err := runCLI(t, nil, append([]string{"queue", "update", "upd", "-o", "json", ep}, args...)...)
		var q struct{ Attributes attrs }
		if err != nil || json.Unmarshal([]byte(stdout), &q) != nil {
			t.Fatalf("queue update %v: %v\n%s%s", args, err, stdout, stderr)
		}
		return q.Attributes
	}
	if a := update("--visibility-timeout", "2m"); a.VisibilityTimeout != "120s" || a.MessageRetention != "3600s" || a.DeliveryDelay != "2s" {
		t.Fatalf("update --visibility-timeout 2m: %+v", a)
	}
	if a := update("--dead-letter-queue", "upd-dlq", "--max-receive-count", "3", "--delay", "0s"); a.DeadLetter == nil ||
		a.DeadLetter.Queue != "upd-dlq" || a.DeadLetter.MaxReceiveCount != 3 || a.DeliveryDelay != "0s" || a.VisibilityTimeout != "120s" {
		t.Fatalf("update the dead-letter policy and the delay: %+v", a)
	}
	if a := update("--dead-letter-queue", ""); a.DeadLetter != nil || a.MessageRetention != "3600s" {
		t.Fatalf("remove the dead-letter policy: %+v", a)
	}
	// Table output, and the errors.
	if stdout, stderr, _, err := runCLI(t, nil, "queue", "update", "upd", "--receive-wait", "1s", ep); err != nil ||
		!strings.Contains(stdout, "receive wait        1s") {
		t.Fatalf("update (table): %v\n%s%s", err, stdout, stderr)
	}
	for _, args := range [][]string{{"upd"}, {"upd", "--max-receive-count", "2"}} {
		if _, stderr, _, err := runCLI(t, nil, append([]string{"queue", "update", ep}, args...)...); err == nil {
			t.Errorf("queue update %v succeeded: %s", args, stderr)
		}
	}
	_, stderr, exit, err := runCLI(t, nil, "queue", "update", "nope", "--delay", "1s", ep)
	if err == nil || exit != exitNotFound || !strings.HasPrefix(stderr, "quorumq: NotFound") {
		t.Fatalf("update of a missing queue: %v, exit %d, stderr %q", err, exit, stderr)
	}
}

// version and --version print the build info; -o json its fields.
func TestVersion(t *testing.T) {
	stdout, stderr, _, err := runCLI(t, nil, "version", "-o", "json")
	var v buildInfo
	if err != nil || json.Unmarshal([]byte(stdout), &v) != nil || v.GoVersion != runtime.Version() || v.Version == "" || v.Commit == "" {
		t.Fatalf("version -o json: %v %+v\n%s%s", err, v, stdout, stderr)
	}
	line := "quorumq " + v.Version + " (commit "
	if stdout, _, _, err = runCLI(t, nil, "--version"); err != nil || !strings.HasPrefix(stdout, line) || !strings.Contains(stdout, runtime.Version()) {
		t.Fatalf("--version: %v %q", err, stdout)
	}
	if stdout, _, _, err = runCLI(t, nil, "version"); err != nil || !strings.HasPrefix(stdout, line) {
		t.Fatalf("version: %v %q", err, stdout)
	}
	// A release build's -X main.version wins over the build info.
	version = "v9.9.9"
	defer func() { version = "" }()
	if b := readBuildInfo(); b.Version != "v9.9.9" {
		t.Fatalf("with main.version set: %+v", b)
	}
}

// An API-tier node keeps no data: its banner says so instead of naming
// the (unused) data directory.
func TestServeBanner(t *testing.T) {
	api := banner(100, "api", "./data", "http://127.0.0.1:8080", "127.0.0.1:9090", "off", "off")
	if strings.Contains(api, "data in") || !strings.HasPrefix(api, "quorumq node 100 serving (API tier, no data)\n") {
		t.Errorf("API-tier banner:\n%s", api)
	}
	storage := banner(1, "storage", "./data/n1", "http://127.0.0.1:8081", "127.0.0.1:9091", "off", "off")
	if !strings.HasPrefix(storage, "quorumq node 1 serving (data in ./data/n1)\n  REST     http://127.0.0.1:8081/v1/queues\n  gRPC     127.0.0.1:9091\n") {
		t.Errorf("storage banner:\n%s", storage)
	}
	if !strings.Contains(storage, "\n  console  http://127.0.0.1:8081/ui/\n") {
		t.Errorf("the banner does not name the web console:\n%s", storage)
	}
}

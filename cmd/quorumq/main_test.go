package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestParsePeers(t *testing.T) {
	got, err := parsePeers("1=127.0.0.1:7000, 2=127.0.0.1:7001")
	if err != nil || len(got) != 2 || got[2] != "127.0.0.1:7001" {
		t.Fatalf("parsePeers = %v, %v", got, err)
	}
	for _, bad := range []string{"x=1:2", "1", "0=a:1", "1="} {
		if _, err := parsePeers(bad); err == nil {
			t.Errorf("parsePeers(%q) accepted", bad)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:1": true, "[::1]:9": true,
		"0.0.0.0:8080": false, ":8080": false, "10.0.0.1:1": false, "nonsense": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// Flags come from QUORUMQ_<FLAG> unless given on the command line; a bad
// value is an error naming the variable.
func TestFlagsFromEnvironment(t *testing.T) {
	t.Setenv("QUORUMQ_HTTP_ADDR", "0.0.0.0:1")
	t.Setenv("QUORUMQ_DATA_DIR", t.TempDir())
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"serve"})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), "--http-addr 0.0.0.0:1") {
		t.Fatalf("serve with QUORUMQ_HTTP_ADDR=0.0.0.0:1 in dev mode: %v", err)
	}

	t.Setenv("QUORUMQ_SHARDS", "many")
	root = newRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"serve"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "QUORUMQ_SHARDS") {
		t.Fatalf("bad QUORUMQ_SHARDS: %v", err)
	}
}

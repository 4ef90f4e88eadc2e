package tests

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// The README's three membership walkthroughs run in order against a
// three-node cluster with the Makefile's shard count, as written: the
// `serve` lines are started by the test (their addresses and data
// directories mapped to free ones), the `kill` lines done by the test, every
// other line runs in bash against the mapped addresses. The transcripts
// must show what the text promises: 5 active nodes balanced, node 2
// removed and replaced by node 6, node 1 removed.
func TestReadmeMembershipWalkthroughs(t *testing.T) {
	needTools(t, "bash")
	c := startCluster(t, 3, "--shards", "4")
	waitReady(t, c.client(1))
	procs := map[uint64]*proc{1: c.procs[1], 2: c.procs[2], 3: c.procs[3]}
	addr := map[string]string{} // README address -> test address
	dirs := map[string]string{} // README data dir -> test dir
	for id := uint64(1); id <= 3; id++ {
		addr[fmt.Sprintf("127.0.0.1:700%d", id)] = c.raftAddr(id)
		addr[fmt.Sprintf("127.0.0.1:909%d", id)] = c.procs[id].grpcAddr
		dirs[fmt.Sprintf("./data/n%d", id)] = c.dirs[id]
	}
	bin := withBin(t)
	mapLine := func(line string) string {
		for from, to := range dirs {
			line = regexp.MustCompile(regexp.QuoteMeta(from)+`\b`).ReplaceAllString(line, to)
		}
		return regexp.MustCompile(`127\.0\.0\.1:\d+`).ReplaceAllStringFunc(line, func(a string) string {
			if to, ok := addr[a]; ok {
				return to
			}
			t.Fatalf("README line names an address the walkthrough did not start: %s", line)
			return a
		})
	}
	// serve starts a README serve line (… &) as a test process.
	serve := func(line string) {
		args := strings.Fields(strings.TrimSuffix(strings.TrimSpace(line), "&"))[2:] // after ./bin/quorumq serve
		var dir string
		var out []string
		for i := 0; i < len(args); i++ {
			switch a := args[i]; a {
			case "--data-dir":
				i++
				if dirs[args[i]] == "" {
					dirs[args[i]] = t.TempDir()
				}
				dir = dirs[args[i]]
			case "--raft-addr", "--grpc-addr", "--http-addr":
				i++
				if _, ok := addr[args[i]]; !ok || a != "--raft-addr" {
					addr[args[i]] = freePort(t) // a replaced node's raft address stays
				}
				out = append(out, a, addr[args[i]])
			case "--join":
				i++
				out = append(out, a, addr[args[i]])
			default:
				out = append(out, a)
			}
		}
		p := startServe(t, dir, out...)
		checkFor(t, 30*time.Second, func() error {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			r, err := qv1.NewClusterServiceClient(p.grpcConn(t)).GetCluster(cctx, &qv1.GetClusterRequest{})
			if err != nil {
				return err
			}
			procs[r.GetNodeId()] = p
			return nil
		})
	}
	killRe := regexp.MustCompile(`^kill (-9 )?<pid of node (\d)>`)
	walk := func(heading string) string {
		cmds := readmeBlocks(t, heading)
		if len(cmds) < 3 {
			t.Fatalf("%s: only %d lines", heading, len(cmds))
		}
		var script, transcript strings.Builder
		run := func() {
			if script.Len() > 0 {
				transcript.WriteString(runScript(t, bin, "set -euo pipefail\n"+script.String()))
				script.Reset()
			}
		}
		for _, line := range cmds {
			switch m := killRe.FindStringSubmatch(line); {
			case strings.HasPrefix(line, "./bin/quorumq serve "):
				run()
				serve(line)
			case m != nil:
				run()
				var id uint64
				fmt.Sscan(m[2], &id)
				sig := syscall.SIGTERM
				if m[1] != "" {
					sig = syscall.SIGKILL
				}
				_ = procs[id].cmd.Process.Signal(sig)
				<-procs[id].exited
				delete(procs, id)
			default:
				script.WriteString(echoed(mapLine(line)))
			}
		}
		run()
		return transcript.String()
	}
	expect := func(what, out string, res ...string) {
		t.Helper()
		for _, re := range res {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Fatalf("%s: the transcript lacks %s:\n%s", what, re, out)
			}
		}
	}
	out := walk("### Scale out from 3 to 5 nodes")
	expect("scale out", out, `(?m)^balanced$`, `(?m)^4\s+active\s`, `(?m)^5\s+active\s`)
	out = walk("### Replace a failed machine")
	expect("replace", out, `(?m)^node 2: draining$`, `(?m)^balanced$`, `(?m)^2\s+removed\s`, `(?m)^6\s+active\s`)
	out = walk("### Retire a node")
	expect("retire", out, `(?m)^node 1: draining$`, `(?m)^balanced$`, `(?m)^1\s+removed\s`)

	// cluster move-replica, by the CLI, on a replica the cluster now has.
	admin := qv1.NewClusterServiceClient(procs[3].grpcConn(t))
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	r, err := admin.ListNodes(cctx, &qv1.ListNodesRequest{})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	rs := r.GetReplicaSets()[1]
	from := rs.GetVoters()[0]
	var to uint64
	for _, id := range []uint64{3, 4, 5, 6} {
		if !slices.Contains(rs.GetVoters(), id) {
			to = id
		}
	}
	moved := cli(t, procs[3], "cluster", "move-replica", "1", fmt.Sprint(from), fmt.Sprint(to))
	if want := fmt.Sprintf("shard 1: move %d->%d\n", from, to); moved != want {
		t.Fatalf("move-replica: %q, want %q", moved, want)
	}
	checkFor(t, 2*time.Minute, func() error {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := admin.ListNodes(cctx, &qv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		// The move, then possibly the rebalancer's move back: either way
		// the change ends and node `from` lost or regained shard 1 whole.
		if rs := r.GetReplicaSets()[1]; rs.GetPendingNode() != 0 || len(rs.GetVoters()) != 3 {
			return fmt.Errorf("shard 1: %v", rs)
		}
		return nil
	})
}

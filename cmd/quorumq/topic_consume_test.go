package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// quorumq topic consume joins the group, prints and commits: a run
// stopped by --count leaves the rest to the next one, which stops when
// idle; together they print every message once, in offset order per
// partition, and the group has no lag left.
func TestTopicConsume(t *testing.T) {
	n := startBenchNode(t)
	ep := "--endpoint=" + n.GRPCAddr()
	run := func(args ...string) (string, string) {
		t.Helper()
		stdout, stderr, _, err := runCLI(t, nil, append(args, ep)...)
		if err != nil {
			t.Fatalf("%v: %v %s", args, err, stderr)
		}
		return stdout, stderr
	}
	run("topic", "create", "feed", "--partitions", "2")
	run("topic", "group", "create", "feed", "g")
	for i := range 6 {
		run("topic", "publish", "feed", fmt.Sprint("m", i), "--key", fmt.Sprint("k", i))
	}
	first, stderr := run("topic", "consume", "feed", "--group", "g", "--count", "4", "--session-timeout", "3s")
	if !strings.Contains(stderr, "assigned partitions [0 1]") {
		t.Fatalf("the only member should get both partitions: %q", stderr)
	}
	second, _ := run("topic", "consume", "feed", "--group", "g", "--idle", "1s", "--session-timeout", "3s")
	lines := strings.Split(strings.TrimSpace(first), "\n")
	if len(lines) != 4 {
		t.Fatalf("--count 4 printed %q", first)
	}
	lines = append(lines, strings.Split(strings.TrimSpace(second), "\n")...)
	bodies := map[string]int{}
	offsets := map[string][]int{}
	for _, l := range lines {
		f := strings.Split(l, "\t")
		if len(f) != 4 {
			t.Fatalf("line %q is not partition, offset, id, body", l)
		}
		bodies[f[3]]++
		var off int
		fmt.Sscan(f[1], &off)
		offsets[f[0]] = append(offsets[f[0]], off)
	}
	for i := range 6 {
		if b := fmt.Sprint("m", i); bodies[b] != 1 {
			t.Fatalf("%s printed %d times: %q then %q", b, bodies[b], first, second)
		}
	}
	for p, offs := range offsets {
		if !slices.IsSorted(offs) {
			t.Fatalf("partition %s out of order: %v", p, offs)
		}
	}
	if out, _ := run("topic", "group", "get", "feed", "g"); strings.Count(out, ", lag 0\n") != 2 {
		t.Fatalf("lag left after consuming everything: %q", out)
	}
}

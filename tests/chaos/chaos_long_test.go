//go:build chaos

package chaos

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestChaos runs CHAOS_RUNS (default 50) random schedules of CHAOS_DURATION
// (default 60s) of faults each, one after another, printing each
// schedule's report and a summary. Seeds are CHAOS_BASE_SEED (default: the
// clock) + 0, 1, …; CHAOS_SEED=n runs that one schedule. Every fifth seed
// runs five nodes unless CHAOS_NODES is set; odd seeds run four shards
// (the router, partitions and cross-shard moves under faults) and even
// seeds one, unless CHAOS_SHARDS is set.
func TestChaos(t *testing.T) {
	runs := envInt(t, "CHAOS_RUNS", 50)
	dur := envDuration(t, "CHAOS_DURATION", 60*time.Second)
	base := uint64(envInt(t, "CHAOS_BASE_SEED", int(time.Now().Unix()%1_000_000)))
	var seeds []uint64
	for i := range runs {
		seeds = append(seeds, base+uint64(i))
	}
	if os.Getenv("CHAOS_SEED") != "" {
		seeds = []uint64{uint64(envInt(t, "CHAOS_SEED", 0))}
	}
	dir := baseDir(t)
	fmt.Printf("chaos: %d schedules of %v faults, seeds %d.., data in %s\n", len(seeds), dur, seeds[0], dir)
	var results []runResult
	for i, seed := range seeds {
		nodes := 3
		if seed%5 == 0 {
			nodes = 5
		}
		nodes = envInt(t, "CHAOS_NODES", nodes)
		shards := envInt(t, "CHAOS_SHARDS", 1+3*int(seed%2))
		rdir, err := runDir(dir, seed)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		fmt.Printf("=== schedule %d/%d: seed %d, %d nodes, %d shards (replay: CHAOS_SEED=%d CHAOS_NODES=%d CHAOS_SHARDS=%d make chaos)\n",
			i+1, len(seeds), seed, nodes, shards, seed, nodes, shards)
		res := runSchedule(runConfig{bin: chaosBin, dir: rdir, seed: seed, nodes: nodes, shards: shards, duration: dur,
			maxVis: 5 * time.Second, logf: func(string, ...any) {}})
		fmt.Printf("%s(took %v)\n", res.report(), time.Since(start).Round(time.Second))
		results = append(results, res)
		if len(res.violations) > 0 || len(res.harnessErrs) > 0 || len(res.notes) > 0 {
			t.Errorf("seed %d: %d violations, %d harness errors; node logs in %s", seed, len(res.violations), len(res.harnessErrs), rdir)
		} else {
			_ = os.RemoveAll(rdir)
		}
	}
	fmt.Print(summarize(results))
}

// summarize adds up the schedules' results.
func summarize(rs []runResult) string {
	counts, dups, episodes := map[string]int{}, map[string]int{}, map[string]int{}
	var failovers, restarts, catchUps, heals, converge []time.Duration
	var bad []string
	violations, harness := 0, 0
	for _, r := range rs {
		for k, v := range r.counts {
			counts[k] += v
		}
		for k, v := range r.dupReasons {
			dups[k] += v
		}
		for k, v := range r.episodes {
			episodes[string(k)] += v
		}
		failovers = append(failovers, r.failovers...)
		restarts = append(restarts, r.restarts...)
		catchUps = append(catchUps, r.catchUps...)
		heals = append(heals, r.healLeader)
		converge = append(converge, r.converge)
		violations += len(r.violations)
		harness += len(r.harnessErrs)
		if len(r.violations)+len(r.harnessErrs) > 0 {
			bad = append(bad, fmt.Sprint(r.seed))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "=== chaos summary: %d schedules, %d with problems %v; %d violations, %d harness errors\n", len(rs), len(bad), bad, violations, harness)
	fmt.Fprintf(&b, "episodes: %s\n", fmtCounts(episodes))
	fmt.Fprintf(&b, "operations: %s\n", fmtCounts(counts))
	if recv := counts["messages received"]; recv > 0 {
		fmt.Fprintf(&b, "duplicates: %d redeliveries of %d deliveries (%.2f%%): %s\n", counts["redeliveries"], recv,
			100*float64(counts["redeliveries"])/float64(recv), fmtCounts(dups))
	}
	fmt.Fprintf(&b, "recovery (n, min / median / p95 / max):\n")
	for _, s := range []struct {
		name string
		ds   []time.Duration
	}{{"failover: leader fault to a leader on the majority", failovers}, {"restart of a majority or all: to an agreed leader", restarts},
		{"wiped node: restart to caught up", catchUps}, {"final heal: to an agreed leader", heals}, {"final heal: to converged replicas", converge}} {
		fmt.Fprintf(&b, "  %s: %s\n", s.name, stats(s.ds))
	}
	return b.String()
}

func stats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))].Round(time.Millisecond) }
	return fmt.Sprintf("%d, %v / %v / %v / %v", len(s), s[0].Round(time.Millisecond), at(0.5), at(0.95), s[len(s)-1].Round(time.Millisecond))
}

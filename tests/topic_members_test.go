package tests

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// consumerProc is a running `quorumq topic consume`.
type consumerProc struct {
	name   string
	cmd    *exec.Cmd
	stdout *printLog
	stderr *lockedBuffer
	exited chan struct{}
}

// startConsumer runs `quorumq topic consume topic --group group` with extra
// flags; the test's cleanup kills it.
func startConsumer(t *testing.T, name, endpoints, topic, group string, session time.Duration, extra ...string) *consumerProc {
	t.Helper()
	args := append([]string{"topic", "consume", topic, "--group", group, "--session-timeout", session.String(), "--endpoint", endpoints}, extra...)
	cmd := exec.Command(binary, args...)
	p := &consumerProc{name: name, cmd: cmd, stdout: &printLog{}, stderr: &lockedBuffer{}}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	p.exited = startOwned(t, cmd, "consumer "+name, p.stderr)
	return p
}

// printedMsg is one line `topic consume` printed.
type printedMsg struct {
	partition int
	offset    int64
	body      string
}

// printLog parses a consumer's stdout as it comes, so that a test can poll
// 100,000 lines cheaply.
type printLog struct {
	mu      sync.Mutex
	partial []byte
	msgs    []printedMsg
}

func (l *printLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		f := strings.SplitN(string(l.partial[:i]), "\t", 4)
		l.partial = l.partial[i+1:]
		if len(f) != 4 {
			continue
		}
		part, err1 := strconv.Atoi(f[0])
		off, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 == nil && err2 == nil {
			l.msgs = append(l.msgs, printedMsg{partition: part, offset: off, body: f[3]})
		}
	}
	return len(b), nil
}

// count is how many messages the consumer printed so far.
func (p *consumerProc) count() int {
	p.stdout.mu.Lock()
	defer p.stdout.mu.Unlock()
	return len(p.stdout.msgs)
}

// messages is what the consumer printed so far, in print order.
func (p *consumerProc) messages() []printedMsg {
	p.stdout.mu.Lock()
	defer p.stdout.mu.Unlock()
	return slices.Clone(p.stdout.msgs)
}

var partitionsLine = regexp.MustCompile(`^(assigned|revoked) partitions \[([0-9 ]*)\]$`)

// partitionEvents calls f for each partition of the consumer's
// assigned/revoked lines, in order.
func (p *consumerProc) partitionEvents(f func(assigned bool, partition int)) {
	for _, l := range strings.Split(p.stderr.String(), "\n") {
		m := partitionsLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		for _, s := range strings.Fields(m[2]) {
			n, _ := strconv.Atoi(s)
			f(m[1] == "assigned", n)
		}
	}
}

// holds is what the consumer's assigned/revoked lines say it reads now.
func (p *consumerProc) holds() map[int]bool {
	held := map[int]bool{}
	p.partitionEvents(func(assigned bool, n int) {
		if assigned {
			held[n] = true
		} else {
			delete(held, n)
		}
	})
	return held
}

// assignments counts, per partition, how often the consumer was assigned it.
func (p *consumerProc) assignments() map[int]int {
	n := map[int]int{}
	p.partitionEvents(func(assigned bool, part int) {
		if assigned {
			n[part]++
		}
	})
	return n
}

// printed is the consumer's messages: partition -> offsets in print order.
func (p *consumerProc) printed() map[int][]int64 {
	out := map[int][]int64{}
	for _, m := range p.messages() {
		out[m.partition] = append(out[m.partition], m.offset)
	}
	return out
}

// heldBy says whether each of partitions is held by one of members ms.
func heldBy(ms []*consumerProc, partitions map[int]bool) bool {
	held := map[int]bool{}
	for _, m := range ms {
		maps.Copy(held, m.holds())
	}
	for p := range partitions {
		if !held[p] {
			return false
		}
	}
	return true
}

// coveredBy says whether members ms hold parts partitions between them,
// each member some, none twice.
func coveredBy(ms []*consumerProc, parts int) error {
	seen := map[int]string{}
	for _, m := range ms {
		h := m.holds()
		if len(h) == 0 {
			return fmt.Errorf("%s holds nothing", m.name)
		}
		for p := range h {
			if o, ok := seen[p]; ok {
				return fmt.Errorf("partition %d held by %s and %s", p, o, m.name)
			}
			seen[p] = m.name
		}
	}
	if len(seen) != parts {
		return fmt.Errorf("partitions held: %v", seen)
	}
	return nil
}

// On three nodes, three `topic consume` members share a topic's four
// partitions while messages are published; one member is killed with
// kill -9: the survivors take its partitions over once its session times
// out, and between them the members print every published message, each
// member in offset order per partition.
func TestTopicGroupMemberKilled(t *testing.T) {
	const session = 3 * time.Second
	c := startCluster(t, 3)
	for id := range c.procs {
		waitReady(t, c.client(id))
	}
	tc := qv1.NewTopicServiceClient(c.procs[1].grpcConn(t))
	if err := retryUnavailable(30*time.Second, func(ctx context.Context) error {
		_, err := tc.CreateTopic(ctx, &qv1.CreateTopicRequest{Name: "jobs", Attributes: &qv1.TopicAttributes{Partitions: 4}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := retryUnavailable(30*time.Second, func(ctx context.Context) error {
		_, err := tc.CreateGroup(ctx, &qv1.CreateGroupRequest{Topic: "jobs", Group: "workers"})
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// Publish until told to stop, every message acknowledged (retried with
	// its idempotency key).
	var mu sync.Mutex
	ends := map[int32]int64{} // partition -> offset after the last acknowledged
	pubCtx, stopPublishing := context.WithCancel(context.Background())
	pubDone := make(chan struct{})
	defer func() { stopPublishing(); <-pubDone }() // no t.Errorf after the test
	go func() {
		defer close(pubDone)
		for i := 0; pubCtx.Err() == nil; i++ {
			key := fmt.Sprint("job-", i)
			err := retryUnavailable(20*time.Second, func(ctx context.Context) error {
				r, err := tc.Publish(ctx, &qv1.PublishRequest{Topic: "jobs", Body: key, PartitionKey: fmt.Sprint("k", i%16), IdempotencyKey: key})
				if err == nil {
					mu.Lock()
					ends[r.GetPartition()] = max(ends[r.GetPartition()], r.GetOffset()+1)
					mu.Unlock()
				}
				return err
			})
			if err != nil {
				t.Errorf("publish %s: %v", key, err)
				return
			}
			select {
			case <-pubCtx.Done():
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()

	var eps []string
	for id := uint64(1); id <= 3; id++ {
		eps = append(eps, c.procs[id].grpcAddr)
	}
	members := []*consumerProc{}
	for i := range 3 {
		members = append(members, startConsumer(t, fmt.Sprint("m", i), strings.Join(eps, ","), "jobs", "workers", session))
	}
	// Each member holds a partition, together all four, none twice.
	checkFor(t, 30*time.Second, func() error { return coveredBy(members, 4) })
	<-time.After(time.Second) // every member reads for a while

	victim, survivors := members[0], members[1:]
	for _, m := range members {
		if len(m.holds()) > len(victim.holds()) {
			victim = m
		}
	}
	survivors = slices.DeleteFunc(slices.Clone(members), func(m *consumerProc) bool { return m == victim })
	_ = victim.cmd.Process.Signal(syscall.SIGKILL)
	<-victim.exited
	killed := time.Now()
	lost := victim.holds()
	t.Logf("killed %s holding %v", victim.name, lost)
	// Its partitions go to the others within the session timeout (its
	// held heartbeat was cut off: see TestTopicSurvivesKill9); the
	// rebalance between the survivors may take a little longer.
	checkFor(t, session+20*time.Second, func() error {
		if !heldBy(survivors, lost) {
			return fmt.Errorf("%v not all held by the survivors", slices.Sorted(maps.Keys(lost)))
		}
		return nil
	})
	took := time.Since(killed)
	checkFor(t, session+20*time.Second, func() error { return coveredBy(survivors, 4) })
	t.Logf("its partitions taken over %v after the kill, every partition held by the survivors %v after it (session timeout %v)",
		took.Round(10*time.Millisecond), time.Since(killed).Round(10*time.Millisecond), session)
	if took > session {
		t.Errorf("takeover took %v, want it within the session timeout %v", took, session)
	}

	<-time.After(time.Second)
	stopPublishing()
	<-pubDone
	mu.Lock()
	want := ends
	mu.Unlock()
	// Every acknowledged message is printed (and so handled) by a member.
	checkFor(t, 30*time.Second, func() error {
		got := map[int]map[int64]bool{}
		for _, m := range members {
			for p, offs := range m.printed() {
				if got[p] == nil {
					got[p] = map[int64]bool{}
				}
				for _, o := range offs {
					got[p][o] = true
				}
			}
		}
		for p, end := range want {
			for o := int64(0); o < end; o++ {
				if !got[int(p)][o] {
					return fmt.Errorf("partition %d offset %d not handled yet (end %d)", p, o, end)
				}
			}
		}
		return nil
	})
	total := int64(0)
	for _, end := range want {
		total += end
	}
	for _, m := range survivors {
		_ = m.cmd.Process.Signal(syscall.SIGINT)
		<-m.exited
		if code := m.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("%s exited with %d after SIGINT", m.name, code)
		}
	}
	for _, m := range members {
		for p, offs := range m.printed() {
			if !slices.IsSorted(offs) || len(slices.Compact(slices.Clone(offs))) != len(offs) {
				t.Errorf("%s printed partition %d out of order or twice: %v", m.name, p, offs)
			}
		}
	}
	t.Logf("%d messages published and handled", total)
}

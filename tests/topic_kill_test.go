package tests

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server/router"
)

// topicKillMessages is the publish count of TestTopicSurvivesKill9:
// $QUORUMQ_TOPIC_KILL_MESSAGES (`make test-topic-kill` runs issue 20's
// 100,000), else a count that fits make test's time budget.
func topicKillMessages(t *testing.T) int {
	v := os.Getenv("QUORUMQ_TOPIC_KILL_MESSAGES")
	if v == "" {
		return 20_000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 100 || n%100 != 0 {
		t.Fatalf("QUORUMQ_TOPIC_KILL_MESSAGES=%q: want a multiple of 100", v)
	}
	return n
}

// copyLease is the subscribed queues' visibility timeout: a receive whose
// answer was lost to the kill holds its messages this long.
const copyLease = 15 * time.Second

// memberSession is the group members' session timeout. A member is
// nearly always in a held heartbeat; when it dies that call is cut off,
// and its session ends half a session later (at the latest a session
// after its last heartbeat): so its partitions are taken over within the
// session timeout of the kill.
const memberSession = 5 * time.Second

// killSub is one subscribed queue of the test.
type killSub struct {
	queue string
	red   bool // filter: tag "red" only
	fifo  bool
}

// TestTopicSurvivesKill9 is issue 20's 3-node test: a topic with 4
// partitions over 4 shards, 3 queue subscriptions (one filtered by tag, one
// FIFO) and 2 stream groups of 3 members each (`quorumq topic consume`
// processes: the coordinator assigns the partitions); batched publishes
// with idempotency keys while a storage node is killed with SIGKILL and
// restarted, and, while it is down, one member of each group is killed
// with SIGKILL too: its partitions go to the group's two others once its
// session times out. Then each queue holds exactly the matching messages
// once (FIFO: in order per partition key), each group read every message
// in offset order per partition (a message twice only when a new owner
// started from the committed offset, below what the previous one read but
// had not committed), and each log holds every publish once.
func TestTopicSurvivesKill9(t *testing.T) {
	n := topicKillMessages(t)
	const parts, keys, batch, publishers = 4, 16, 100, 6
	c := startCluster(t, 3, "--shards", "4")
	c.leader()
	api := c.startAPINode(100)
	qc, tc := api.client(t), qv1.NewTopicServiceClient(api.grpcConn(t))
	// Bounded: 20,000 take about 30 s on a loaded 2-core machine, 100,000
	// about 4.5 min (the FIFO queue's receive-then-delete is the slowest).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute+time.Duration(n)*4*time.Millisecond)
	defer cancel()

	subs := []killSub{{queue: "kill-all"}, {queue: "kill-red", red: true}, {queue: "kill.fifo", fifo: true}}
	for _, s := range subs {
		if _, err := qc.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: s.queue, Attributes: &qv1.QueueAttributes{Fifo: s.fifo,
			VisibilityTimeout: durationpb.New(copyLease)}}); err != nil {
			t.Fatalf("create %s: %v", s.queue, err)
		}
	}
	if _, err := tc.CreateTopic(ctx, &qv1.CreateTopicRequest{Name: "kill", Attributes: &qv1.TopicAttributes{Partitions: parts}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		req := &qv1.SubscribeRequest{Topic: "kill", Queue: s.queue}
		if s.red {
			req.TagFilter = &qv1.TagFilter{All: []string{"red"}}
		}
		if _, err := tc.Subscribe(ctx, req); err != nil {
			t.Fatalf("subscribe %s: %v", s.queue, err)
		}
	}
	groups := []string{"g1", "g2"}
	for _, g := range groups {
		if _, err := tc.CreateGroup(ctx, &qv1.CreateGroupRequest{Topic: "kill", Group: g}); err != nil {
			t.Fatal(err)
		}
	}
	// The members, through the API node (which is not killed); each group's
	// three share the four partitions before anything is published.
	members := map[string][]*consumerProc{}
	for _, g := range groups {
		for i := range 3 {
			members[g] = append(members[g], startConsumer(t, fmt.Sprintf("%s-m%d", g, i), api.grpcAddr, "kill", g, memberSession, "--max", "1000"))
		}
		checkFor(t, 30*time.Second, func() error { return coveredBy(members[g], parts) })
	}

	var (
		acked    atomic.Int64
		stop     = make(chan struct{}) // closed to end the queue consumers and the takeover watchers
		stopOnce sync.Once
		wg       sync.WaitGroup
	)
	// On the way out (a failure included) every goroutine ends: the calls
	// end with ctx, the loops with stop.
	defer func() {
		cancel()
		stopOnce.Do(func() { close(stop) })
		wg.Wait()
	}()
	// Publishers: batches of 100, retried (same idempotency keys) until
	// acknowledged; body i is tagged red when i is even.
	var nextBatch atomic.Int64
	pubErrs := make(chan error, publishers)
	start := time.Now()
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := int(nextBatch.Add(1) - 1); b < n/batch; b = int(nextBatch.Add(1) - 1) {
				var es []*qv1.PublishBatchEntry
				for i := b * batch; i < (b+1)*batch; i++ {
					e := &qv1.PublishBatchEntry{Id: strconv.Itoa(i), Body: fmt.Sprintf("m-%d", i), IdempotencyKey: fmt.Sprintf("m-%d", i),
						PartitionKey: fmt.Sprintf("key-%d", i%keys)}
					if i%2 == 0 {
						e.Tags = []string{"red"}
					}
					es = append(es, e)
				}
				if err := publishAll(ctx, tc, es); err != nil {
					pubErrs <- err
					return
				}
				acked.Add(int64(len(es)))
			}
		}()
	}

	// Consumers: the standard queues' messages are only leased (a receive
	// whose answer the kill lost is received again, with a higher count,
	// once its lease ends); the FIFO queue's are deleted so that each key's
	// next message is released.
	type seen struct {
		mu     sync.Mutex
		bodies map[string][]int32 // receive counts seen (a lost reply hides one; a second copy repeats 1)
		order  map[string][]int   // FIFO: body numbers by key, in first-receive order
	}
	got := map[string]*seen{}
	for _, s := range subs {
		sn := &seen{bodies: map[string][]int32{}, order: map[string][]int{}}
		got[s.queue] = sn
		consumers := 2
		if s.fifo {
			consumers = 4 // receive, then delete: a round trip more per batch
		}
		for range consumers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				consumeCopies(ctx, qc, s.queue, s.fifo, stop, func(ms []*qv1.ReceivedMessage) {
					sn.mu.Lock()
					defer sn.mu.Unlock()
					for _, m := range ms {
						b := m.GetBody()
						if len(sn.bodies[b]) == 0 {
							var i int
							_, _ = fmt.Sscanf(b, "m-%d", &i)
							k := fmt.Sprintf("key-%d", i%keys)
							sn.order[k] = append(sn.order[k], i)
						}
						sn.bodies[b] = append(sn.bodies[b], m.GetReceiveCount())
					}
				})
			}()
		}
	}

	// Kill the metadata shard's leader (a storage node) once a third is
	// acknowledged; restart it once two thirds are.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case err := <-pubErrs:
				t.Fatal(err)
			case <-ctx.Done():
				t.Fatalf("%s: %v", what, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	waitFor("a third published", func() bool { return acked.Load() >= int64(n/3) })
	victim := c.shardLeaders(c.clusterClient(1))[0]
	c.kill(victim)
	t.Logf("%v: killed node %d (metadata leader) after %d publishes", time.Since(start).Round(time.Millisecond), victim, acked.Load())
	// While it is down, kill one member of each group (the one holding
	// most): a watcher times how long until the other two hold every
	// partition.
	waitFor("half published", func() bool { return acked.Load() >= int64(n/2) })
	// takeover is when a group's killed member's partitions were all held
	// by survivors, and when the survivors held every partition between
	// them (the rebalance that follows moves some between survivors).
	type takeover struct{ took, covered time.Duration }
	takeovers := map[string]chan takeover{}
	var watching atomic.Int32
	for _, g := range groups {
		victim := members[g][0]
		for _, m := range members[g] {
			if len(m.holds()) > len(victim.holds()) {
				victim = m
			}
		}
		_ = victim.cmd.Process.Signal(syscall.SIGKILL)
		<-victim.exited
		killed := time.Now()
		lost := victim.holds()
		t.Logf("%v: killed member %s holding %v after %d publishes", time.Since(start).Round(time.Millisecond), victim.name, slices.Sorted(maps.Keys(lost)), acked.Load())
		survivors := slices.DeleteFunc(slices.Clone(members[g]), func(m *consumerProc) bool { return m == victim })
		done := make(chan takeover, 1)
		takeovers[g] = done
		watching.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer watching.Add(-1)
			var tk takeover
			for tk.took == 0 || tk.covered == 0 {
				if tk.took == 0 && heldBy(survivors, lost) {
					tk.took = time.Since(killed)
				}
				if tk.covered == 0 && coveredBy(survivors, parts) == nil {
					tk.covered = time.Since(killed)
				}
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			done <- tk
		}()
	}
	waitFor("two thirds published", func() bool { return acked.Load() >= int64(2*n/3) })
	c.start(victim)
	t.Logf("%v: restarted node %d after %d publishes", time.Since(start).Round(time.Millisecond), victim, acked.Load())
	waitFor("all published", func() bool { return acked.Load() >= int64(n) })
	t.Logf("%v: %d publishes acknowledged", time.Since(start).Round(time.Millisecond), n)

	want := map[string]int{} // queue -> copies
	for _, s := range subs {
		want[s.queue] = n
		if s.red {
			want[s.queue] = n / 2
		}
	}
	lastLog, lastDistinct := time.Now(), time.Time{}
	waitFor("every copy and every read", func() bool {
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			var b []string
			for _, s := range subs {
				got[s.queue].mu.Lock()
				b = append(b, fmt.Sprintf("%s=%d", s.queue, len(got[s.queue].bodies)))
				got[s.queue].mu.Unlock()
			}
			for _, g := range groups {
				k := 0
				for _, m := range members[g] {
					k += m.count()
				}
				b = append(b, fmt.Sprintf("%s=%d", g, k))
			}
			t.Logf("%v: %s", time.Since(start).Round(time.Millisecond), strings.Join(b, " "))
		}
		if watching.Load() > 0 { // the rebalances are part of the run
			return false
		}
		for _, s := range subs {
			sn := got[s.queue]
			sn.mu.Lock()
			k := len(sn.bodies)
			sn.mu.Unlock()
			if k < want[s.queue] {
				return false
			}
		}
		for _, g := range groups {
			k := 0
			for _, m := range members[g] {
				k += m.count()
			}
			if k < n {
				return false
			}
		}
		// Counting distinct reads is dearer: twice a second at most.
		if time.Since(lastDistinct) < 500*time.Millisecond {
			return false
		}
		lastDistinct = time.Now()
		for _, g := range groups {
			if len(groupRead(members[g])) < n {
				return false
			}
		}
		return true
	})
	stopOnce.Do(func() { close(stop) })
	wg.Wait()
	t.Logf("%v: every copy received, every message read by both groups", time.Since(start).Round(time.Millisecond))
	for _, g := range groups {
		select {
		case tk := <-takeovers[g]:
			t.Logf("group %s: the killed member's partitions held by the others %v after the kill, every partition held %v after it (session timeout %v)",
				g, tk.took.Round(10*time.Millisecond), tk.covered.Round(10*time.Millisecond), memberSession)
			if tk.took > memberSession {
				t.Errorf("group %s: takeover took %v, want it within the session timeout %v", g, tk.took, memberSession)
			}
		default:
			t.Errorf("group %s: the killed member's partitions were never all taken over", g)
		}
	}

	// The groups: each member read its partitions in offset order, a new
	// run (a jump back, a re-read of what was not committed; or forward,
	// past what another member read) only after an assignment, which
	// reads from the committed offset. Survivors stop cleanly (commit,
	// leave), after which each group has committed every partition's end.
	views := map[string]map[int32][]string{} // group -> partition -> bodies by offset
	for _, g := range groups {
		reads := 0
		for _, m := range members[g] {
			select {
			case <-m.exited: // the killed one
			default:
				_ = m.cmd.Process.Signal(syscall.SIGINT)
				<-m.exited
				if code := m.cmd.ProcessState.ExitCode(); code != 0 {
					t.Errorf("%s exited with %d after SIGINT", m.name, code)
				}
			}
			assigned := m.assignments()
			for p, offs := range m.printed() {
				runs := 0
				for i, o := range offs {
					if i == 0 || o != offs[i-1]+1 {
						runs++
					}
				}
				if runs > assigned[p] {
					t.Errorf("%s: partition %d read in %d runs, assigned %d times: %v", m.name, p, runs, assigned[p], offs)
				}
			}
			reads += m.count()
		}
		view, err := groupLog(members[g])
		if err != nil {
			t.Fatalf("group %s: %v", g, err)
		}
		views[g] = view
		total := 0
		for _, bodies := range view {
			total += len(bodies)
		}
		t.Logf("group %s: %d reads of %d messages (%d again after a rebalance)", g, reads, total, reads-total)
		r, err := tc.GetGroup(ctx, &qv1.GetGroupRequest{Topic: "kill", Group: g})
		if err != nil {
			t.Fatal(err)
		}
		for _, gp := range r.GetGroup().GetPartitions() {
			if end := int64(len(view[gp.GetPartition()])); gp.GetCommittedOffset() != end || gp.GetLag() != 0 {
				t.Errorf("group %s partition %d: committed %d, lag %d; want %d, 0", g, gp.GetPartition(), gp.GetCommittedOffset(), gp.GetLag(), end)
			}
		}
	}

	// The logs: both groups read the same log of each partition, which
	// holds every body once, in its key's partition.
	for p := range int32(parts) {
		if !slices.Equal(views["g1"][p], views["g2"][p]) {
			t.Errorf("partition %d: the groups read different logs (%d and %d messages)", p, len(views["g1"][p]), len(views["g2"][p]))
		}
	}
	inLog := map[string]int{}
	for p, bodies := range views["g1"] {
		for _, b := range bodies {
			inLog[b]++
			var i int
			_, _ = fmt.Sscanf(b, "m-%d", &i)
			if k := fmt.Sprintf("key-%d", i%keys); int32(router.PartitionOfKey(k, parts)) != p {
				t.Errorf("%s (key %s) in partition %d", b, k, p)
			}
		}
	}
	checkOnce := func(what string, m map[string]int, want int, match func(i int) bool) {
		t.Helper()
		bad := 0
		for i := range n {
			if k := m[fmt.Sprintf("m-%d", i)]; (match(i) && k != 1) || (!match(i) && k != 0) {
				if bad < 5 {
					t.Errorf("%s: m-%d there %d times", what, i, k)
				}
				bad++
			}
		}
		if len(m) != want || bad > 0 {
			t.Errorf("%s: %d distinct messages, want %d; %d wrong", what, len(m), want, bad)
		}
	}
	checkOnce("topic log", inLog, n, func(int) bool { return true })
	for _, s := range subs {
		copies := map[string]int{}
		for b, counts := range got[s.queue].bodies {
			copies[b] = 1
			slices.Sort(counts)
			if len(slices.Compact(counts)) != len(counts) {
				copies[b] = 2 // one receive count twice: two copies
			}
		}
		checkOnce("queue "+s.queue, copies, want[s.queue], func(i int) bool { return !s.red || i%2 == 0 })
	}
	// FIFO: each key's copies arrive in its partition's offset order.
	offsetOf := map[string]int{}
	for _, bodies := range views["g1"] {
		for off, b := range bodies {
			offsetOf[b] = off
		}
	}
	for k, is := range got["kill.fifo"].order {
		for j := 1; j < len(is); j++ {
			if a, b := offsetOf[fmt.Sprintf("m-%d", is[j-1])], offsetOf[fmt.Sprintf("m-%d", is[j])]; b < a {
				t.Errorf("kill.fifo key %s: m-%d (offset %d) received before m-%d (offset %d)", k, is[j-1], a, is[j], b)
				break
			}
		}
	}
	// No stray copy is left behind: the standard queues hold exactly their
	// copies (leased or visible again), the FIFO queue nothing.
	for _, s := range subs {
		q, err := qc.GetQueue(ctx, &qv1.GetQueueRequest{Name: s.queue})
		if err != nil {
			t.Fatal(err)
		}
		st := q.GetQueue().GetStats()
		stored := int64(want[s.queue])
		if s.fifo {
			stored = 0
		}
		if got := st.GetVisible() + st.GetInFlight() + st.GetDelayed(); got != stored {
			t.Errorf("%s: stats %v: %d messages stored, want %d", s.queue, st, got, stored)
		}
	}
}

// publishAll publishes es, retrying what is not acknowledged with the same
// idempotency keys, until every entry is or ctx ends.
func publishAll(ctx context.Context, tc qv1.TopicServiceClient, es []*qv1.PublishBatchEntry) error {
	pending := es
	for try := 0; len(pending) > 0; try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("publish: %d entries not acknowledged: %w", len(pending), ctx.Err())
			case <-time.After(time.Duration(min(try, 10)) * 50 * time.Millisecond):
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := tc.PublishBatch(cctx, &qv1.PublishBatchRequest{Topic: "kill", Entries: pending})
		cancel()
		if err != nil {
			continue
		}
		failed := map[string]bool{}
		for _, f := range r.GetFailed() {
			failed[f.GetId()] = true
		}
		var again []*qv1.PublishBatchEntry
		for _, e := range pending {
			if failed[e.GetId()] {
				again = append(again, e)
			}
		}
		pending = again
	}
	return nil
}

// groupRead is which partition offsets a group's members read so far.
func groupRead(ms []*consumerProc) map[[2]int64]bool {
	read := map[[2]int64]bool{}
	for _, m := range ms {
		for _, pm := range m.messages() {
			read[[2]int64{int64(pm.partition), pm.offset}] = true
		}
	}
	return read
}

// groupLog is the partition logs as a group's members read them: partition
// -> bodies by offset; an error when an offset was not read or was read
// with two bodies.
func groupLog(ms []*consumerProc) (map[int32][]string, error) {
	at := map[int32]map[int64]string{}
	for _, m := range ms {
		for _, pm := range m.messages() {
			p := int32(pm.partition)
			if at[p] == nil {
				at[p] = map[int64]string{}
			}
			if b, ok := at[p][pm.offset]; ok && b != pm.body {
				return nil, fmt.Errorf("partition %d offset %d read as %q and %q", p, pm.offset, b, pm.body)
			}
			at[p][pm.offset] = pm.body
		}
	}
	out := map[int32][]string{}
	for p, bodies := range at {
		for off := range int64(len(bodies)) {
			b, ok := bodies[off]
			if !ok {
				return nil, fmt.Errorf("partition %d: offset %d not read (%d offsets read)", p, off, len(bodies))
			}
			out[p] = append(out[p], b)
		}
	}
	return out, nil
}

// consumeCopies receives from queue until stop; a FIFO queue's messages are
// deleted (retrying until the delete is acknowledged).
func consumeCopies(ctx context.Context, qc qv1.QueueServiceClient, queue string, fifo bool, stop <-chan struct{}, handle func([]*qv1.ReceivedMessage)) {
	for ctx.Err() == nil {
		select {
		case <-stop:
			return
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := qc.ReceiveMessages(cctx, &qv1.ReceiveMessagesRequest{Queue: queue, MaxMessages: 100, WaitTime: durationpb.New(200 * time.Millisecond)})
		cancel()
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		handle(r.GetMessages())
		if !fifo || len(r.GetMessages()) == 0 {
			continue
		}
		req := &qv1.DeleteMessageBatchRequest{Queue: queue}
		for i, m := range r.GetMessages() {
			req.Entries = append(req.Entries, &qv1.DeleteMessageBatchEntry{Id: strconv.Itoa(i), ReceiptHandle: m.GetReceiptHandle()})
		}
		for ctx.Err() == nil && len(req.Entries) > 0 {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			d, err := qc.DeleteMessageBatch(cctx, req)
			cancel()
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			failed := map[string]bool{}
			for _, f := range d.GetFailed() {
				failed[f.GetId()] = true
			}
			req.Entries = slices.DeleteFunc(req.Entries, func(e *qv1.DeleteMessageBatchEntry) bool { return !failed[e.GetId()] })
		}
	}
}

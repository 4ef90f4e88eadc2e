package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// ackLog records acknowledged sends with their times.
type ackLog struct {
	mu   sync.Mutex
	ids  map[string]bool
	when []time.Time
}

func newAckLog() *ackLog { return &ackLog{ids: map[string]bool{}} }

func (a *ackLog) add(id string) {
	a.mu.Lock()
	a.ids[id] = true
	a.when = append(a.when, time.Now())
	a.mu.Unlock()
}

func (a *ackLog) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ids)
}

// firstAfter is the first acknowledgement after t.
func (a *ackLog) firstAfter(t time.Time) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var best time.Time
	for _, w := range a.when {
		if w.After(t) && (best.IsZero() || w.Before(best)) {
			best = w
		}
	}
	return best, !best.IsZero()
}

// produce sends with idempotency keys to random live nodes, retrying each
// message until it is acknowledged, until ctx ends or max messages are sent.
func produce(ctx context.Context, c *cluster, live func() []uint64, queue string, worker, max int, acks *ackLog) {
	for i := 0; i < max && ctx.Err() == nil; i++ {
		key := fmt.Sprintf("%s-w%d-%d", queue, worker, i)
		for ctx.Err() == nil {
			ids := live()
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			r, err := c.procs[ids[rand.IntN(len(ids))]].client(c.t).SendMessage(cctx, &qv1.SendMessageRequest{Queue: queue, Body: key, IdempotencyKey: key})
			cancel()
			if err == nil {
				acks.add(r.GetMessageId())
				break
			}
		}
	}
}

// drain receives and deletes every message of queue through node id and
// returns the ids seen.
func drain(t *testing.T, c qv1.QueueServiceClient, queue string) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for {
		r, err := c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: queue, MaxMessages: 100, WaitTime: durationpb.New(500 * time.Millisecond)})
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("drain: %v", err)
			}
			continue // e.g. a leader change: retry
		}
		if len(r.GetMessages()) == 0 {
			return got
		}
		var entries []*qv1.DeleteMessageBatchEntry
		for i, m := range r.GetMessages() {
			got[m.GetMessageId()] = true
			entries = append(entries, &qv1.DeleteMessageBatchEntry{Id: fmt.Sprint(i), ReceiptHandle: m.GetReceiptHandle()})
		}
		_, _ = c.DeleteMessageBatch(ctx, &qv1.DeleteMessageBatchRequest{Queue: queue, Entries: entries})
	}
}

func createQueueOn(t *testing.T, c qv1.QueueServiceClient, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: name, Attributes: &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(5 * time.Second)}})
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		<-time.After(100 * time.Millisecond)
	}
}

func (c *cluster) liveIDs() []uint64 {
	var ids []uint64
	for id := range c.procs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// kill -9 of the leader during a send load: every acknowledged message is
// received afterwards, and a new leader acknowledges sends within 3 s.
func TestKillLeaderDuringSendLoad(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.leader()
	createQueueOn(t, c.client(leader), "failover")
	var mu sync.Mutex
	live := func() []uint64 { mu.Lock(); defer mu.Unlock(); return c.liveIDs() }
	acks := newAckLog()
	ctx, stop := context.WithTimeout(context.Background(), 40*time.Second)
	defer stop()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) { defer wg.Done(); produce(ctx, c, live, "failover", w, 100000, acks) }(w)
	}
	for acks.count() < 500 && ctx.Err() == nil {
		<-time.After(10 * time.Millisecond)
	}
	mu.Lock()
	c.kill(leader)
	mu.Unlock()
	killedAt := time.Now()
	before := acks.count()
	// Keep the load on until sends have resumed for a while.
	for ctx.Err() == nil {
		if first, ok := acks.firstAfter(killedAt); ok && time.Since(first) > 2*time.Second {
			break
		}
		<-time.After(20 * time.Millisecond)
	}
	stop()
	wg.Wait()
	first, ok := acks.firstAfter(killedAt)
	if !ok {
		t.Fatalf("no send acknowledged after killing leader %d", leader)
	}
	gap := first.Sub(killedAt)
	t.Logf("killed leader %d after %d acknowledged sends; next acknowledged send %v later; %d acknowledged in all", leader, before, gap, acks.count())
	if gap > 3*time.Second {
		t.Errorf("sends resumed %v after the kill, want under 3s", gap)
	}
	// Every acknowledged message is there.
	c.start(leader)
	got := drain(t, c.client(c.leader()), "failover")
	lost := 0
	for id := range acks.ids {
		if !got[id] {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged messages lost", lost, len(acks.ids))
	}
	t.Logf("all %d acknowledged messages received after the failover (%d received)", len(acks.ids), len(got))
}

// A follower whose data directory is wiped rejoins, as a new node (serve
// --join: a wiped node under its old id is fenced, see
// TestWipedNodeIsFencedAndRejoins), and catches up by snapshot while sends
// continue; its old id is then retired, and the cluster without the old
// leader still has every message.
func TestWipedFollowerCatchesUpBySnapshot(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.leader()
	createQueueOn(t, c.client(leader), "wipe")
	var follower uint64
	for _, id := range c.liveIDs() {
		if id != leader {
			follower = id
			break
		}
	}
	var mu sync.Mutex
	live := func() []uint64 {
		mu.Lock()
		defer mu.Unlock()
		var ids []uint64
		for _, id := range c.liveIDs() {
			if id != follower {
				ids = append(ids, id)
			}
		}
		return ids
	}
	acks := newAckLog()
	ctx, stop := context.WithTimeout(context.Background(), 90*time.Second)
	defer stop()
	// Enough entries that the leader's log is truncated past the start.
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) { defer wg.Done(); produce(ctx, c, live, "wipe", w, 1500, acks) }(w)
	}
	wg.Wait()
	mu.Lock()
	c.kill(follower)
	if err := os.RemoveAll(c.dirs[follower]); err != nil {
		t.Fatal(err)
	}
	mu.Unlock()
	// Sends continue while the wiped follower comes back.
	for w := 4; w < 6; w++ {
		wg.Add(1)
		go func(w int) { defer wg.Done(); produce(ctx, c, live, "wipe", w, 1000000, acks) }(w)
	}
	joiner := startServe(t, c.dirs[follower], "--join", c.raftAddr(leader), "--raft-addr", c.raftAddr(follower))
	joinerShard := func() *qv1.ClusterShard {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := qv1.NewClusterServiceClient(joiner.grpcConn(t)).GetCluster(cctx, &qv1.GetClusterRequest{})
		if err != nil || len(r.GetShards()) == 0 {
			return nil
		}
		return r.GetShards()[0]
	}
	started := time.Now()
	var caught *qv1.ClusterShard
	for {
		if ctx.Err() != nil {
			t.Fatal("wiped follower did not catch up within the test's time")
		}
		f, l := joinerShard(), c.shard(leader)
		// Node 4 observes shard 0 (the metadata shard) as a learner until
		// the old id is retired and its replica moves to node 4.
		if f.GetAppliedIndex() > 0 && f.GetAppliedIndex()+50 >= l.GetAppliedIndex() && slices.Contains(f.GetMembers(), 4) {
			caught = f
			break
		}
		<-time.After(50 * time.Millisecond)
	}
	during := acks.count()
	<-time.After(time.Second)
	stop()
	wg.Wait()
	t.Logf("wiped follower %d rejoined as node 4 and caught up in %v: applied %d, log starts at %d; %d sends acknowledged in all (%d by the catch-up)",
		follower, time.Since(started), caught.GetAppliedIndex(), caught.GetFirstIndex(), acks.count(), during)
	if caught.GetFirstIndex() <= 1 {
		t.Errorf("follower's log starts at %d: it replayed the log instead of taking a snapshot", caught.GetFirstIndex())
	}
	if acks.count() <= during {
		t.Errorf("no sends acknowledged after the catch-up")
	}
	// Retire the old id, then the cluster without the old leader (the
	// other follower and node 4) still has every message.
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := c.clusterClient(leader).RemoveNode(rctx, &qv1.RemoveNodeRequest{NodeId: follower})
	rcancel()
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 60*time.Second, func() error {
		if sh := joinerShard(); slices.Contains(sh.GetMembers(), follower) || len(sh.GetVoters()) != 3 || !slices.Contains(sh.GetVoters(), 4) {
			return fmt.Errorf("shard 0 after removing node %d: %v", follower, sh)
		}
		return nil
	})
	c.kill(leader)
	got := drain(t, joiner.client(t), "wipe")
	for id := range acks.ids {
		if !got[id] {
			t.Fatalf("acknowledged message %s missing after the wiped follower rejoined", id)
		}
	}
}

// With both followers stopped a send fails with UNAVAILABLE / NO_QUORUM
// once its deadline passes: it is not reported sent. (Its entry may sit in
// the old leader's log and commit once the followers return: the outcome of
// a failed call is unknown, which is why sends carry idempotency keys.)
func TestSendWithoutQuorumFails(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.leader()
	createQueueOn(t, c.client(leader), "quorum")
	for _, id := range c.liveIDs() {
		if id != leader {
			c.kill(id)
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.client(leader).SendMessage(ctx, &qv1.SendMessageRequest{Queue: "quorum", Body: "must not be stored"})
	st, _ := status.FromError(err)
	reason := ""
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.GetReason()
		}
	}
	t.Logf("send without quorum: %v after %v", err, time.Since(start))
	if st.Code() != codes.Unavailable || reason != "NO_QUORUM" {
		t.Fatalf("send without quorum: code %v reason %q (%v), want UNAVAILABLE NO_QUORUM", st.Code(), reason, err)
	}
	// Bring the followers back: the cluster serves again, and the failed
	// send is stored at most once.
	for id := range c.dirs {
		if _, ok := c.procs[id]; !ok {
			c.start(id)
		}
	}
	got := drain(t, c.client(c.leader()), "quorum")
	if len(got) > 1 {
		t.Fatalf("%d messages stored by one failed send", len(got))
	}
	t.Logf("after the followers returned the failed send's entry was %s", map[bool]string{true: "committed (outcome unknown to the client)", false: "dropped"}[len(got) == 1])
}

// A replica that rejoins behind a 100,000-message backlog catches up without
// pausing the queue: sends keep being acknowledged meanwhile.
func TestRejoinWithLargeBacklogKeepsServing(t *testing.T) {
	// Info logs (leader changes, snapshots) are in the test log on failure.
	c := startCluster(t, 3, "--log-level", "info")
	leader := c.leader()
	createQueueOn(t, c.client(leader), "backlog")
	var follower uint64
	for _, id := range c.liveIDs() {
		if id != leader {
			follower = id
			break
		}
	}
	c.kill(follower)
	body := strings.Repeat("x", 1000)
	lc := c.client(leader)
	start := time.Now()
	var wg sync.WaitGroup
	const total, batch, workers = 100000, 100, 4
	var sendErr error
	var errMu sync.Mutex
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for b := w; b < total/batch; b += workers {
				var entries []*qv1.SendMessageBatchEntry
				for i := 0; i < batch; i++ {
					key := fmt.Sprintf("b%d-%d", b, i)
					entries = append(entries, &qv1.SendMessageBatchEntry{Id: fmt.Sprint(i), Body: body, IdempotencyKey: key})
				}
				err := retryUnavailable(30*time.Second, func(ctx context.Context) error {
					r, err := lc.SendMessageBatch(ctx, &qv1.SendMessageBatchRequest{Queue: "backlog", Entries: entries})
					if err == nil && len(r.GetFailed()) > 0 {
						err = fmt.Errorf("%d entries failed: %v", len(r.GetFailed()), r.GetFailed()[0])
					}
					return err
				})
				if err != nil {
					errMu.Lock()
					sendErr = err
					errMu.Unlock()
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if sendErr != nil {
		t.Fatal(sendErr)
	}
	t.Logf("backlog of %d messages sent in %v with follower %d down", total, time.Since(start), follower)

	// Restart the follower and keep sending, one message at a time, while it
	// catches up; record each send's latency, every attempt included.
	term := c.shard(leader).GetTerm()
	c.start(follower)
	rejoined := time.Now()
	var (
		lat      []time.Duration
		caughtUp time.Duration
	)
	for i := 0; ; i++ {
		t0 := time.Now()
		key := fmt.Sprint("during-", i)
		err := retryUnavailable(10*time.Second, func(ctx context.Context) error {
			_, err := lc.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "backlog", Body: key, IdempotencyKey: key})
			return err
		})
		if err != nil {
			t.Fatalf("send %d during the catch-up failed: %v", i, err)
		}
		lat = append(lat, time.Since(t0))
		if i%20 == 0 {
			f, l := c.shard(follower), c.shard(leader)
			if f.GetAppliedIndex() > 0 && f.GetAppliedIndex()+10 >= l.GetAppliedIndex() {
				caughtUp = time.Since(rejoined)
				break
			}
		}
		if time.Since(rejoined) > 120*time.Second {
			t.Fatalf("follower did not catch up within 120s")
		}
	}
	if now := c.shard(leader).GetTerm(); now != term {
		// A send then waited for the election: the latency check below
		// says whether that paused the queue.
		t.Logf("leader changed during the catch-up (term %d -> %d)", term, now)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	t.Logf("follower %d caught up in %v; %d sends acknowledged meanwhile (%.0f/s), latency p50 %v p99 %v max %v",
		follower, caughtUp, len(lat), float64(len(lat))/caughtUp.Seconds(), p(0.5), p(0.99), lat[len(lat)-1])
	if len(lat) < 10 {
		t.Errorf("only %d sends acknowledged while the follower caught up", len(lat))
	}
	if max := lat[len(lat)-1]; max > 2*time.Second {
		t.Errorf("a send took %v while the follower caught up: the queue paused", max)
	}
}

// retryUnavailable calls call until it succeeds, fails with another code
// than UNAVAILABLE, or budget ends; each attempt gets the rest of the
// budget. UNAVAILABLE (a leader change, LEADERSHIP_LOST: outcome unknown)
// is what clients retry: call must be idempotent (idempotency keys).
func retryUnavailable(budget time.Duration, call func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	for {
		err := call(ctx)
		if err == nil || status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// SIGTERM on the leader hands leadership over before the node stops, so
// sends resume faster than an election timeout would allow.
func TestSIGTERMTransfersLeadership(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.leader()
	createQueueOn(t, c.client(leader), "drain")
	var other uint64
	for _, id := range c.liveIDs() {
		if id != leader {
			other = id
			break
		}
	}
	oc := c.client(other)
	p := c.procs[leader]
	stopped := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Send through another node until it is acknowledged by a new leader.
	var acked time.Time
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := oc.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "drain", Body: "x", IdempotencyKey: fmt.Sprint("drain-", i)})
		cancel()
		if err == nil {
			if st := c.shard(other); st.GetLeader() != leader && st.GetLeader() != 0 {
				acked = time.Now()
				break
			}
		}
		if time.Since(stopped) > 20*time.Second {
			t.Fatalf("no send acknowledged by a new leader within 20s: %v", err)
		}
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("node did not exit after SIGTERM")
	}
	if p.cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("exit code %d after SIGTERM: %s", p.cmd.ProcessState.ExitCode(), p.stderr.String())
	}
	// Without a transfer the followers would first wait out an election
	// timeout (at least 10 ticks of 100 ms).
	gap := acked.Sub(stopped)
	t.Logf("SIGTERM of leader %d: a new leader acknowledged a send %v later; the node exited %v after the signal", leader, gap, time.Since(stopped))
	if gap >= time.Second {
		t.Errorf("a new leader took %v: leadership was not handed over", gap)
	}
}

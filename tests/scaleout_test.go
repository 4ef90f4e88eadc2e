package tests

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// steadyLoad sends and consumes a queue through the live nodes, keeping
// what the checks need: every acknowledged send, every successful delete,
// any delivery of a message after its delete succeeded, and the longest run
// of failing sends of a worker.
type steadyLoad struct {
	mu       sync.Mutex
	clients  map[uint64]qv1.QueueServiceClient
	acked    map[string]bool
	deleted  map[string]bool
	tried    map[string]bool // a delete that failed: its outcome is unknown
	redelAft []string        // delivered after a successful delete
	longest  time.Duration   // longest run of failing sends
	wg       sync.WaitGroup
}

func (l *steadyLoad) setLive(id uint64, c qv1.QueueServiceClient) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c == nil {
		delete(l.clients, id)
		return
	}
	l.clients[id] = c
}

func (l *steadyLoad) pick() qv1.QueueServiceClient {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]uint64, 0, len(l.clients))
	for id := range l.clients {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return l.clients[ids[rand.IntN(len(ids))]]
}

func (l *steadyLoad) count() (acked, deleted int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked), len(l.deleted)
}

func (l *steadyLoad) send(ctx context.Context, queue string, worker int) {
	defer l.wg.Done()
	for i := 0; ctx.Err() == nil; i++ {
		key := fmt.Sprintf("w%d-%d", worker, i)
		var failingSince time.Time
		for ctx.Err() == nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			r, err := l.pick().SendMessage(cctx, &qv1.SendMessageRequest{Queue: queue, Body: key, IdempotencyKey: key, PartitionKey: key})
			cancel()
			now := time.Now()
			if err == nil {
				l.mu.Lock()
				l.acked[r.GetMessageId()] = true
				if !failingSince.IsZero() {
					l.longest = max(l.longest, now.Sub(failingSince))
				}
				l.mu.Unlock()
				break
			}
			if failingSince.IsZero() {
				failingSince = now
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
		select { // a steady rate, not a flood: about 100 sends a second per worker
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (l *steadyLoad) consume(ctx context.Context, queue string) {
	defer l.wg.Done()
	for ctx.Err() == nil {
		c := l.pick()
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		r, err := c.ReceiveMessages(cctx, &qv1.ReceiveMessagesRequest{Queue: queue, MaxMessages: 10, WaitTime: durationpb.New(500 * time.Millisecond)})
		cancel()
		if err != nil {
			continue
		}
		for _, m := range r.GetMessages() {
			l.mu.Lock()
			if l.deleted[m.GetMessageId()] {
				l.redelAft = append(l.redelAft, m.GetMessageId())
			}
			l.mu.Unlock()
			dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err := c.DeleteMessage(dctx, &qv1.DeleteMessageRequest{Queue: queue, ReceiptHandle: m.GetReceiptHandle()})
			cancel()
			l.mu.Lock()
			if err == nil {
				l.deleted[m.GetMessageId()] = true
			} else {
				l.tried[m.GetMessageId()] = true
			}
			l.mu.Unlock()
		}
	}
}

// balanced checks the recorded membership: the given nodes active, every
// other one removed, no change under way, each active node within one of
// the others in data-shard replicas.
func balanced(r *qv1.ListNodesResponse, active []uint64) error {
	load := map[uint64]int{}
	for _, n := range r.GetNodes() {
		want := qv1.NodeState_NODE_STATE_REMOVED
		if slices.Contains(active, n.GetId()) {
			want = qv1.NodeState_NODE_STATE_ACTIVE
			load[n.GetId()] = 0
		}
		if n.GetState() != want {
			return fmt.Errorf("node %d is %v", n.GetId(), n.GetState())
		}
	}
	for _, rs := range r.GetReplicaSets() {
		if rs.GetPendingNode() != 0 || len(rs.GetVoters()) != 3 {
			return fmt.Errorf("replica set %v", rs)
		}
		for _, v := range append(slices.Clone(rs.GetVoters()), rs.GetLearners()...) {
			if _, ok := load[v]; !ok {
				return fmt.Errorf("shard %d names node %d", rs.GetShard(), v)
			}
		}
		if rs.GetShard() == 0 {
			continue
		}
		for _, v := range rs.GetVoters() {
			load[v]++
		}
	}
	lo, hi := 1<<30, 0
	for _, n := range load {
		lo, hi = min(lo, n), max(hi, n)
	}
	if hi-lo > 1 {
		return fmt.Errorf("data-shard replicas per node %v", load)
	}
	return nil
}

// leadersSpread checks that no node leads more than its share of the
// shards (rounded up), from each node's view of the shards it holds.
func leadersSpread(t *testing.T, procs map[uint64]*proc, shards int) error {
	led := map[uint64]uint64{} // shard -> leader
	for id, p := range procs {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		r, err := qv1.NewClusterServiceClient(p.grpcConn(t)).GetCluster(ctx, &qv1.GetClusterRequest{})
		cancel()
		if err != nil {
			return fmt.Errorf("node %d: %w", id, err)
		}
		for _, sh := range r.GetShards() {
			if sh.GetLeader() == id {
				led[sh.GetId()] = id
			}
		}
	}
	if len(led) != shards {
		return fmt.Errorf("leaders known for %d of %d shards", len(led), shards)
	}
	per := map[uint64]int{}
	for _, l := range led {
		per[l]++
	}
	share := (shards + len(procs) - 1) / len(procs)
	for id, n := range per {
		if n > share {
			return fmt.Errorf("node %d leads %d shards (share %d): %v", id, n, share, per)
		}
	}
	return nil
}

// TestScaleOutDrainAndReplace is issue 17's end-to-end run on real
// processes: 3 nodes (7 shards, RF 3) under a steady send and receive
// load; nodes 4 and 5 join and the rebalancer spreads the replicas (± 1)
// and the leaders; node 1 is drained and removed; node 2 is killed -9,
// its disk wiped, and it comes back with --join as a new node (6) that
// takes over node 2's replicas once node 2 is removed. No acknowledged
// message is lost, none is delivered after its delete succeeded, and no
// send keeps failing for more than 5 s.
func TestScaleOutDrainAndReplace(t *testing.T) {
	const shards = 7
	c := startCluster(t, 3, "--shards", fmt.Sprint(shards), "--log-level", "info")
	waitReady(t, c.client(1))
	ctx0, cancel0 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel0()
	for {
		_, err := c.client(1).CreateQueue(ctx0, &qv1.CreateQueueRequest{Name: "scale",
			Attributes: &qv1.QueueAttributes{Partitions: 6, VisibilityTimeout: durationpb.New(5 * time.Second)}})
		if err == nil {
			break
		}
		if ctx0.Err() != nil {
			t.Fatal(err)
		}
		<-time.After(100 * time.Millisecond)
	}
	procs := map[uint64]*proc{1: c.procs[1], 2: c.procs[2], 3: c.procs[3]}
	load := &steadyLoad{clients: map[uint64]qv1.QueueServiceClient{}, acked: map[string]bool{}, deleted: map[string]bool{}, tried: map[string]bool{}}
	for id, p := range procs {
		load.setLive(id, p.client(t))
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	for w := range 2 {
		load.wg.Add(1)
		go load.send(ctx, "scale", w)
	}
	load.wg.Add(1)
	go load.consume(ctx, "scale")
	progress := func(what string) {
		t.Helper()
		a0, d0 := load.count()
		checkFor(t, 30*time.Second, func() error {
			if a, d := load.count(); a < a0+50 || d < d0+20 {
				return fmt.Errorf("%s: %d sends and %d deletes since", what, a-a0, d-d0)
			}
			return nil
		})
	}
	progress("start")
	listNodes := func(via *proc) (*qv1.ListNodesResponse, error) {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return qv1.NewClusterServiceClient(via.grpcConn(t)).ListNodes(cctx, &qv1.ListNodesRequest{})
	}

	// Scale out: nodes 4 and 5 join; the rebalancer moves replicas onto them.
	start := time.Now()
	for id := uint64(4); id <= 5; id++ {
		procs[id] = startServe(t, t.TempDir(), "--join", c.raftAddr(1), "--raft-addr", freePort(t), "--log-level", "info")
	}
	checkFor(t, 4*time.Minute, func() error {
		r, err := listNodes(procs[3])
		if err != nil {
			return err
		}
		return balanced(r, []uint64{1, 2, 3, 4, 5})
	})
	t.Logf("scale out 3 -> 5 nodes: replicas balanced after %v", time.Since(start).Round(time.Second))
	for id := uint64(4); id <= 5; id++ {
		load.setLive(id, procs[id].client(t))
	}
	checkFor(t, 60*time.Second, func() error { return leadersSpread(t, procs, shards) })
	progress("after scale-out")

	// Retire node 1: drain, then it is removed and goes.
	start = time.Now()
	if _, err := qv1.NewClusterServiceClient(procs[4].grpcConn(t)).RemoveNode(context.Background(), &qv1.RemoveNodeRequest{NodeId: 1}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 4*time.Minute, func() error {
		r, err := listNodes(procs[3])
		if err != nil {
			return err
		}
		return balanced(r, []uint64{2, 3, 4, 5})
	})
	t.Logf("drain node 1: done after %v", time.Since(start).Round(time.Second))
	load.setLive(1, nil)
	c.kill(1)
	delete(procs, 1)
	progress("after node 1 left")

	// Replace a failed machine: node 2 dies with its disk; the machine
	// comes back empty with --join (a new node id), and node 2 is removed:
	// its replicas are recreated, some on the new node.
	load.setLive(2, nil)
	c.kill(2)
	delete(procs, 2)
	if err := os.RemoveAll(c.dirs[2]); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	procs[6] = startServe(t, c.dirs[2], "--join", c.raftAddr(3), "--raft-addr", c.raftAddr(2), "--log-level", "info")
	if _, err := qv1.NewClusterServiceClient(procs[3].grpcConn(t)).RemoveNode(context.Background(), &qv1.RemoveNodeRequest{NodeId: 2}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 4*time.Minute, func() error {
		r, err := listNodes(procs[3])
		if err != nil {
			return err
		}
		if len(r.GetNodes()) != 6 {
			return fmt.Errorf("nodes %v", r.GetNodes())
		}
		if err := balanced(r, []uint64{3, 4, 5, 6}); err != nil {
			return err
		}
		for _, rs := range r.GetReplicaSets() {
			if rs.GetShard() != 0 && slices.Contains(rs.GetVoters(), 6) {
				return nil
			}
		}
		return errors.New("node 6 holds no data shard")
	})
	t.Logf("replace node 2 by node 6: done after %v", time.Since(start).Round(time.Second))
	load.setLive(6, procs[6].client(t))
	progress("after the replacement")
	stop()
	load.wg.Wait()

	// Messages received but not deleted when the load stopped come back
	// once their 5 s visibility timeout ends: drain until then and after.
	stopped := time.Now()
	got := map[string]bool{}
	for {
		more := drain(t, procs[6].client(t), "scale")
		for id := range more {
			got[id] = true
		}
		if len(more) == 0 && time.Since(stopped) > 6*time.Second {
			break
		}
		<-time.After(200 * time.Millisecond)
	}
	load.mu.Lock()
	defer load.mu.Unlock()
	var lost []string
	for id := range load.acked {
		if !got[id] && !load.deleted[id] && !load.tried[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages lost, e.g. %v", len(lost), len(load.acked), lost[:min(5, len(lost))])
	}
	if len(load.redelAft) > 0 {
		t.Fatalf("%d messages delivered after their delete succeeded, e.g. %v", len(load.redelAft), load.redelAft[0])
	}
	for id := range got {
		if load.deleted[id] {
			t.Fatalf("message %s delivered by the final drain after its delete succeeded", id)
		}
	}
	t.Logf("%d acknowledged sends, %d deleted under load, %d drained at the end; longest run of failing sends %v",
		len(load.acked), len(load.deleted), len(got), load.longest.Round(time.Millisecond))
	if load.longest > 5*time.Second {
		t.Fatalf("sends failed for %v in a row", load.longest)
	}
}

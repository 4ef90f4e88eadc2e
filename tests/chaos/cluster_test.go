package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/internal/testports"
)

// state of a node process.
type state int

const (
	down   state = iota
	up           // running
	paused       // SIGSTOPped
)

func (s state) String() string { return [...]string{"down", "up", "paused"}[s] }

// node is one `quorumq serve` process slot: its ports and data directory
// outlive its incarnations. The harness names nodes by slot (id); the Raft
// id is the same until the slot's data is wiped and it rejoins under a new
// one (see rejoin): leaders read from the nodes are mapped back to slots,
// partitions sent to them are mapped to Raft ids.
type node struct {
	id                         uint64 // slot
	dir                        string
	grpcAddr, httpAddr, raftAd string
	conn                       *grpc.ClientConn // to grpcAddr; reconnects by itself

	mu      sync.Mutex
	state   state
	cmd     *exec.Cmd
	exited  chan struct{}
	blocked []uint64 // peers (slots) this node is cut off from (re-applied after a restart)
	raftID  uint64   // current Raft id
	former  []uint64 // Raft ids the slot had before (retired)
	join    string   // non-empty: the slot was started with --join (and is restarted so)
}

// cluster is a set of chaos-built quorumq processes on 127.0.0.1.
type cluster struct {
	bin    string
	dir    string
	shards int
	peers  string
	nodes  map[uint64]*node
	ids    []uint64
	logf   func(format string, args ...any)
	httpc  *http.Client
}

// electionTimeout is the longest election timeout raft draws: the tick is
// 100 ms and elections are randomised in [10, 20) ticks.
const electionTimeout = 2 * time.Second

// freeAddr: see testports.Reserve for why not ":0".
func freeAddr() (string, error) { return testports.Reserve() }

// newCluster prepares n node slots (nothing runs yet).
func newCluster(bin, dir string, n, shards int, logf func(string, ...any)) (_ *cluster, err error) {
	c := &cluster{bin: bin, dir: dir, shards: shards, nodes: map[uint64]*node{}, logf: logf,
		httpc: &http.Client{Timeout: 2 * time.Second}}
	defer func() {
		if err != nil {
			for _, nd := range c.nodes {
				_ = nd.conn.Close()
			}
		}
	}()
	var peers []string
	// Hold every picked port until all are picked, so no two are the same.
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for id := uint64(1); id <= uint64(n); id++ {
		nd := &node{id: id, raftID: id, dir: filepath.Join(dir, fmt.Sprintf("n%d", id))}
		for _, a := range []*string{&nd.grpcAddr, &nd.httpAddr, &nd.raftAd} {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, fmt.Errorf("free port: %w", err)
			}
			held = append(held, l)
			*a = l.Addr().String()
		}
		conn, err := grpc.NewClient(nd.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
				MinConnectTimeout: time.Second}))
		if err != nil {
			return nil, fmt.Errorf("client of node %d: %w", id, err)
		}
		nd.conn = conn
		c.nodes[id] = nd
		c.ids = append(c.ids, id)
		peers = append(peers, fmt.Sprintf("%d=%s", id, nd.raftAd))
	}
	c.peers = strings.Join(peers, ",")
	return c, nil
}

func (c *cluster) api(id uint64) qv1.QueueServiceClient {
	return qv1.NewQueueServiceClient(c.nodes[id].conn)
}

func (c *cluster) admin(id uint64) qv1.ClusterServiceClient {
	return qv1.NewClusterServiceClient(c.nodes[id].conn)
}

func (c *cluster) stateOf(id uint64) state {
	n := c.nodes[id]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

// idsIn returns the nodes in state s.
func (c *cluster) idsIn(s state) []uint64 {
	var out []uint64
	for _, id := range c.ids {
		if c.stateOf(id) == s {
			out = append(out, id)
		}
	}
	return out
}

// start starts node id on its data directory and waits (bounded) for its
// HTTP listener; it re-applies the node's partition.
func (c *cluster) start(id uint64) error {
	n := c.nodes[id]
	n.mu.Lock()
	if n.state != down {
		n.mu.Unlock()
		return nil
	}
	logFile, err := os.OpenFile(filepath.Join(c.dir, fmt.Sprintf("n%d.log", id)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("node %d log: %w", id, err)
	}
	args := []string{"serve", "--data-dir", n.dir, "--grpc-addr", n.grpcAddr, "--http-addr", n.httpAddr, "--raft-addr", n.raftAd,
		"--sqs-addr=", "--fault-injection", "--log-level", "warn", "--metrics-addr="}
	// CHAOS_SERVE_FLAGS: more flags for every node (e.g. --state-without-wal).
	args = append(args, strings.Fields(os.Getenv("CHAOS_SERVE_FLAGS"))...)
	if n.join != "" { // a joined node reads its id back from its data
		args = append(args, "--join", n.join)
	} else {
		// Every shard on every node (the replica comparison reads each
		// shard on all of them).
		args = append(args, "--node-id", fmt.Sprint(id), "--peers", c.peers, "--shards", fmt.Sprint(c.shards),
			"--replication-factor", fmt.Sprint(len(c.ids)))
	}
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		n.mu.Unlock()
		return fmt.Errorf("start node %d: %w", id, err)
	}
	exited := make(chan struct{})
	go func() { // owned by the process: ends when it exits
		_ = cmd.Wait()
		_ = logFile.Close()
		close(exited)
	}()
	n.cmd, n.exited, n.state = cmd, exited, up
	blocked := n.blocked
	n.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := c.setBlocked(id, blocked); err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("node %d exited at start (log %s)", id, filepath.Join(c.dir, fmt.Sprintf("n%d.log", id)))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %d: no HTTP listener 30s after start", id)
		}
	}
}

// signal sends sig to node id's process.
func (c *cluster) signal(id uint64, sig syscall.Signal) error {
	n := c.nodes[id]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.state == down {
		return fmt.Errorf("node %d is down", id)
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal node %d: %w", id, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		n.state = paused
	case syscall.SIGCONT:
		n.state = up
	}
	return nil
}

// kill kills node id with SIGKILL (sig) or SIGTERM (a graceful stop, bounded
// by 40 s, then SIGKILL) and waits for it to exit.
func (c *cluster) kill(id uint64, graceful bool) error {
	n := c.nodes[id]
	n.mu.Lock()
	if n.state == down {
		n.mu.Unlock()
		return nil
	}
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if graceful {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(40 * time.Second):
			c.logf("node %d: no exit 40s after SIGTERM; SIGKILL", id)
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("node %d: no exit 30s after SIGKILL", id)
	}
	n.mu.Lock()
	n.state = down
	n.mu.Unlock()
	return nil
}

// wipe removes node id's data directory (the node must be down).
func (c *cluster) wipe(id uint64) error {
	if c.stateOf(id) != down {
		return fmt.Errorf("wipe node %d: it is not down", id)
	}
	return os.RemoveAll(c.nodes[id].dir)
}

// stopAll kills every node (cleanup) and closes the clients.
func (c *cluster) stopAll() {
	for _, id := range c.ids {
		if err := c.kill(id, false); err != nil {
			c.logf("cleanup: %v", err)
		}
		_ = c.nodes[id].conn.Close()
	}
}

// raftIDs returns every Raft id slot id had: a node is cut off from all of
// them, as a node's own --peers may still name a rejoined slot's old id.
func (c *cluster) raftIDs(id uint64) []uint64 {
	n := c.nodes[id]
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]uint64{n.raftID}, n.former...)
}

// raftID is slot id's current Raft id.
func (c *cluster) raftID(id uint64) uint64 {
	n := c.nodes[id]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.raftID
}

// slotOf maps a Raft id to its slot (0: none has it now).
func (c *cluster) slotOf(raftID uint64) uint64 {
	for _, id := range c.ids {
		if raftID != 0 && c.raftID(id) == raftID {
			return id
		}
	}
	return 0
}

// setBlocked cuts node id off from peers (slots; empty: heals it) through
// its fault-injection endpoint, and remembers it for restarts.
func (c *cluster) setBlocked(id uint64, peers []uint64) error {
	n := c.nodes[id]
	n.mu.Lock()
	n.blocked = append([]uint64(nil), peers...)
	n.mu.Unlock()
	raftIDs := []uint64{}
	for _, p := range peers {
		raftIDs = append(raftIDs, c.raftIDs(p)...)
	}
	body, err := json.Marshal(map[string][]uint64{"blocked": raftIDs})
	if err != nil {
		return err
	}
	resp, err := c.httpc.Post("http://"+n.httpAddr+"/debug/faults", "application/json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("node %d faults: %w", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("node %d faults: HTTP %d", id, resp.StatusCode)
	}
	return nil
}

// syncAll makes every node write its state durably (the chaos build's
// /debug/faults/sync): an apply is written without sync and becomes durable
// with the node's next synced Raft write, which an idle node does not make.
func (c *cluster) syncAll() error {
	var errs []error
	for _, id := range c.ids {
		resp, err := c.httpc.Post("http://"+c.nodes[id].httpAddr+"/debug/faults/sync", "application/json", nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("node %d sync: %w", id, err))
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			errs = append(errs, fmt.Errorf("node %d sync: HTTP %d", id, resp.StatusCode))
		}
	}
	return errors.Join(errs...)
}

// partition splits the cluster into side and the rest (on running nodes
// now, on the others when they start).
func (c *cluster) partition(side []uint64) error {
	in := map[uint64]bool{}
	for _, id := range side {
		in[id] = true
	}
	var errs []error
	for _, id := range c.ids {
		var cut []uint64
		for _, o := range c.ids {
			if in[o] != in[id] {
				cut = append(cut, o)
			}
		}
		if err := c.applyBlocked(id, cut); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *cluster) heal() error {
	var errs []error
	for _, id := range c.ids {
		if err := c.applyBlocked(id, nil); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// applyBlocked records the cut for node id and applies it if it runs.
func (c *cluster) applyBlocked(id uint64, cut []uint64) error {
	if c.stateOf(id) != up {
		n := c.nodes[id]
		n.mu.Lock()
		n.blocked = cut
		n.mu.Unlock()
		return nil // a paused node gets it when it resumes: see resume
	}
	return c.setBlocked(id, cut)
}

// resume continues a paused node and applies its recorded partition.
func (c *cluster) resume(id uint64) error {
	if err := c.signal(id, syscall.SIGCONT); err != nil {
		return err
	}
	n := c.nodes[id]
	n.mu.Lock()
	cut := n.blocked
	n.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.setBlocked(id, cut)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shardView is one node's view of every shard.
type shardView struct {
	leader  map[uint64]uint64 // shard -> leader's slot (0: none, or a retired id)
	applied map[uint64]uint64
	commit  map[uint64]uint64
	last    map[uint64]uint64 // the answering node's last log index
}

func (c *cluster) view(id uint64, timeout time.Duration) (shardView, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := c.admin(id).GetCluster(ctx, &qv1.GetClusterRequest{})
	if err != nil {
		return shardView{}, fmt.Errorf("GetCluster on node %d: %w", id, err)
	}
	v := shardView{leader: map[uint64]uint64{}, applied: map[uint64]uint64{}, commit: map[uint64]uint64{}, last: map[uint64]uint64{}}
	for _, s := range r.GetShards() {
		v.leader[s.GetId()], v.applied[s.GetId()], v.commit[s.GetId()] = c.slotOf(s.GetLeader()), s.GetAppliedIndex(), s.GetCommitIndex()
		v.last[s.GetId()] = s.GetLastIndex()
	}
	return v, nil
}

// agreedLeaders reports whether every node in ids sees, for every shard,
// the same leader, one of ids; it returns shard 0's.
func (c *cluster) agreedLeaders(ids []uint64) (uint64, bool) {
	in := map[uint64]bool{}
	for _, id := range ids {
		in[id] = true
	}
	var first map[uint64]uint64
	for _, id := range ids {
		v, err := c.view(id, 500*time.Millisecond)
		if err != nil || len(v.leader) != c.shards {
			return 0, false
		}
		for s, l := range v.leader {
			if l == 0 || !in[l] || (first != nil && first[s] != l) {
				return 0, false
			}
		}
		first = v.leader
	}
	return first[0], first != nil
}

// waitLeaders polls until ids agree on every shard's leader, up to limit;
// it returns how long that took.
func (c *cluster) waitLeaders(ids []uint64, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		if _, ok := c.agreedLeaders(ids); ok {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return time.Since(start), fmt.Errorf("nodes %v agree on no leader after %v", ids, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leader returns shard 0's leader as the running nodes see it: the one
// they agree on within 3 s, else the one most of them name (0: none).
func (c *cluster) leader() uint64 {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if l, ok := c.agreedLeaders(c.idsIn(up)); ok {
			return l
		}
		time.Sleep(50 * time.Millisecond)
	}
	votes := map[uint64]int{}
	var best uint64
	for _, id := range c.idsIn(up) {
		if v, err := c.view(id, 500*time.Millisecond); err == nil && v.leader[0] != 0 {
			votes[v.leader[0]]++
			if votes[v.leader[0]] > votes[best] {
				best = v.leader[0]
			}
		}
	}
	return best
}

// converged waits until every node reports, for every shard, the same
// applied index equal to the commit index; it returns the shards' applied
// indexes.
func (c *cluster) converged(limit time.Duration) (map[uint64]uint64, time.Duration, error) {
	start := time.Now()
	for {
		var desc []string
		var ref map[uint64]uint64
		same := true
		for _, id := range c.ids {
			v, err := c.view(id, time.Second)
			if err != nil {
				same = false
				desc = append(desc, err.Error())
				continue
			}
			desc = append(desc, fmt.Sprintf("node %d: applied %v commit %v leader %v", id, v.applied, v.commit, v.leader))
			for s, a := range v.applied {
				if a != v.commit[s] || (ref != nil && ref[s] != a) {
					same = false
				}
			}
			if ref == nil {
				ref = v.applied
			}
		}
		if same && ref != nil {
			return ref, time.Since(start), nil
		}
		if time.Since(start) > limit {
			sort.Strings(desc)
			return nil, time.Since(start), fmt.Errorf("replicas not converged after %v: %s", limit, strings.Join(desc, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

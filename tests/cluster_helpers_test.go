package tests

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/internal/testports"
)

// cluster is a set of `quorumq serve` processes on loopback.
type cluster struct {
	t     *testing.T
	dirs  map[uint64]string
	peers string // --peers value
	procs map[uint64]*proc
	extra []string // flags of every node (e.g. --shards)
}

func freePort(t *testing.T) string {
	t.Helper()
	addr, err := testports.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// startCluster starts n nodes with their data in fresh directories.
func startCluster(t *testing.T, n int, extra ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, dirs: map[uint64]string{}, procs: map[uint64]*proc{}, extra: extra}
	var peers []string
	for id := uint64(1); id <= uint64(n); id++ {
		c.dirs[id] = t.TempDir()
		peers = append(peers, fmt.Sprintf("%d=%s", id, freePort(t)))
	}
	c.peers = strings.Join(peers, ",")
	for id := uint64(1); id <= uint64(n); id++ {
		c.start(id)
	}
	return c
}

func (c *cluster) raftAddr(id uint64) string {
	for _, p := range strings.Split(c.peers, ",") {
		if strings.HasPrefix(p, fmt.Sprintf("%d=", id)) {
			return strings.TrimPrefix(p, fmt.Sprintf("%d=", id))
		}
	}
	return ""
}

// start (re)starts node id on its data directory.
func (c *cluster) start(id uint64) *proc {
	c.t.Helper()
	args := append([]string{"--node-id", fmt.Sprint(id), "--peers", c.peers, "--raft-addr", c.raftAddr(id)}, c.extra...)
	p := startServe(c.t, c.dirs[id], args...)
	c.procs[id] = p
	return p
}

// kill sends SIGKILL to node id and waits for it to exit.
func (c *cluster) kill(id uint64) {
	c.t.Helper()
	p := c.procs[id]
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	delete(c.procs, id)
}

func (c *cluster) client(id uint64) qv1.QueueServiceClient {
	return c.procs[id].client(c.t)
}

func (c *cluster) clusterClient(id uint64) qv1.ClusterServiceClient {
	return qv1.NewClusterServiceClient(c.procs[id].grpcConn(c.t))
}

// leader waits until the running nodes agree on shard 0's leader.
func (c *cluster) leader() uint64 {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var leader uint64
		agree := true
		for id := range c.procs {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			r, err := c.clusterClient(id).GetCluster(ctx, &qv1.GetClusterRequest{})
			cancel()
			if err != nil || len(r.GetShards()) == 0 || r.GetShards()[0].GetLeader() == 0 {
				agree = false
				break
			}
			l := r.GetShards()[0].GetLeader()
			if _, alive := c.procs[l]; !alive || (leader != 0 && l != leader) {
				agree = false
				break
			}
			leader = l
		}
		if agree && leader != 0 {
			return leader
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no agreed leader within 30s")
		}
		<-time.After(50 * time.Millisecond)
	}
}

// shard returns node id's view of shard 0.
func (c *cluster) shard(id uint64) *qv1.ClusterShard {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.clusterClient(id).GetCluster(ctx, &qv1.GetClusterRequest{})
	if err != nil {
		c.t.Fatalf("GetCluster on node %d: %v", id, err)
	}
	return r.GetShards()[0]
}

// Package testcluster starts real quorumq nodes in-process for the SDK's
// tests and examples: one dev node, or several whose Raft traffic goes
// through a raftnode.MemNetwork that can partition them. API calls and
// forwarding use real gRPC on loopback.
package testcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"os"
	"sync"
	"time"

	"github.com/quorumq/quorumq/internal/testports"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/node"
	"github.com/quorumq/quorumq/server/shardserver"
)

// Config describes a cluster. Zero values: one node, dev mode.
type Config struct {
	// Size is the number of nodes (default 1).
	Size int
	// Authenticator verifies callers (nil: dev mode).
	Authenticator server.Authenticator
	// ProposeTimeout bounds a proposal (default 2s).
	ProposeTimeout time.Duration
}

// Cluster is a running set of nodes.
type Cluster struct {
	// Net carries Raft traffic between nodes (nil for one node).
	Net   *raftnode.MemNetwork
	Nodes map[uint64]*node.Node
	ids   []uint64
	dir   string
}

// freeAddr is a loopback address from below the ephemeral range (see
// testports: a ":0" port can be taken by an outgoing connection before the
// node binds it).
func freeAddr() (string, error) { return testports.Reserve() }

// Start starts the nodes and waits until they are ready.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if cfg.Size <= 0 {
		cfg.Size = 1
	}
	if cfg.ProposeTimeout <= 0 {
		cfg.ProposeTimeout = 2 * time.Second
	}
	dir, err := os.MkdirTemp("", "quorumq-sdk-test-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Nodes: map[uint64]*node.Node{}, dir: dir}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	peers := map[uint64]string{}
	if cfg.Size > 1 {
		c.Net = raftnode.NewMemNetwork()
		for id := uint64(1); id <= uint64(cfg.Size); id++ {
			if peers[id], err = freeAddr(); err != nil {
				return nil, err
			}
		}
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for id := uint64(1); id <= uint64(cfg.Size); id++ {
		nc := node.Config{
			DataDir: fmt.Sprintf("%s/n%d", dir, id), NodeID: id,
			HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", Logger: logger,
			Server:        shardserver.Config{HousekeepingInterval: 50 * time.Millisecond, ProposeTimeout: cfg.ProposeTimeout},
			Authenticator: cfg.Authenticator,
		}
		if cfg.Size > 1 {
			id := id
			nc.Peers, nc.RaftAddr = peers, peers[id]
			nc.RaftTransport = c.Net.Transport(id)
			nc.AttachHost = func(h *raftnode.Host) { c.Net.Attach(id, h) }
		}
		n, err := node.Start(ctx, nc)
		if err != nil {
			return nil, fmt.Errorf("start node %d: %w", id, err)
		}
		c.Nodes[id] = n
		c.ids = append(c.ids, id)
	}
	for _, n := range c.Nodes {
		if err := n.WaitReady(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Endpoints returns the nodes' gRPC addresses in node id order.
func (c *Cluster) Endpoints() []string {
	out := make([]string, 0, len(c.ids))
	for _, id := range c.ids {
		out = append(out, c.Nodes[id].GRPCAddr())
	}
	return out
}

// Leader waits until the given nodes (all when none given) agree on the
// leader of the data shard and returns it.
func (c *Cluster) Leader(ctx context.Context, among ...uint64) (uint64, error) {
	if len(among) == 0 {
		among = c.ids
	}
	for {
		var leader uint64
		agreed := true
		for _, id := range among {
			st, err := c.Nodes[id].Host().Status(0)
			if err != nil || st.LeaderID == 0 || (leader != 0 && st.LeaderID != leader) {
				agreed = false
				break
			}
			leader = st.LeaderID
		}
		if agreed {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return 0, errors.New("testcluster: no agreed leader: " + ctx.Err().Error())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Stop stops every node and removes the data.
func (c *Cluster) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Go(func() { _ = n.Stop(ctx) })
	}
	wg.Wait()
	_ = os.RemoveAll(c.dir)
}

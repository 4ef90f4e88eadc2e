package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
)

// LocalView finds shard leaders through this node's own Raft replicas (a
// storage node hosts every shard).
type LocalView struct {
	Raft    shardserver.Raft
	Timeout time.Duration // wait for an election, default 5s
}

// Leader implements ShardView.
func (v LocalView) Leader(ctx context.Context, shard uint64) (uint64, error) {
	st, err := v.Raft.Status(shard)
	if err != nil {
		return 0, server.StatusError(codes.Unavailable, server.ReasonNotLeader, fmt.Sprintf("shard %d: %v", shard, err), nil)
	}
	if st.LeaderID != 0 {
		return st.LeaderID, nil
	}
	timeout := v.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id, err := v.Raft.WaitLeader(wctx, shard)
	if err != nil {
		return 0, server.StatusError(codes.Unavailable, server.ReasonNoQuorum, fmt.Sprintf("shard %d has no leader: %v", shard, err), nil)
	}
	return id, nil
}

// Hint implements ShardView: Raft itself learns the leader.
func (LocalView) Hint(uint64, uint64) {}

// MemberView is a storage node's view once shards live on some nodes only
// (replica sets smaller than the cluster): a shard this node is a member of
// (voter or learner) is looked up in its own replica, any other in the
// other storage nodes' answers. A replica removed from its shard stays on
// the node, outside the configuration and knowing no current leader, until
// the node drops it (server/node dropRemoved): it counts as no replica.
type MemberView struct {
	Self   uint64
	Local  LocalView
	Remote *RemoteView
}

// IsMember reports whether node self holds a replica of shard that is in
// the shard's applied configuration (a halted replica counts: the router
// handles it).
func IsMember(raft shardserver.Raft, self, shard uint64) bool {
	st, err := raft.Status(shard)
	switch {
	case errors.Is(err, raftnode.ErrGroupNotFound):
		return false
	case err != nil:
		return true
	}
	return slices.Contains(st.Members, self)
}

// Leader implements ShardView.
func (v MemberView) Leader(ctx context.Context, shard uint64) (uint64, error) {
	st, err := v.Local.Raft.Status(shard) // one status read on the routing path
	switch {
	case errors.Is(err, raftnode.ErrGroupNotFound), err == nil && !slices.Contains(st.Members, v.Self):
		return v.Remote.Leader(ctx, shard)
	case err == nil && st.LeaderID != 0:
		return st.LeaderID, nil
	}
	return v.Local.Leader(ctx, shard)
}

// Hint implements ShardView.
func (v MemberView) Hint(shard, leader uint64) {
	if !IsMember(v.Local.Raft, v.Self, shard) {
		v.Remote.Hint(shard, leader)
	}
}

// RemoteView is an API-tier node's view of the storage nodes: it asks
// every storage node for its shards' leaders (the peer service's Cluster
// call) about once a second, and at once when a router reports a leader
// unreachable. Per shard, the answer with the highest term wins.
type RemoteView struct {
	fwd   *Forwarder
	nodes []uint64
	every time.Duration

	mu         sync.Mutex
	leaders    map[uint64]uint64 // shard -> leader
	terms      map[uint64]uint64
	shards     map[uint64]*qv1.ClusterShard // shard -> its leader's answer (else the highest term's)
	fromLeader map[uint64]bool
	last       *qv1.GetClusterResponse // merged: every shard some node hosts
	changed    chan struct{}           // closed and replaced on each refresh
	wake       chan struct{}
	onShard    func(shards, base int)
	learn      bool // take the storage nodes from the answers (API tier)
}

// LearnNodes makes the view follow the storage nodes the answers name
// (joined and removed ones), instead of the nodes it was made with: an
// API-tier node's --peers are the bootstrap nodes only. Call before Run.
func (v *RemoteView) LearnNodes() { v.learn = true }

// OnShards registers f to learn the shard count and the base count (see
// Router.SetLayout) on each refresh (set before Run).
func (v *RemoteView) OnShards(f func(shards, base int)) { v.onShard = f }

// NewRemoteView returns a view over the storage nodes. Run it.
func NewRemoteView(fwd *Forwarder, nodes []uint64) *RemoteView {
	return &RemoteView{fwd: fwd, nodes: nodes, every: time.Second, leaders: map[uint64]uint64{}, terms: map[uint64]uint64{},
		shards: map[uint64]*qv1.ClusterShard{}, changed: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// SetNodes replaces the storage nodes asked (membership changes).
func (v *RemoteView) SetNodes(nodes []uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.nodes = slices.Clone(nodes)
}

// KnownLeader is the leader of shard as last seen, without waiting (0:
// none known).
func (v *RemoteView) KnownLeader(shard uint64) uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.leaders[shard]
}

// ShardStatus is the last answer about shard from its leader (else from
// the member of the highest term), and whether the leader gave it; false if
// no node reported it.
func (v *RemoteView) ShardStatus(shard uint64) (sh *qv1.ClusterShard, fromLeader, ok bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	sh, ok = v.shards[shard]
	return sh, ok && v.fromLeader[shard], ok
}

// Run polls until ctx ends.
func (v *RemoteView) Run(ctx context.Context) {
	t := time.NewTicker(v.every)
	defer t.Stop()
	for {
		v.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-v.wake:
			select { // at most ten refreshes a second
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

func (v *RemoteView) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	v.mu.Lock()
	nodes := v.nodes
	v.mu.Unlock()
	answers := make([]*qv1.GetClusterResponse, len(nodes))
	var wg sync.WaitGroup
	for i, id := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := &qv1.GetClusterResponse{}
			if err := v.fwd.invoke(ctx, id, server.PeerClusterMethod, &qv1.GetClusterRequest{}, out); err == nil {
				answers[i] = out
			}
		}()
	}
	wg.Wait()
	v.mu.Lock()
	defer v.mu.Unlock()
	leaders, terms, shards, fromLeader := map[uint64]uint64{}, map[uint64]uint64{}, map[uint64]*qv1.ClusterShard{}, map[uint64]bool{}
	var merged *qv1.GetClusterResponse
	for _, a := range answers {
		if a == nil {
			continue
		}
		if merged == nil || len(a.GetNodes()) > len(merged.GetNodes()) || len(a.GetReplicaSets()) > len(merged.GetReplicaSets()) {
			merged = &qv1.GetClusterResponse{NodeId: a.GetNodeId(), Nodes: a.GetNodes(), Role: a.GetRole(), ReplicaSets: a.GetReplicaSets()}
		}
		for _, sh := range a.GetShards() {
			id := sh.GetId()
			if sh.GetLeader() != 0 && sh.GetTerm() >= terms[id] {
				leaders[id], terms[id] = sh.GetLeader(), sh.GetTerm()
			}
			// The leader's own answer carries the lag; else the highest term.
			if prev, ok := shards[id]; !ok || sh.GetTerm() > prev.GetTerm() || (sh.GetTerm() == prev.GetTerm() && sh.GetLeader() == a.GetNodeId()) {
				shards[id], fromLeader[id] = sh, sh.GetLeader() == a.GetNodeId()
			}
		}
	}
	if merged != nil && v.learn && len(merged.GetNodes()) > 0 {
		var nodes []uint64
		for _, n := range merged.GetNodes() {
			if n.GetRaftAddress() != "" {
				v.fwd.SetPeer(n.GetId(), n.GetRaftAddress())
				nodes = append(nodes, n.GetId())
			}
		}
		if len(nodes) > 0 {
			v.nodes = nodes
		}
	}
	if merged != nil {
		for _, a := range answers {
			merged.ShardCount = max(merged.ShardCount, a.GetShardCount())
			if b := a.GetBaseShardCount(); b > 0 && (merged.BaseShardCount == 0 || b < merged.BaseShardCount) {
				merged.BaseShardCount = b
			}
		}
		for id := range shards {
			merged.Shards = append(merged.Shards, shards[id])
		}
		slices.SortFunc(merged.Shards, func(a, b *qv1.ClusterShard) int { return int(a.GetId()) - int(b.GetId()) })
		merged.ShardCount = max(merged.ShardCount, uint32(len(merged.Shards)))
		v.last = merged
	}
	v.leaders, v.terms, v.shards, v.fromLeader = leaders, terms, shards, fromLeader
	if v.onShard != nil && v.last != nil && v.last.GetShardCount() > 0 {
		v.onShard(int(v.last.GetShardCount()), int(v.last.GetBaseShardCount()))
	}
	close(v.changed)
	v.changed = make(chan struct{})
}

// Leader implements ShardView, waiting for a refresh while none is known.
func (v *RemoteView) Leader(ctx context.Context, shard uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		v.mu.Lock()
		id, changed := v.leaders[shard], v.changed
		v.mu.Unlock()
		if id != 0 {
			return id, nil
		}
		v.poke()
		select {
		case <-ctx.Done():
			return 0, server.StatusError(codes.Unavailable, server.ReasonNoQuorum, fmt.Sprintf("shard %d: no leader known", shard), nil)
		case <-changed:
		}
	}
}

// Hint implements ShardView.
func (v *RemoteView) Hint(shard, leader uint64) {
	v.mu.Lock()
	v.leaders[shard] = leader
	v.mu.Unlock()
	if leader == 0 {
		v.poke()
	}
}

func (v *RemoteView) poke() {
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// Shards returns the cluster's shard count as last seen (0: not yet).
func (v *RemoteView) Shards() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.last == nil {
		return 0
	}
	return int(v.last.GetShardCount())
}

// Cluster returns the last answer of a storage node (nil: none yet).
func (v *RemoteView) Cluster() *qv1.GetClusterResponse {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.last
}

// leaderOf is the leader of shard that the router routes to: the view's,
// unless this node's replica of the shard is halted (it stopped after a
// storage failure, so it knows no leader, or names itself): then the one
// the other nodes report, once they elected one, within ctx. Else a halted
// replica's node would retry itself until the deadline while a healthy
// leader serves the shard.
func (r *Router) leaderOf(ctx context.Context, shard uint64) (uint64, error) {
	leader, err := r.cfg.View.Leader(ctx, shard)
	if (err == nil && leader != r.cfg.Self) || !r.halted(shard) || r.cfg.Forwarder == nil {
		return leader, err
	}
	for {
		if l := r.peerLeader(ctx, shard); l != 0 {
			return l, nil
		}
		select {
		case <-ctx.Done():
			return 0, server.StatusError(codes.Unavailable, server.ReasonNotLeader,
				fmt.Sprintf("node %d's replica of shard %d is halted and no other node names a leader", r.cfg.Self, shard), nil)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// halted reports whether this node's replica of shard stopped after a
// storage failure.
func (r *Router) halted(shard uint64) bool {
	srv := r.localServer(shard)
	if srv == nil {
		return false
	}
	_, err := srv.Raft().Status(shard)
	return errors.Is(err, raftnode.ErrHalted)
}

// peerLeader asks the other nodes which node leads shard (the answer of
// the highest term wins); 0 when none names another node.
func (r *Router) peerLeader(ctx context.Context, shard uint64) uint64 {
	if r.cfg.Forwarder == nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var ids []uint64
	for id := range r.cfg.Forwarder.peers {
		if id != r.cfg.Self {
			ids = append(ids, id)
		}
	}
	answers, _ := parallel(len(ids), func(i int) (*qv1.GetClusterResponse, error) {
		out := &qv1.GetClusterResponse{}
		if err := r.cfg.Forwarder.invoke(ctx, ids[i], server.PeerClusterMethod, &qv1.GetClusterRequest{}, out); err != nil {
			return nil, nil // that node is down: ask the others
		}
		return out, nil
	})
	var leader, term uint64
	for _, a := range answers {
		for _, sh := range a.GetShards() {
			if sh.GetId() == shard && sh.GetLeader() != 0 && sh.GetLeader() != r.cfg.Self && sh.GetTerm() >= term {
				leader, term = sh.GetLeader(), sh.GetTerm()
			}
		}
	}
	return leader
}

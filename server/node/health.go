package node

import (
	"errors"
	"fmt"
	"slices"

	"github.com/quorumq/quorumq/raftnode"

	"github.com/quorumq/quorumq/server/router"
)

// maxApplyLag is how far this node's applied index may trail the commit
// index it knows while /readyz still answers ready.
const maxApplyLag = 1000

// Ready reports whether the node can serve (nil) or why not: every group
// must run (not halted), know a leader and have applied what it knows is
// committed, up to maxApplyLag entries. /readyz answers it; /healthz only
// says the process is alive.
func (n *Node) Ready() error {
	if n.remote != nil { // an API-tier node serves once it knows the leaders
		c := n.remote.Cluster()
		if c == nil {
			return fmt.Errorf("no storage node has answered yet")
		}
		for _, sh := range c.GetShards() {
			if sh.GetLeader() == 0 {
				return fmt.Errorf("shard %d has no leader", sh.GetId())
			}
		}
		return nil
	}
	for _, g := range n.hostedGroups() {
		st, err := n.host.Status(g)
		if err != nil {
			return fmt.Errorf("shard %d: %w", g, err)
		}
		if st.LeaderID == 0 {
			return fmt.Errorf("shard %d has no leader", g)
		}
		if st.Commit > st.Applied+maxApplyLag {
			return fmt.Errorf("shard %d is catching up: applied %d of %d committed", g, st.Applied, st.Commit)
		}
	}
	return nil
}

// groups are the Raft groups this node serves.
// hostedGroups are the shards whose leader readiness waits for: those this
// node holds a replica of in their applied configuration, and those whose
// configuration it has not applied yet but will be in (the groups it
// bootstrapped, and the metadata shard, which every node observes). A
// replica set smaller than the cluster leaves the others to other nodes.
func (n *Node) hostedGroups() []uint64 {
	var out []uint64
	for _, g := range n.groups() {
		st, err := n.host.Status(g)
		switch {
		case errors.Is(err, raftnode.ErrGroupNotFound):
		case err != nil, slices.Contains(st.Members, n.cfg.NodeID):
			out = append(out, g)
		case len(st.Members) == 0 && (g == router.MetadataShard || n.booted[g]):
			out = append(out, g)
		}
	}
	return out
}

func (n *Node) groups() []uint64 {
	ids := make([]uint64, n.shardCount())
	for i := range ids {
		ids[i] = uint64(i)
	}
	return ids
}

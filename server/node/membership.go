package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/internal/keys"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Membership (issue 17, first slice). The records (nodes, replica sets)
// live in the metadata shard. Every storage node, every interval:
//
//  1. reads the records of its metadata replica: learns new nodes' peer
//     addresses (raft transport, forwarder, GetCluster) and pins their
//     incarnations (raftnode fences any other);
//  2. if it leads the metadata shard (the coordinator): records the
//     bootstrap nodes once, fills in incarnations it learnt, and for the
//     first joining node records, per shard, the change to make (one per
//     shard at a time) and clears it once raft applied it; a node that
//     votes in every shard becomes active;
//  3. for every shard it leads, carries out the recorded change: the new
//     node as a learner, then, once it caught up, as a voter; or the
//     removal of a draining node (handing leadership over first if it is
//     this node). A removed node ends REMOVED.
//
// Everything is derived again from the records and raft's configuration
// each pass, so a new coordinator or shard leader resumes a change half
// done. Placement stays "every shard on every node" in this slice: a
// joining node is added to every shard.

// membershipEvery is the default pass interval.
const membershipEvery = 500 * time.Millisecond

// catchUpLag is how far behind the leader's applied index a learner may be
// and still be promoted (it then catches up from the log while voting).
const catchUpLag = 64

func (n *Node) runMembership(ctx context.Context) {
	every := n.cfg.MembershipInterval
	if every <= 0 {
		every = membershipEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for first := true; ; first = false {
		if !first { // the first pass at once: a new cluster records its nodes early
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		if err := n.membershipOnce(ctx); err != nil && ctx.Err() == nil {
			n.log.Debug("membership pass", "err", err)
		}
	}
}

func (n *Node) membershipOnce(ctx context.Context) error {
	meta := n.stores[server.MetadataShard]
	recs, err := meta.Nodes()
	if err != nil {
		return err
	}
	n.learnPeers(recs)
	if st, err := n.host.Status(server.MetadataShard); err == nil && st.IsLeader {
		if err := n.coordinate(ctx, recs); err != nil {
			return fmt.Errorf("coordinate: %w", err)
		}
	}
	return n.executeChanges(ctx)
}

// learnPeers applies the node records to this node's address books and
// incarnation pins.
func (n *Node) learnPeers(recs []*storepb.NodeRecord) {
	if len(recs) == 0 {
		return
	}
	peers := map[uint64]string{}
	for _, r := range recs {
		if r.GetState() == storepb.NodeState_NODE_STATE_REMOVED {
			continue
		}
		peers[r.GetId()] = r.GetPeerAddr()
		if r.GetId() == n.cfg.NodeID {
			continue
		}
		if n.tr != nil && r.GetPeerAddr() != "" {
			n.tr.SetPeer(r.GetId(), r.GetPeerAddr())
		}
		if n.fwd != nil && r.GetPeerAddr() != "" {
			n.fwd.SetPeer(r.GetId(), r.GetPeerAddr())
		}
		if err := n.host.PinPeer(r.GetId(), r.GetIncarnation()); err != nil {
			n.log.Warn("membership record and first contact disagree on a node's incarnation", "peer", r.GetId(), "err", err)
		}
	}
	if n.cluster != nil {
		n.cluster.SetPeers(peers)
	}
}

// coordinate is the metadata leader's part of a pass.
func (n *Node) coordinate(ctx context.Context, recs []*storepb.NodeRecord) error {
	meta := n.srvs[server.MetadataShard]
	propose := func(cmd *storepb.Command) error {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := meta.ProposeMembership(pctx, cmd)
		return err
	}
	if len(recs) == 0 {
		if n.joined {
			return nil // a joined node never bootstraps; the records will arrive
		}
		boot := &storepb.BootstrapMembership{Shards: uint32(n.cfg.Shards), ReplicationFactor: defaultReplicationFactor}
		for _, id := range n.members() {
			rec := &storepb.NodeRecord{Id: id, PeerAddr: n.cfg.Peers[id]}
			if id == n.cfg.NodeID {
				rec.ClientAddr, rec.Incarnation = n.clientAddr(), n.host.Incarnation()
			}
			boot.Nodes = append(boot.Nodes, rec)
		}
		n.log.Info("membership: recording the bootstrap nodes", "nodes", n.members(), "shards", n.cfg.Shards)
		return propose(&storepb.Command{Op: &storepb.Command_BootstrapMembership{BootstrapMembership: boot}})
	}
	var target *storepb.NodeRecord // a joining node first, else a draining one
	for _, r := range recs {
		if r.GetIncarnation() == 0 {
			inc := n.host.PinnedIncarnation(r.GetId())
			if r.GetId() == n.cfg.NodeID {
				inc = n.host.Incarnation()
			}
			if inc != 0 {
				reg := &storepb.NodeRecord{Id: r.GetId(), Incarnation: inc}
				if err := propose(&storepb.Command{Op: &storepb.Command_RegisterNode{RegisterNode: &storepb.RegisterNode{Node: reg}}}); err != nil {
					return err
				}
			}
		}
		if target == nil && r.GetState() == storepb.NodeState_NODE_STATE_JOINING {
			target = r
		}
	}
	for _, r := range recs {
		if target == nil && r.GetState() == storepb.NodeState_NODE_STATE_DRAINING {
			target = r
		}
	}
	if target == nil {
		return nil
	}
	sets, err := n.stores[server.MetadataShard].ReplicaSets()
	if err != nil {
		return err
	}
	j, add := target.GetId(), target.GetState() == storepb.NodeState_NODE_STATE_JOINING
	done := 0
	for _, rs := range sets {
		st, err := n.host.Status(rs.GetShard())
		if err != nil {
			return err
		}
		if p := rs.GetPending(); p != nil {
			// One change per shard: finish (record) the one under way first.
			if changeDone(st, p.GetNodeId(), p.GetAdd()) {
				rs.Pending, rs.Voters, rs.Learners = nil, st.Voters, st.Learners
				if err := propose(setReplicaSet(rs)); err != nil {
					return err
				}
				n.log.Info("membership: shard change done", "node", p.GetNodeId(), "add", p.GetAdd(), "shard", rs.GetShard(), "voters", st.Voters)
			}
			continue
		}
		if changeDone(st, j, add) {
			if !slices.Equal(rs.GetVoters(), st.Voters) || !slices.Equal(rs.GetLearners(), st.Learners) {
				rs.Voters, rs.Learners = st.Voters, st.Learners
				if err := propose(setReplicaSet(rs)); err != nil {
					return err
				}
			}
			done++
			continue
		}
		if !add && len(st.Voters) <= 1 {
			n.log.Warn("membership: not removing the last voter of a shard", "node", j, "shard", rs.GetShard())
			continue
		}
		n.log.Info("membership: changing a shard", "node", j, "add", add, "shard", rs.GetShard())
		rs.Pending = &storepb.ReplicaChange{NodeId: j, Add: add, StartedAtMs: time.Now().UnixMilli()}
		if err := propose(setReplicaSet(rs)); err != nil {
			return err
		}
	}
	if done < len(sets) || len(sets) == 0 {
		return nil
	}
	state := storepb.NodeState_NODE_STATE_ACTIVE
	if !add {
		state = storepb.NodeState_NODE_STATE_REMOVED
	}
	n.log.Info("membership: node changed in every shard", "node", j, "state", state.String())
	return propose(&storepb.Command{Op: &storepb.Command_SetNodeState{SetNodeState: &storepb.SetNodeState{NodeId: j, State: state}}})
}

// changeDone reports whether the applied configuration st has node j as a
// voter (add) or not at all (remove), outside a joint configuration.
func changeDone(st raftnode.GroupStatus, j uint64, add bool) bool {
	if st.Joint {
		return false
	}
	if add {
		return slices.Contains(st.Voters, j)
	}
	return !slices.Contains(st.Members, j)
}

func setReplicaSet(rs *storepb.ReplicaSetRecord) *storepb.Command {
	return &storepb.Command{Op: &storepb.Command_SetReplicaSet{SetReplicaSet: &storepb.SetReplicaSet{ReplicaSet: rs}}}
}

// defaultReplicationFactor is recorded with the initial placement (which
// still puts every shard on every node).
const defaultReplicationFactor = 3

// executeChanges carries out, on the shards this node leads, the change
// the coordinator recorded: a learner first, a voter once caught up.
func (n *Node) executeChanges(ctx context.Context) error {
	sets, err := n.stores[server.MetadataShard].ReplicaSets()
	if err != nil {
		return err
	}
	for _, rs := range sets {
		p := rs.GetPending()
		if p == nil {
			continue
		}
		g, x := rs.GetShard(), p.GetNodeId()
		st, err := n.host.Status(g)
		if err != nil || !st.IsLeader {
			continue
		}
		var change raftnode.MemberChange
		switch {
		case !p.GetAdd() && !slices.Contains(st.Members, x):
			continue // removed
		case !p.GetAdd() && x == n.cfg.NodeID:
			n.handOff(ctx, g, st) // a leader does not remove itself: the next leader does
			continue
		case !p.GetAdd():
			change = raftnode.MemberChange{Kind: raftnode.RemoveMember, ID: x}
		case !slices.Contains(st.Members, x):
			change = raftnode.MemberChange{Kind: raftnode.AddLearner, ID: x}
		case slices.Contains(st.Learners, x) && caughtUp(st, x):
			change = raftnode.MemberChange{Kind: raftnode.AddVoter, ID: x}
		default:
			continue // catching up, or done
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = n.host.ChangeMembers(cctx, g, change)
		cancel()
		if err != nil {
			n.log.Debug("membership change", "shard", g, "change", change.Kind.String(), "node", x, "err", err)
			continue
		}
		n.log.Info("membership change applied", "shard", g, "change", change.Kind.String(), "node", x)
	}
	return nil
}

// handOff transfers the leadership of group g to another voter that is
// replicating, before this node's replica is removed.
func (n *Node) handOff(ctx context.Context, g uint64, st raftnode.GroupStatus) {
	for _, p := range st.Peers {
		if p.ID == n.cfg.NodeID || !slices.Contains(st.Voters, p.ID) || !p.RecentActive || p.State != "StateReplicate" {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := n.host.TransferLeadership(tctx, g, p.ID)
		cancel()
		n.log.Info("membership: handing leadership over before this replica is removed", "shard", g, "to", p.ID, "err", err)
		return
	}
}

// caughtUp reports whether the leader's view of learner x is close to its
// own applied index.
func caughtUp(st raftnode.GroupStatus, x uint64) bool {
	for _, p := range st.Peers {
		if p.ID == x {
			return p.RecentActive && p.State == "StateReplicate" && p.Match+catchUpLag >= st.Applied
		}
	}
	return false
}

// clientAddr is this node's gRPC API address as other nodes see it.
func (n *Node) clientAddr() string {
	if n.grpcLn != nil {
		return n.grpcLn.Addr().String()
	}
	return n.cfg.GRPCAddr
}

// joinCluster is the start of a node run with --join: on first start it
// asks the cluster (any member's peer address) to admit it and records the
// node id it got; on later starts it reads it back. It sets cfg's node id,
// peers and shard count, and leaves the DB open in n.db.
func (n *Node) joinCluster(ctx context.Context, cfg *Config) error {
	if err := n.openDB(*cfg); err != nil {
		return err
	}
	inc, err := raftnode.LoadIncarnation(n.db)
	if err != nil {
		return err
	}
	if id, ok, err := readUint64(n.db, keys.NodeJoinedID()); err != nil {
		return err
	} else if ok {
		return n.rejoin(cfg, id)
	}
	conn, err := grpc.NewClient(cfg.Join, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("--join %s: %w", cfg.Join, err)
	}
	defer conn.Close()
	client := qv1.NewClusterServiceClient(conn)
	req := &qv1.JoinClusterRequest{PeerAddress: cfg.RaftAddr, ClientAddress: cfg.GRPCAddr, Incarnation: inc}
	var resp *qv1.JoinClusterResponse
	jctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		cctx, ccancel := context.WithTimeout(jctx, 5*time.Second)
		resp, err = client.JoinCluster(cctx, req)
		ccancel()
		if err == nil {
			break
		}
		n.log.Info("join: cluster not reached yet", "join", cfg.Join, "err", err)
		select {
		case <-jctx.Done():
			return fmt.Errorf("--join %s: %w (last error: %w)", cfg.Join, jctx.Err(), err)
		case <-time.After(backoff):
		}
	}
	id := resp.GetNode().GetId()
	if id == 0 || resp.GetShards() == 0 {
		return fmt.Errorf("--join %s: admitted without a node id or shard count", cfg.Join)
	}
	if err := checkShardCount(n.db, int(resp.GetShards())); err != nil {
		return err
	}
	if err := n.db.Set(keys.NodeJoinedID(), binary.BigEndian.AppendUint64(nil, id), pebble.Sync); err != nil {
		return fmt.Errorf("record node id: %w", err)
	}
	peers := map[uint64]string{}
	for _, m := range resp.GetNodes() {
		peers[m.GetId()] = m.GetPeerAddress()
	}
	peers[id] = cfg.RaftAddr
	cfg.NodeID, cfg.Peers, cfg.Shards = id, peers, int(resp.GetShards())
	n.joined = true
	n.log.Info("joined the cluster", "node", id, "incarnation", inc, "shards", cfg.Shards, "nodes", len(peers))
	return nil
}

// joinTimeout bounds how long a joining node tries to reach the cluster.
const joinTimeout = 2 * time.Minute

// rejoin restarts a node that joined earlier: its id, shard count and the
// peers come from its own data (the metadata replica's records).
func (n *Node) rejoin(cfg *Config, id uint64) error {
	shards, ok, err := readUint64(n.db, keys.NodeShardCount())
	if err != nil || !ok {
		return fmt.Errorf("joined node without a shard count: %v", err)
	}
	recs, err := storeNodes(n.db)
	if err != nil {
		return err
	}
	peers := map[uint64]string{id: cfg.RaftAddr}
	for _, r := range recs {
		if r.GetState() != storepb.NodeState_NODE_STATE_REMOVED && r.GetId() != id {
			peers[r.GetId()] = r.GetPeerAddr()
		}
	}
	cfg.NodeID, cfg.Peers, cfg.Shards = id, peers, int(shards)
	n.joined = true
	return nil
}

func readUint64(db *pebble.DB, k []byte) (uint64, bool, error) {
	v, closer, err := db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, false, fmt.Errorf("%s: %d bytes, want 8", keys.Pretty(k), len(v))
	}
	return binary.BigEndian.Uint64(v), true, nil
}

// checkJoin refuses what --join does not support yet.
func (n *Node) checkJoin(cfg Config) error {
	switch {
	case cfg.Role == "api":
		return errors.New("--join is for storage nodes (an API node routes to --peers)")
	case len(cfg.Peers) > 0:
		return errors.New("--join and --peers exclude each other: a joining node learns the members from the cluster")
	case cfg.TLS.PeerCertFile != "" || cfg.Authenticator != nil:
		return errors.New("--join does not work with peer TLS or client authentication yet (the admission call needs them)")
	}
	return nil
}

// storeNodes reads the node records of the local metadata replica.
func storeNodes(db *pebble.DB) ([]*storepb.NodeRecord, error) {
	return store.New(db, server.MetadataShard).Nodes()
}

// NodeID is the node's id (with Config.Join: the one the cluster gave it).
func (n *Node) NodeID() uint64 { return n.cfg.NodeID }

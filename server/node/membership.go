package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/internal/keys"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Membership (issue 17). The records (nodes, replica sets) live in the
// metadata shard. Every storage node, every interval:
//
//  1. reads the records of its metadata replica: learns new nodes' peer
//     addresses (raft transport, forwarder, GetCluster, the view of the
//     other nodes' shards) and pins their incarnations (raftnode fences
//     any other); records its own client address if its record has
//     another;
//  2. starts the replicas the records now name it for, and drops those of
//     shards it has left (hosting.go);
//  3. if it leads the metadata shard (the coordinator, membership_plan.go):
//     records the bootstrap nodes once, fills in incarnations it learnt,
//     records the end of each shard's change once raft applied it (or its
//     rollback if it stalled), and plans the next changes: a joining node
//     never heard from within the move timeout of observing the metadata
//     shard drained (an admission whose node never started), every node an
//     observer of the metadata shard (active once heard from), every shard
//     back to its replication
//     factor (a replica added when short, one removed when above),
//     draining nodes' replicas moved away, replicas spread evenly
//     (one copy at a time in the cluster);
//  4. for every shard it leads, carries out the recorded change.
//
// Everything is derived again from the records and raft's configuration
// each pass, so a new coordinator or shard leader resumes a change half
// done.

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
	meta := n.metaStore()
	if err := n.learnLayout(meta); err != nil {
		return err
	}
	recs, err := meta.Nodes()
	if err != nil {
		return err
	}
	sets, err := meta.ReplicaSets()
	if err != nil {
		return err
	}
	n.learnPeers(recs)
	n.recordOwnAddress(ctx, recs)
	n.hostNamed(sets)
	n.dropRemoved(ctx, sets)
	if st, err := n.host.Status(router.MetadataShard); err == nil && st.IsLeader {
		if err := n.coordinate(ctx, recs, sets); err != nil {
			return fmt.Errorf("coordinate: %w", err)
		}
	}
	n.executeChanges(ctx, sets)
	return nil
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
	if n.others != nil {
		var others []uint64
		for id := range peers {
			if id != n.cfg.NodeID {
				others = append(others, id)
			}
		}
		slices.Sort(others)
		n.others.SetNodes(others)
	}
}

// recordOwnAddress records this node's client address in its node record
// when the record has another one (none: the bootstrap records only its
// writer's; or the node moved), through the metadata shard's leader.
func (n *Node) recordOwnAddress(ctx context.Context, recs []*storepb.NodeRecord) {
	addr := n.clientAddr()
	i := slices.IndexFunc(recs, func(r *storepb.NodeRecord) bool { return r.GetId() == n.cfg.NodeID })
	if n.router == nil || addr == "" || i < 0 {
		return // not recorded yet
	}
	if r := recs[i]; r.GetState() == storepb.NodeState_NODE_STATE_REMOVED || r.GetClientAddr() == addr {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := n.router.RecordNodeAddress(rctx, n.cfg.NodeID, n.host.Incarnation(), addr); err != nil {
		n.log.Debug("membership: recording this node's client address", "addr", addr, "err", err)
		return
	}
	n.log.Info("membership: recorded this node's client address", "addr", addr)
}

// clientAddr is this node's gRPC API address as other nodes see it (""
// until it listens: the membership loop starts first, and records it on a
// later pass).
func (n *Node) clientAddr() string {
	if a := n.listenAddr.Load(); a != nil {
		return *a
	}
	return ""
}

// advertisedAddr is the client address a node records for itself: the
// configured --grpc-addr when it names a host (a name clients can reach,
// not the listener's resolved address), with the port the listener got
// when it asked for port 0; the listener's address when it names none or
// an unspecified one (":7000", "0.0.0.0:7000").
func advertisedAddr(configured, listening string) string {
	host, port, err := net.SplitHostPort(configured)
	if err != nil || host == "" {
		return listening
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return listening
	}
	if port == "0" || port == "" {
		if _, lp, err := net.SplitHostPort(listening); err == nil {
			port = lp
		}
	}
	return net.JoinHostPort(host, port)
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
	if err := checkShardCount(n.db, int(resp.GetShards()), 0); err != nil {
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
	recs, err := storeNodes(n.sdb)
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
	return store.New(db, router.MetadataShard).Nodes()
}

// NodeID is the node's id (with Config.Join: the one the cluster gave it).
func (n *Node) NodeID() uint64 { return n.cfg.NodeID }

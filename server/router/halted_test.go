package router_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/node"
	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/server/shardserver"
)

// haltedRaft is a node's replica of shard 0 that halted after a storage
// failure: Status gives its last view (itself as leader) and ErrHalted.
type haltedRaft struct{ self uint64 }

func (h haltedRaft) err() error {
	return fmt.Errorf("%w: group 0: write raft log: disk", raftnode.ErrHalted)
}

func (h haltedRaft) Propose(context.Context, uint64, []byte) (any, error) { return nil, h.err() }
func (h haltedRaft) ReadIndex(context.Context, uint64) error              { return h.err() }
func (h haltedRaft) Status(uint64) (raftnode.GroupStatus, error) {
	return raftnode.GroupStatus{LeaderID: h.self, IsLeader: true}, h.err()
}
func (h haltedRaft) WaitLeader(context.Context, uint64) (uint64, error) { return 0, h.err() }

// Issue 15.15: a node whose replica of a shard halted routes calls for
// that shard to the leader the other nodes elected (it answered NOT_LEADER
// without a hint, and retried itself), and a call forwarded to it is
// answered NOT_LEADER naming that leader.
func TestHaltedReplicaRoutesToHealthyLeader(t *testing.T) {
	var peers map[uint64]string
	c := startMemCluster(t, 3, func(cfg *node.Config) { peers = cfg.Peers })
	if _, err := c.Clients[1].CreateQueue(tctx(t), &qv1.CreateQueueRequest{Name: "h"}); err != nil {
		t.Fatal(err)
	}
	leader := c.Leader(t, 1, 2, 3)

	// Node 4 hosts a replica of shard 0 that halted; it reaches nodes 1-3
	// through their peer addresses.
	const self = 4
	all := map[uint64]string{self: "127.0.0.1:1"} // never dialled
	for id, a := range peers {
		all[id] = a
	}
	halted := haltedRaft{self: self}
	fwd := router.NewForwarder(self, all)
	t.Cleanup(fwd.Close)
	r := router.NewRouter(router.RouterConfig{Self: self, Shards: 1, Forwarder: fwd, Timeout: 5 * time.Second,
		Local: map[uint64]*shardserver.Server{0: shardserver.New(shardserver.Config{}, halted, nil, 0)},
		View:  router.LocalView{Raft: halted, Timeout: time.Second}})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(server.UnaryInterceptor(server.DevAuthenticator{}, logger)))
	qv1.RegisterQueueServiceServer(gs, r)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	cl := qv1.NewQueueServiceClient(conn)

	start := time.Now()
	sent, err := cl.SendMessage(tctx(t), &qv1.SendMessageRequest{Queue: "h", Body: "via the healthy leader"})
	if err != nil {
		t.Fatalf("send through the node with the halted replica: %v", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("the send took %v: it waited instead of forwarding", el)
	}
	got, err := c.Clients[leader].ReceiveMessages(tctx(t), &qv1.ReceiveMessagesRequest{Queue: "h"})
	if err != nil || len(got.GetMessages()) != 1 || got.GetMessages()[0].GetMessageId() != sent.GetMessageId() {
		t.Fatalf("the leader has %v (%v), want the message sent", got.GetMessages(), err)
	}

	// A call routed to shard 0 of this node (as another node forwards it).
	ctx := metadata.AppendToOutgoingContext(tctx(t), "x-quorumq-shard", "0")
	_, err = cl.GetQueue(ctx, &qv1.GetQueueRequest{Name: "h"})
	code, reason, meta := reasonOf(err)
	if code != codes.Unavailable || reason != server.ReasonNotLeader || meta["leader"] != fmt.Sprint(leader) {
		t.Fatalf("routed call to the halted replica: %v (meta %v), want NOT_LEADER naming node %d", err, meta, leader)
	}
}

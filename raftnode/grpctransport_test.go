package raftnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	transportpb "github.com/quorumq/quorumq/raftnode/transportpb/v1"
)

// testNodeHeader stands in for a peer certificate in these tests: the
// node's PeerID hook reads the sender's identity from it.
const testNodeHeader = "x-test-node"

func testPeerID(ctx context.Context) (uint64, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(testNodeHeader); len(v) == 1 {
		return strconv.ParseUint(v[0], 10, 64)
	}
	return 0, errors.New("no identity")
}

// testIdentity makes every stream of a client present node id.
func testIdentity(id uint64) grpc.DialOption {
	return grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(metadata.AppendToOutgoingContext(ctx, testNodeHeader, fmt.Sprint(id)), desc, cc, method, opts...)
	})
}

// grpcNode is a host whose peers talk to it over real gRPC.
type grpcNode struct {
	*testNode
	addr  string
	tr    *GRPCTransport
	srv   *grpc.Server
	serve sync.WaitGroup
}

type grpcCluster struct {
	t     *testing.T
	addrs map[uint64]string
	nodes map[uint64]*grpcNode
	opts  nodeOpts
}

func newGRPCCluster(t *testing.T, size int, logRetain uint64, groups ...uint64) *grpcCluster {
	c := &grpcCluster{t: t, addrs: make(map[uint64]string), nodes: make(map[uint64]*grpcNode)}
	c.opts.groups, c.opts.logRetain, c.opts.tick = groups, logRetain, 20*time.Millisecond
	lis := make(map[uint64]net.Listener)
	for id := uint64(1); id <= uint64(size); id++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis[id], c.addrs[id] = l, l.Addr().String()
		c.opts.peers = append(c.opts.peers, id)
	}
	for id, l := range lis {
		c.start(id, vfs.NewMem(), l)
	}
	t.Cleanup(func() {
		for id := range c.nodes {
			c.stop(id)
		}
	})
	return c
}

// start starts node id on fs, serving peers on l (nil: listen on its
// address again, as after a restart).
func (c *grpcCluster) start(id uint64, fs vfs.FS, l net.Listener) {
	c.t.Helper()
	if l == nil {
		var err error
		if l, err = net.Listen("tcp", c.addrs[id]); err != nil {
			c.t.Fatal(err)
		}
	}
	tr := NewGRPCTransport(TransportConfig{NodeID: id, Peers: c.addrs, Logger: testLogger(c.t),
		PeerID: testPeerID, DialOptions: []grpc.DialOption{testIdentity(id)}})
	o := c.opts
	o.transport = tr
	n := &grpcNode{testNode: startNode(c.t, id, fs, o), addr: c.addrs[id], tr: tr, srv: grpc.NewServer(grpc.MaxRecvMsgSize(16 << 20))}
	tr.Attach(n.host)
	tr.Register(n.srv)
	n.serve.Go(func() { _ = n.srv.Serve(l) })
	c.nodes[id] = n
}

// stop stops node id (host, transport, server, DB) and returns its FS.
func (c *grpcCluster) stop(id uint64) vfs.FS {
	c.t.Helper()
	n := c.nodes[id]
	n.srv.Stop()
	n.serve.Wait()
	n.tr.Close()
	n.testNode.stop(c.t)
	delete(c.nodes, id)
	return n.fs
}

func (c *grpcCluster) leader(group uint64) *grpcNode {
	c.t.Helper()
	var lead *grpcNode
	checkFor(c.t, 15*time.Second, func() error {
		var want uint64
		for id, n := range c.nodes {
			st, err := n.host.Status(group)
			if err != nil {
				return err
			}
			if st.LeaderID == 0 || (want != 0 && st.LeaderID != want) {
				return fmt.Errorf("node %d sees leader %d, others %d", id, st.LeaderID, want)
			}
			want = st.LeaderID
		}
		lead = c.nodes[want]
		if lead == nil {
			return fmt.Errorf("leader %d is not running", want)
		}
		if st, _ := lead.host.Status(group); !st.IsLeader {
			return fmt.Errorf("node %d does not know it leads", want)
		}
		return nil
	})
	return lead
}

func (c *grpcCluster) follower(lead *grpcNode) *grpcNode {
	for id, n := range c.nodes {
		if id != lead.id {
			return n
		}
	}
	c.t.Fatal("no follower")
	return nil
}

func (c *grpcCluster) converged(group uint64) {
	c.t.Helper()
	checkFor(c.t, 30*time.Second, func() error {
		var ref stateSum
		var refID uint64
		for id, n := range c.nodes {
			sum, err := stateHash(n.sdb, group)
			if err != nil {
				return err
			}
			if refID == 0 {
				ref, refID = sum, id
			} else if sum != ref {
				return fmt.Errorf("node %d and node %d differ: %+v vs %+v", refID, id, ref, sum)
			}
		}
		return nil
	})
}

// TestGRPCTransport runs three hosts over gRPC on loopback: election,
// proposals, a follower restart (reconnect), and a follower that was down
// while the log was truncated past it (snapshot over gRPC).
func TestGRPCTransport(t *testing.T) {
	const g = 1
	c := newGRPCCluster(t, 3, 10, g)
	lead := c.leader(g)
	checkResults(t, proposeAll(t, lead.host, g, "a", 50))
	c.converged(g)
	checkFor(t, 10*time.Second, func() error {
		for id, ps := range lead.tr.PeerStatus() {
			if !ps.Connected || ps.LastContact.IsZero() || ps.Addr != c.addrs[id] {
				return fmt.Errorf("leader's view of peer %d: %+v", id, ps)
			}
		}
		return nil
	})

	// A follower restarts on the same address: streams reconnect.
	f := c.follower(lead)
	fs := c.stop(f.id)
	checkResults(t, proposeAll(t, lead.host, g, "b", 20)) // the other two commit
	c.start(f.id, fs, nil)
	lead = c.leader(g)
	checkResults(t, proposeAll(t, lead.host, g, "c", 20))
	c.converged(g)
	checkNoDoubleApplyNodes(t, c, g)

	// A follower is down while the log is truncated far past it: it comes
	// back through a snapshot streamed over gRPC.
	f = c.follower(lead)
	fSt, _ := f.host.Status(g)
	fs = c.stop(f.id)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		st, err := lead.host.Status(g)
		if err != nil {
			t.Fatal(err)
		}
		if st.FirstIndex > fSt.LastIndex+30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leader did not truncate: %+v", st)
		}
		checkResults(t, proposeAll(t, lead.host, g, fmt.Sprint("d", i), 20))
	}
	// Count every node's sends: leadership may move while the follower is
	// away, and the snapshot then comes from the new leader.
	sentByAll := func() (n uint64) {
		for _, nd := range c.nodes {
			if nd.host != nil {
				n += nd.host.SnapshotsSent()
			}
		}
		return n
	}
	sent := sentByAll()
	c.start(f.id, fs, nil)
	f = c.nodes[f.id]
	c.converged(g)
	checkFor(t, 10*time.Second, func() error {
		if f.host.SnapshotsApplied() == 0 {
			return errors.New("follower caught up without a snapshot")
		}
		return nil
	})
	// The sender counts a snapshot once the receiver has answered, which
	// can come a moment after the receiver applied it.
	checkFor(t, 10*time.Second, func() error {
		if sentByAll() == sent {
			return errors.New("no node counted a sent snapshot")
		}
		return nil
	})
	lead = c.leader(g)
	checkResults(t, proposeAll(t, lead.host, g, "e", 20))
	c.converged(g)
}

func checkNoDoubleApplyNodes(t *testing.T, c *grpcCluster, group uint64) {
	t.Helper()
	for id, n := range c.nodes {
		for idx, k := range counts(t, n.sdb, group) {
			if k != 1 {
				t.Fatalf("node %d applied entry %d %d times", id, idx, k)
			}
		}
	}
}

// TestGRPCTransportSendNeverBlocks checks that Send to a peer that does not
// answer returns at once and that Close stops everything.
//
// The peer accepts connections and never speaks: a dial hangs until gRPC's
// connect timeout and the queue is only dropped after it, so a Send that
// waited for room in the full queue would wait for that each time (8.7 s
// for the ten below, measured with such a Send). One that never blocks
// only spends CPU on its 41,000 messages, up to a second under -race on a
// loaded machine: a bound of 1 s on the total measured that load.
func TestGRPCTransportSendNeverBlocks(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		connMu sync.Mutex
		conns  []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return // closed by the cleanup
			}
			connMu.Lock()
			conns = append(conns, c)
			connMu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		connMu.Lock()
		defer connMu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	addr := l.Addr().String()
	tr := NewGRPCTransport(TransportConfig{NodeID: 1, Peers: map[uint64]string{1: "self", 2: addr}, Logger: testLogger(t)})
	env := make([]Envelope, maxPeerQueue+10)
	for i := range env {
		env[i] = Envelope{Group: 1, Msg: heartbeat(1, 2)}
	}
	start := time.Now()
	for range 10 {
		tr.Send(env)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Send blocked for %v", d)
	}
	t.Logf("10 Sends of %d messages to a silent peer took %v", len(env), time.Since(start))
	checkFor(t, 10*time.Second, func() error {
		if ps := tr.PeerStatus()[2]; ps.Connected || ps.Addr != addr {
			return fmt.Errorf("peer 2: %+v", ps)
		}
		return nil
	})
	if _, ok := tr.PeerStatus()[1]; ok {
		t.Fatal("self listed as a peer")
	}
	tr.Close()
	tr.Close()
	tr.Send(env) // after Close: dropped, no panic
}

func heartbeat(from, to uint64) *pb.Message {
	t := pb.MsgHeartbeat
	return &pb.Message{Type: &t, From: proto.Uint64(from), To: proto.Uint64(to), Term: proto.Uint64(1)}
}

// TestGRPCTransportRejectsImpostors: a stream authenticated as node 2 cannot
// speak as node 1 (refused), nor carry a message whose From is another
// node; a node outside the group and a stream without an identity are
// refused too. Only the honest heartbeat moves node 1's term.
func TestGRPCTransportRejectsImpostors(t *testing.T) {
	const g = 1
	n, tr, client := startLoneMember(t, g)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// send sends one batch as identity `as` (0: none) of incarnation
	// 100+fromNode (sendInc: inc) and waits for the handler to finish
	// with it.
	var sendInc func(as, fromNode, inc uint64, msgs ...*pb.Message) error
	send := func(as, fromNode uint64, msgs ...*pb.Message) error {
		return sendInc(as, fromNode, 100+fromNode, msgs...)
	}
	sendInc = func(as, fromNode, inc uint64, msgs ...*pb.Message) error {
		sctx := ctx
		if as != 0 {
			sctx = metadata.AppendToOutgoingContext(ctx, testNodeHeader, fmt.Sprint(as))
		}
		s, err := client.Stream(sctx)
		if err != nil {
			return err
		}
		req := &transportpb.StreamRequest{FromNode: fromNode, FromIncarnation: inc}
		for _, m := range msgs {
			b, _ := proto.Marshal(m)
			req.Messages = append(req.Messages, &transportpb.RaftMessage{Group: g, Message: b})
		}
		if err := s.Send(req); err != nil {
			_, err = s.CloseAndRecv()
			return err
		}
		_, err = s.CloseAndRecv()
		return err
	}
	hb := func(from, term uint64) *pb.Message {
		m := heartbeat(from, 1)
		m.Term = proto.Uint64(term)
		return m
	}
	if err := send(2, 1, hb(1, 9)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("node 2 speaking as node 1: %v, want PermissionDenied", err)
	}
	if err := send(0, 2, hb(2, 9)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("stream without identity: %v, want PermissionDenied", err)
	}
	if err := send(2, 2, hb(3, 9)); err != nil { // dropped, not refused
		t.Fatalf("batch with a forged Msg.From: %v", err)
	}
	if err := send(4, 4, hb(4, 9)); err != nil {
		t.Fatalf("non-member batch: %v", err)
	}
	if got := tr.Rejected(); got != 3 {
		t.Fatalf("Rejected() = %d, want 3", got)
	}
	// A snapshot header claiming another node, or from a non-member, is refused.
	snap := func(as, fromNode uint64) error {
		s, err := client.Snapshot(metadata.AppendToOutgoingContext(ctx, testNodeHeader, fmt.Sprint(as)))
		if err != nil {
			return err
		}
		mt := pb.MsgSnap
		b, _ := proto.Marshal(&pb.Message{Type: &mt, From: proto.Uint64(fromNode), To: proto.Uint64(1), Term: proto.Uint64(9)})
		_ = s.Send(&transportpb.SnapshotRequest{Kind: &transportpb.SnapshotRequest_Header{Header: &transportpb.SnapshotHeader{FromNode: fromNode, FromIncarnation: 100 + fromNode, Group: g, Message: b}}})
		_, err = s.CloseAndRecv()
		return err
	}
	if err := snap(2, 1); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("snapshot from node 2 as node 1: %v, want PermissionDenied", err)
	}
	if err := snap(4, 4); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("snapshot from non-member: %v, want PermissionDenied", err)
	}
	// The honest heartbeat of member 2 (a lower term than the forgeries)
	// is stepped: node 1 follows 2 at term 7, so none of term 9 got in.
	if err := send(2, 2, hb(2, 7)); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, func() error {
		st, err := n.host.Status(g)
		if err != nil {
			return err
		}
		if st.Term != 7 || st.LeaderID != 2 {
			return fmt.Errorf("node 1: term %d leader %d, want term 7 leader 2", st.Term, st.LeaderID)
		}
		return nil
	})
	if got := tr.Rejected(); got != 5 {
		t.Fatalf("Rejected() = %d, want 5", got)
	}
	// Another incarnation of node 2 (its disk wiped) is fenced, and so is
	// a batch without one.
	if err := sendInc(2, 2, 999, hb(2, 9)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("another incarnation of node 2: %v, want FailedPrecondition", err)
	}
	if err := sendInc(2, 2, 0, hb(2, 9)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a batch without incarnation: %v, want FailedPrecondition", err)
	}
	if st, _ := n.host.Status(g); st.Term != 7 || tr.Rejected() != 7 || n.host.Fenced() != 2 {
		t.Fatalf("after fenced batches: term %d, Rejected %d, Fenced %d; want 7, 7, 2", st.Term, tr.Rejected(), n.host.Fenced())
	}
}

// batchRecorder is a peer's transport service that records the size of
// each batch it receives.
type batchRecorder struct {
	transportpb.UnimplementedRaftTransportServiceServer
	mu      sync.Mutex
	batches []int
}

func (r *batchRecorder) Stream(s grpc.ClientStreamingServer[transportpb.StreamRequest, transportpb.StreamResponse]) error {
	for {
		req, err := s.Recv()
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.batches = append(r.batches, len(req.GetMessages()))
		r.mu.Unlock()
	}
}

func (r *batchRecorder) got() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.batches)
}

// TestGRPCTransportOneBatchPerSend: the messages of one Send to a peer,
// mixed with messages to other peers, leave in one batch (one write), and
// Sent counts messages and batches.
func TestGRPCTransportOneBatchPerSend(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &batchRecorder{}
	srv := grpc.NewServer()
	transportpb.RegisterRaftTransportServiceServer(srv, rec)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	tr := NewGRPCTransport(TransportConfig{NodeID: 1, Peers: map[uint64]string{2: l.Addr().String(), 3: "127.0.0.1:1"}, Logger: testLogger(t)})
	t.Cleanup(tr.Close)
	tr.Send([]Envelope{{Group: 1, Msg: heartbeat(1, 2)}}) // opens the stream
	checkFor(t, 10*time.Second, func() error {
		if len(rec.got()) != 1 {
			return errors.New("first batch not received")
		}
		return nil
	})
	for round := range 20 {
		var env []Envelope
		for i := range 200 {
			env = append(env, Envelope{Group: uint64(1 + i%7), Msg: heartbeat(1, uint64(2+i%2))})
		}
		tr.Send(env)
		checkFor(t, 10*time.Second, func() error {
			if got := rec.got(); len(got) != 2+round || got[1+round] != 100 {
				return fmt.Errorf("batches %v, want one more of 100", got)
			}
			return nil
		})
	}
	if msgs, batches := tr.Sent(); msgs != 1+20*100 || batches != 21 {
		t.Fatalf("Sent() = %d messages in %d batches, want %d in 21", msgs, batches, 1+20*100)
	}
}

// TestGRPCTransportHearsRecordedMembers: a replica added back to a group
// it left keeps its old configuration, which may not name the group's
// current leader; once the cluster's records name that leader a member
// (RecordMembers), its messages are stepped.
func TestGRPCTransportHearsRecordedMembers(t *testing.T) {
	const g = 1
	n, tr, client := startLoneMember(t, g)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	heartbeatFrom4 := func() {
		t.Helper()
		s, err := client.Stream(metadata.AppendToOutgoingContext(ctx, testNodeHeader, "4"))
		if err != nil {
			t.Fatal(err)
		}
		m := heartbeat(4, 1)
		m.Term = proto.Uint64(5)
		b, _ := proto.Marshal(m)
		if err := s.Send(&transportpb.StreamRequest{FromNode: 4, FromIncarnation: 104,
			Messages: []*transportpb.RaftMessage{{Group: g, Message: b}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CloseAndRecv(); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 10*time.Second, func() error { // a replica without members yet hears from anyone
		if st, err := n.host.Status(g); err != nil || len(st.Members) == 0 {
			return fmt.Errorf("node 1 has no configuration yet (%v)", err)
		}
		return nil
	})
	heartbeatFrom4()
	if got := tr.Rejected(); got != 1 {
		t.Fatalf("node 4 not in the configuration nor the records: Rejected() = %d, want 1", got)
	}
	n.host.RecordMembers(g, []uint64{1, 4, 5})
	heartbeatFrom4()
	checkFor(t, 10*time.Second, func() error {
		st, err := n.host.Status(g)
		if err != nil {
			return err
		}
		if st.Term != 5 || st.LeaderID != 4 {
			return fmt.Errorf("node 1: term %d leader %d, want term 5 leader 4", st.Term, st.LeaderID)
		}
		return nil
	})
	if got := tr.Rejected(); got != 1 {
		t.Fatalf("after RecordMembers: Rejected() = %d, want 1", got)
	}
}

// startLoneMember starts node 1 of group g = {1, 2, 3} behind a gRPC
// transport with peer identities, whose other members never start: it
// stays a follower without a leader until someone heartbeats. The client
// speaks to its transport service (as any node: testNodeHeader).
func startLoneMember(t *testing.T, g uint64) (*testNode, *GRPCTransport, transportpb.RaftTransportServiceClient) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peers := map[uint64]string{1: l.Addr().String(), 2: "127.0.0.1:1", 3: "127.0.0.1:1", 4: "127.0.0.1:1"}
	tr := NewGRPCTransport(TransportConfig{NodeID: 1, Peers: peers, Logger: testLogger(t), PeerID: testPeerID})
	n := startNode(t, 1, vfs.NewMem(), nodeOpts{groups: []uint64{g}, peers: []uint64{1, 2, 3}, transport: tr, tick: time.Hour})
	srv := grpc.NewServer()
	tr.Attach(n.host)
	tr.Register(srv)
	var serve sync.WaitGroup
	serve.Go(func() { _ = srv.Serve(l) })
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(); srv.Stop(); serve.Wait(); tr.Close(); n.stop(t) })
	return n, tr, transportpb.NewRaftTransportServiceClient(conn)
}

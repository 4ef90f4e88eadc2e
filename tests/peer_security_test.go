package tests

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	transportpb "github.com/quorumq/quorumq/raftnode/transportpb/v1"
	"github.com/quorumq/quorumq/server/auth"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// writeSecret writes an HS256 secret file and returns it with a token of
// every scope for tenant "acme".
func writeSecret(t *testing.T, dir string) (file, token string) {
	t.Helper()
	secret := []byte("peer-security-test-secret-0123456789")
	file = filepath.Join(dir, "hs256.secret")
	if err := os.WriteFile(file, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	token, err := auth.Mint("HS256", secret, "", jwt.MapClaims{"tenant": "acme",
		"scope": "queues:admin messages:send messages:receive cluster:admin",
		"exp":   time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return file, token
}

// With client authentication configured, a clustered node without peer
// authentication refuses to start and names the flags; --insecure-peers
// starts it with a warning.
func TestServeRefusesAuthWithoutPeerTLS(t *testing.T) {
	secret, _ := writeSecret(t, t.TempDir())
	raft := freePort(t)
	flags := []string{"--raft-addr", raft, "--peers", "1=" + raft + ",2=" + freePort(t), "--auth-hs256-secret-file", secret}
	args := append([]string{"serve", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
		"--metrics-addr=", "--sqs-addr="}, flags...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, args...).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("serve with --auth-* and no peer TLS did not refuse to start (err %v):\n%s", err, out)
	}
	for _, want := range []string{"--peer-tls-cert-file", "--insecure-peers"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("refusal does not name %s:\n%s", want, out)
		}
	}
	p := startServe(t, t.TempDir(), append(flags, "--insecure-peers")...)
	if !strings.Contains(p.stderr.String(), "INSECURE PEERS") {
		t.Errorf("--insecure-peers started without a warning:\n%s", p.stderr.String())
	}
}

// peerSecurityCluster is three storage nodes with client auth (HS256) and
// peer mutual TLS.
type peerSecurityCluster struct {
	dir   string
	ca    *testCA
	token string
	raft  map[int]string
	procs map[int]*proc
}

func (c *peerSecurityCluster) ctx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
}

// peerConn dials a raft address presenting a certificate with the given
// URI SANs (nil: no client certificate at all).
func (c *peerSecurityCluster) peerConn(t *testing.T, addr, name string, uris []string) *grpc.ClientConn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(c.ca.cert)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if uris != nil {
		certFile, keyFile := c.ca.issue(t, c.dir, name, uris...)
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// shard0 is node id's view of shard 0.
func (c *peerSecurityCluster) shard0(t *testing.T, ctx context.Context, id int) (*qv1.ClusterShard, error) {
	r, err := qv1.NewClusterServiceClient(c.procs[id].grpcConn(t)).GetCluster(c.ctx(ctx), &qv1.GetClusterRequest{})
	if err != nil {
		return nil, err
	}
	if len(r.GetShards()) == 0 {
		return nil, fmt.Errorf("node %d: no shards", id)
	}
	return r.GetShards()[0], nil
}

// rejected reads quorumq_raft_messages_rejected_total from a node.
func rejected(t *testing.T, p *proc) int {
	t.Helper()
	resp, err := http.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "quorumq_raft_messages_rejected_total "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no quorumq_raft_messages_rejected_total in /metrics")
	return 0
}

// With peer mutual TLS, a peer certificate is an identity: node 2's
// certificate cannot send Raft messages as another node, a node outside
// the group cannot append, DeliverOutbox needs a storage node's
// certificate, and an API node's certificate routes client calls.
func TestPeerIdentityEnforced(t *testing.T) {
	dir := t.TempDir()
	c := &peerSecurityCluster{dir: dir, ca: newTestCA(t, dir, "cluster"), raft: map[int]string{}, procs: map[int]*proc{}}
	var secret string
	secret, c.token = writeSecret(t, dir)
	var peers []string
	for i := 1; i <= 3; i++ {
		c.raft[i] = freePort(t)
		peers = append(peers, fmt.Sprintf("%d=%s", i, c.raft[i]))
	}
	peerFlags := func(name, uri string) []string {
		cert, key := c.ca.issue(t, dir, name, uri)
		return []string{"--auth-hs256-secret-file", secret, "--peers", strings.Join(peers, ","),
			"--peer-tls-cert-file", cert, "--peer-tls-key-file", key, "--peer-tls-ca-file", c.ca.file}
	}
	for i := 1; i <= 3; i++ {
		c.procs[i] = startServe(t, t.TempDir(), append(peerFlags(fmt.Sprint("node", i), nodeURI(i)),
			"--node-id", fmt.Sprint(i), "--raft-addr", c.raft[i])...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// The cluster forms over mutual TLS; all three agree on the leader.
	var leader, victim, member int
	for {
		if ctx.Err() != nil {
			t.Fatal("no leader over mutual TLS")
		}
		views := map[uint64]int{}
		for i := 1; i <= 3; i++ {
			if s, err := c.shard0(t, ctx, i); err == nil && s.GetLeader() != 0 {
				views[s.GetLeader()]++
			}
		}
		if len(views) == 1 {
			for l, n := range views {
				leader = int(l)
				if n != 3 {
					leader = 0
				}
			}
		}
		if leader != 0 {
			break
		}
		<-time.After(50 * time.Millisecond)
	}
	for i := 1; i <= 3; i++ {
		if i != leader && victim == 0 {
			victim = i
		} else if i != leader {
			member = i
		}
	}
	qc := qv1.NewQueueServiceClient(c.procs[victim].grpcConn(t))
	createQueueOn(t, authed{qc, c}, "secure")
	if _, err := qc.SendMessage(c.ctx(ctx), &qv1.SendMessageRequest{Queue: "secure", Body: "over mutual TLS"}); err != nil {
		t.Fatal(err)
	}
	before, err := c.shard0(t, ctx, victim)
	if err != nil {
		t.Fatal(err)
	}
	rejectedBefore := rejected(t, c.procs[victim])

	// Forged Raft traffic to a follower: a higher-term heartbeat or append
	// would make it follow the forger at that term.
	forged := before.GetTerm() + 100
	msg := func(typ pb.MessageType, from uint64) []byte {
		m := &pb.Message{Type: &typ, From: proto.Uint64(from), To: proto.Uint64(uint64(victim)), Term: proto.Uint64(forged)}
		if typ == pb.MsgApp {
			m.Index, m.LogTerm, m.Commit = proto.Uint64(before.GetAppliedIndex()), proto.Uint64(before.GetTerm()), proto.Uint64(before.GetAppliedIndex()+1)
			m.Entries = []*pb.Entry{{Term: proto.Uint64(forged), Index: proto.Uint64(before.GetAppliedIndex() + 1), Data: []byte("forged")}}
		}
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Batches carry the sender's incarnation: a node's real one (from the
	// membership records) gets past the incarnation fence, so the checks
	// below are the certificate, sender and membership ones.
	var memberInc uint64
	checkFor(t, 30*time.Second, func() error {
		r, err := qv1.NewClusterServiceClient(c.procs[victim].grpcConn(t)).ListNodes(c.ctx(ctx), &qv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		for _, n := range r.GetNodes() {
			if n.GetId() == uint64(member) && n.GetIncarnation() != 0 {
				memberInc = n.GetIncarnation()
				return nil
			}
		}
		return fmt.Errorf("no incarnation recorded for node %d: %v", member, r.GetNodes())
	})
	incOf := map[uint64]uint64{uint64(member): memberInc, uint64(leader): 1, 4: 4, 100: 100}
	stream := func(conn *grpc.ClientConn, fromNode uint64, raw []byte) error {
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		defer scancel()
		s, err := transportpb.NewRaftTransportServiceClient(conn).Stream(sctx)
		if err != nil {
			return err
		}
		req := &transportpb.StreamRequest{FromNode: fromNode, FromIncarnation: incOf[fromNode], Messages: []*transportpb.RaftMessage{{Group: 0, Message: raw}}}
		if err := s.Send(req); err != nil {
			_, err = s.CloseAndRecv()
			return err
		}
		_, err = s.CloseAndRecv()
		return err
	}
	asMember := c.peerConn(t, c.raft[victim], "impostor", []string{nodeURI(member)})
	// Node `member`'s certificate claiming to be the leader: refused.
	if err := stream(asMember, uint64(leader), msg(pb.MsgHeartbeat, uint64(leader))); status.Code(err) != codes.PermissionDenied {
		t.Errorf("node %d's certificate sending as node %d: %v, want PermissionDenied", member, leader, err)
	}
	// Its own FromNode but a message from the leader: dropped.
	if err := stream(asMember, uint64(member), msg(pb.MsgApp, uint64(leader))); err != nil {
		t.Errorf("batch with a forged Msg.From: %v", err)
	}
	// A valid node certificate of a non-member: dropped.
	outsider := c.peerConn(t, c.raft[victim], "outsider", []string{nodeURI(4)})
	if err := stream(outsider, 4, msg(pb.MsgApp, 4)); err != nil {
		t.Errorf("non-member batch: %v", err)
	}
	// An API node's certificate may not speak Raft at all.
	apiConn := c.peerConn(t, c.raft[victim], "api-peer", []string{"quorumq://api/100"})
	if err := stream(apiConn, 100, msg(pb.MsgHeartbeat, 100)); status.Code(err) != codes.PermissionDenied {
		t.Errorf("API certificate opening a Raft stream: %v, want PermissionDenied", err)
	}
	if got := rejected(t, c.procs[victim]) - rejectedBefore; got != 3 {
		t.Errorf("victim counted %d rejected Raft messages, want 3", got)
	}
	// The honest cluster carries on at its term with its leader.
	for i := 0; i < 5; i++ {
		if _, err := qc.SendMessage(c.ctx(ctx), &qv1.SendMessageRequest{Queue: "secure", Body: fmt.Sprint("after ", i)}); err != nil {
			t.Fatal(err)
		}
	}
	after, err := c.shard0(t, ctx, victim)
	if err != nil {
		t.Fatal(err)
	}
	if after.GetTerm() != before.GetTerm() || after.GetLeader() != uint64(leader) {
		t.Fatalf("forged traffic moved node %d: term %d -> %d, leader %d -> %d", victim, before.GetTerm(), after.GetTerm(), leader, after.GetLeader())
	}

	// DeliverOutbox puts messages into any tenant's queue: storage nodes only.
	deliver := func(conn *grpc.ClientConn, withShard bool) error {
		dctx := ctx
		if withShard {
			dctx = metadata.AppendToOutgoingContext(ctx, "x-quorumq-shard", "0")
		}
		req := &storepb.DeliverOutbox{Entries: []*storepb.OutboxEntry{{Id: 1, TargetTenant: "acme", TargetQueue: "secure",
			Message: &storepb.MessageRecord{Body: "injected"}}}}
		return conn.Invoke(dctx, "/quorumq.internal.v1.Peer/DeliverOutbox", req, &storepb.AckOutbox{})
	}
	if err := deliver(c.peerConn(t, c.raft[leader], "", nil), true); err == nil {
		t.Error("DeliverOutbox without a client certificate succeeded")
	}
	if err := deliver(c.peerConn(t, c.raft[leader], "plain-client", []string{}), true); status.Code(err) != codes.Unauthenticated {
		t.Errorf("DeliverOutbox with a CA-signed certificate without a peer identity: %v, want Unauthenticated", err)
	}
	if err := deliver(c.peerConn(t, c.raft[leader], "api-deliver", []string{"quorumq://api/100"}), true); status.Code(err) != codes.PermissionDenied {
		t.Errorf("DeliverOutbox with an API certificate: %v, want PermissionDenied", err)
	}
	// A storage node's certificate gets past the check (to the handler,
	// which wants a shard header).
	if err := deliver(c.peerConn(t, c.raft[leader], "node-deliver", []string{nodeURI(member)}), false); status.Code(err) != codes.InvalidArgument {
		t.Errorf("DeliverOutbox with a node certificate and no shard: %v, want InvalidArgument", err)
	}

	// Every node records its own client address in its node record
	// (through the metadata leader's peer service, over mutual TLS)...
	checkFor(t, 30*time.Second, func() error {
		r, err := qv1.NewClusterServiceClient(c.procs[member].grpcConn(t)).ListNodes(c.ctx(ctx), &qv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		for _, n := range r.GetNodes() {
			if want := c.procs[int(n.GetId())].grpcAddr; n.GetClientAddress() != want {
				return fmt.Errorf("node %d: client address %q, want %q", n.GetId(), n.GetClientAddress(), want)
			}
		}
		return nil
	})
	// ... and only its own.
	nodeAddress := func(conn *grpc.ClientConn, id uint64) error {
		req := &storepb.RegisterNode{Node: &storepb.NodeRecord{Id: id, ClientAddr: "203.0.113.1:9090"}}
		return conn.Invoke(metadata.AppendToOutgoingContext(ctx, "x-quorumq-shard", "0"), "/quorumq.internal.v1.Peer/NodeAddress", req, &storepb.NodeRecord{})
	}
	if err := nodeAddress(c.peerConn(t, c.raft[leader], "addr-impostor", []string{nodeURI(member)}), uint64(leader)); status.Code(err) != codes.PermissionDenied {
		t.Errorf("node %d's certificate recording node %d's address: %v, want PermissionDenied", member, leader, err)
	}
	if err := nodeAddress(c.peerConn(t, c.raft[leader], "addr-api", []string{"quorumq://api/100"}), 100); status.Code(err) != codes.PermissionDenied {
		t.Errorf("an API certificate recording an address: %v, want PermissionDenied", err)
	}

	// An API-tier node with its own certificate routes client calls.
	api := startServe(t, t.TempDir(), append(peerFlags("api-node", "quorumq://api/100"), "--role", "api", "--node-id", "100")...)
	apiClient := qv1.NewQueueServiceClient(api.grpcConn(t))
	for {
		r, err := apiClient.ReceiveMessages(c.ctx(ctx), &qv1.ReceiveMessagesRequest{Queue: "secure", MaxMessages: 10})
		if err == nil {
			for _, m := range r.GetMessages() {
				if m.GetBody() == "injected" {
					t.Fatal("a refused DeliverOutbox reached the queue")
				}
			}
			if len(r.GetMessages()) > 0 {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("the API node did not route a receive: %v", err)
		}
		<-time.After(100 * time.Millisecond)
	}
}

// authed adds the cluster's token to every call of a QueueServiceClient.
type authed struct {
	qv1.QueueServiceClient
	c *peerSecurityCluster
}

func (a authed) CreateQueue(ctx context.Context, in *qv1.CreateQueueRequest, opts ...grpc.CallOption) (*qv1.CreateQueueResponse, error) {
	return a.QueueServiceClient.CreateQueue(a.c.ctx(ctx), in, opts...)
}

// fakePeer is a Raft peer port served by the test with a certificate of
// its choosing; it counts TLS handshakes begun and Raft streams opened.
type fakePeer struct {
	transportpb.UnimplementedRaftTransportServiceServer
	hellos, streams atomic.Int64
}

func (f *fakePeer) Stream(s grpc.ClientStreamingServer[transportpb.StreamRequest, transportpb.StreamResponse]) error {
	f.streams.Add(1)
	return status.Error(codes.Unavailable, "fake peer")
}

func (f *fakePeer) serve(t *testing.T, addr string, ca *testCA, certFile, keyFile string) *grpc.Server {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
		MinVersion: tls.VersionTLS12}
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { f.hellos.Add(1); return nil, nil }
	var l net.Listener
	deadline := time.Now().Add(10 * time.Second)
	for l, err = net.Listen("tcp", addr); err != nil; l, err = net.Listen("tcp", addr) {
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		<-time.After(50 * time.Millisecond)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	transportpb.RegisterRaftTransportServiceServer(s, f)
	go func() { _ = s.Serve(l) }() // ends at s.Stop
	t.Cleanup(s.Stop)
	return s
}

// A node dialing peer 2 accepts only a certificate naming node 2: a
// CA-signed certificate of another node at that address gets no Raft
// traffic.
func TestPeerDialChecksServerIdentity(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "cluster")
	raft1, raft2 := freePort(t), freePort(t)
	cert, key := ca.issue(t, dir, "node1", nodeURI(1))
	wrong := &fakePeer{}
	c3, k3 := ca.issue(t, dir, "node3", nodeURI(3))
	srv := wrong.serve(t, raft2, ca, c3, k3)
	startServe(t, t.TempDir(), "--node-id", "1", "--raft-addr", raft1, "--peers", "1="+raft1+",2="+raft2,
		"--peer-tls-cert-file", cert, "--peer-tls-key-file", key, "--peer-tls-ca-file", ca.file)
	deadline := time.Now().Add(60 * time.Second)
	// Node 1 campaigns, so it keeps trying node 2: a third handshake means
	// the first two failed (a good one would have carried a stream).
	for wrong.hellos.Load() < 3 && wrong.streams.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("node 1 never dialed peer 2 (%d handshakes)", wrong.hellos.Load())
		}
		<-time.After(20 * time.Millisecond)
	}
	if n := wrong.streams.Load(); n != 0 {
		t.Fatalf("node 1 opened %d Raft streams to a server whose certificate names node 3", n)
	}
	// The same address with node 2's certificate: streams flow.
	srv.Stop()
	right := &fakePeer{}
	c2, k2 := ca.issue(t, dir, "node2", nodeURI(2))
	right.serve(t, raft2, ca, c2, k2)
	for right.streams.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("node 1 opened no Raft stream to node 2's certificate (%d handshakes)", right.hellos.Load())
		}
		<-time.After(20 * time.Millisecond)
	}
}

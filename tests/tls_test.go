package tests

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	transportpb "github.com/quorumq/quorumq/raftnode/transportpb/v1"
)

// testCA issues certificates for 127.0.0.1.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(dir, name+"-ca.pem")
	writePEM(t, file, "CERTIFICATE", der)
	return &testCA{cert: cert, key: key, file: file}
}

// issue writes a certificate for 127.0.0.1 usable as server and client,
// with the given URI SANs (a peer identity: quorumq://node/<id>).
func (ca *testCA) issue(t *testing.T, dir, name string, uris ...string) (certFile, keyFile string) {
	t.Helper()
	var sans []*url.URL
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		sans = append(sans, pu)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}, URIs: sans,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

// nodeURI is the peer identity of storage node id.
func nodeURI(id int) string { return fmt.Sprintf("quorumq://node/%d", id) }

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func tlsClient(t *testing.T, addr, caFile string) *grpc.ClientConn {
	t.Helper()
	creds, err := credentials.NewClientTLSFromFile(caFile, "")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Three nodes with TLS on the client listeners and mutual TLS between
// nodes: they form a cluster; a process whose peer certificate the CA did not
// sign can neither join nor deliver Raft messages.
func TestMutualTLSPeers(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "cluster")
	rogueCA := newTestCA(t, dir, "rogue")
	apiCert, apiKey := ca.issue(t, dir, "api")
	var peers []string
	raft := map[int]string{}
	for i := 1; i <= 3; i++ {
		raft[i] = freePort(t)
		peers = append(peers, fmt.Sprintf("%d=%s", i, raft[i]))
	}
	start := func(id int, peerCA *testCA, data string) *proc {
		cert, key := peerCA.issue(t, dir, fmt.Sprintf("node%d-%d", id, time.Now().UnixNano()), nodeURI(id))
		return startServe(t, data, "--node-id", fmt.Sprint(id), "--peers", strings.Join(peers, ","), "--raft-addr", raft[id],
			"--tls-cert-file", apiCert, "--tls-key-file", apiKey,
			"--peer-tls-cert-file", cert, "--peer-tls-key-file", key, "--peer-tls-ca-file", peerCA.file)
	}
	procs := map[int]*proc{}
	for i := 1; i <= 3; i++ {
		procs[i] = start(i, ca, t.TempDir())
	}
	clients := map[int]qv1.QueueServiceClient{}
	clusterc := map[int]qv1.ClusterServiceClient{}
	for i, p := range procs {
		conn := tlsClient(t, p.grpcAddr, ca.file)
		clients[i], clusterc[i] = qv1.NewQueueServiceClient(conn), qv1.NewClusterServiceClient(conn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The cluster forms and serves over mutual TLS (node 3 forwards to the leader).
	var leader uint64
	for leader == 0 {
		if ctx.Err() != nil {
			t.Fatal("no leader over mutual TLS")
		}
		if r, err := clusterc[3].GetCluster(ctx, &qv1.GetClusterRequest{}); err == nil && len(r.GetShards()) > 0 {
			leader = r.GetShards()[0].GetLeader()
		}
		<-time.After(50 * time.Millisecond)
	}
	createQueueOn(t, clients[3], "secure")
	if _, err := clients[3].SendMessage(ctx, &qv1.SendMessageRequest{Queue: "secure", Body: "over TLS"}); err != nil {
		t.Fatal(err)
	}

	// A client without a certificate cannot open a Raft stream.
	for id, addr := range raft {
		pool := x509.NewCertPool()
		pool.AddCert(ca.cert)
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
		if err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
		stream, err := transportpb.NewRaftTransportServiceClient(conn).Stream(sctx)
		if err == nil {
			err = stream.Send(&transportpb.StreamRequest{})
			if err == nil {
				_, err = stream.CloseAndRecv()
			}
		}
		scancel()
		_ = conn.Close()
		if err == nil {
			t.Fatalf("node %d accepted a Raft stream from a client without a certificate", id)
		}
	}

	// Replace a follower by a process whose peer certificate a rogue CA signed.
	var victim int
	for i := 1; i <= 3; i++ {
		if uint64(i) != leader {
			victim = i
			break
		}
	}
	_ = procs[victim].cmd.Process.Kill()
	<-procs[victim].exited
	rogue := start(victim, rogueCA, t.TempDir())
	rogueCluster := qv1.NewClusterServiceClient(tlsClient(t, rogue.grpcAddr, ca.file))
	before, err := clusterc[int(leader)].GetCluster(ctx, &qv1.GetClusterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The cluster keeps committing without it.
	for i := 0; i < 20; i++ {
		if _, err := clients[int(leader)].SendMessage(ctx, &qv1.SendMessageRequest{Queue: "secure", Body: fmt.Sprint("while rogue ", i)}); err != nil {
			t.Fatal(err)
		}
	}
	<-time.After(3 * time.Second) // several election timeouts: time for the rogue to try
	r, err := rogueCluster.GetCluster(ctx, &qv1.GetClusterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	after, err := clusterc[int(leader)].GetCluster(ctx, &qv1.GetClusterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	rs, ls := r.GetShards()[0], after.GetShards()[0]
	t.Logf("rogue node %d: leader %d, applied %d; cluster: leader %d term %d applied %d", victim, rs.GetLeader(), rs.GetAppliedIndex(), ls.GetLeader(), ls.GetTerm(), ls.GetAppliedIndex())
	if rs.GetLeader() != 0 || rs.GetAppliedIndex() >= ls.GetAppliedIndex() {
		t.Fatalf("the rogue joined: it sees leader %d and applied %d (cluster %d)", rs.GetLeader(), rs.GetAppliedIndex(), ls.GetAppliedIndex())
	}
	if ls.GetTerm() != before.GetShards()[0].GetTerm() || ls.GetLeader() != leader {
		t.Fatalf("the rogue disturbed the cluster: term %d -> %d, leader %d -> %d", before.GetShards()[0].GetTerm(), ls.GetTerm(), leader, ls.GetLeader())
	}
	for _, n := range after.GetNodes() {
		if n.GetId() == uint64(victim) && n.GetOnline() {
			t.Fatalf("the leader counts the rogue node %d as online", victim)
		}
	}
}

package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// peerCtx is a call context whose TLS handshake verified a leaf with the
// given URI SANs (nil: a connection without a verified certificate).
func peerCtx(uris ...string) context.Context {
	info := credentials.TLSInfo{}
	if uris != nil {
		leaf := &x509.Certificate{Subject: pkix.Name{CommonName: "test"}}
		for _, u := range uris {
			pu, err := url.Parse(u)
			if err != nil {
				panic(err)
			}
			leaf.URIs = append(leaf.URIs, pu)
		}
		info.State = tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}
	}
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: info})
}

func TestPeerIdentityOf(t *testing.T) {
	for _, tc := range []struct {
		uris []string
		want PeerIdentity
		ok   bool
	}{
		{[]string{"quorumq://node/2"}, PeerIdentity{PeerRoleNode, 2}, true},
		{[]string{"spiffe://x/y", "quorumq://api/100"}, PeerIdentity{PeerRoleAPI, 100}, true},
		{[]string{PeerURI(PeerRoleNode, 7).String()}, PeerIdentity{PeerRoleNode, 7}, true},
		{nil, PeerIdentity{}, false},
		{[]string{"quorumq://node/0"}, PeerIdentity{}, false},
		{[]string{"quorumq://admin/1"}, PeerIdentity{}, false},
		{[]string{"quorumq://node/x"}, PeerIdentity{}, false},
		{[]string{"quorumq://node/1", "quorumq://node/2"}, PeerIdentity{}, false},
	} {
		id, err := PeerIdentityFrom(peerCtx(append([]string{}, tc.uris...)...))
		if (err == nil) != tc.ok || id != tc.want {
			t.Errorf("%v: got %v, %v; want %v ok=%v", tc.uris, id, err, tc.want, tc.ok)
		}
	}
}

// Every peer-listener call needs a verified certificate with an identity;
// Raft (streaming) and DeliverOutbox need a storage node's, while an API
// node may read the cluster view and forward client calls.
func TestPeerAuthInterceptors(t *testing.T) {
	unary, stream := PeerAuthInterceptors()
	const (
		raftStream = raftTransportPrefix + "Stream"
		raftSnap   = raftTransportPrefix + "Snapshot"
		forwarded  = "/quorumq.v1.QueueService/SendMessage"
	)
	none := peer.NewContext(context.Background(), &peer.Peer{}) // plain TCP
	for i, tc := range []struct {
		ctx    context.Context
		method string
		want   codes.Code
	}{
		{peerCtx("quorumq://node/2"), PeerDeliverMethod, codes.OK},
		{peerCtx("quorumq://node/2"), raftStream, codes.OK},
		{peerCtx("quorumq://node/2"), forwarded, codes.OK},
		{peerCtx("quorumq://api/100"), PeerClusterMethod, codes.OK},
		{peerCtx("quorumq://api/100"), forwarded, codes.OK},
		{peerCtx("quorumq://api/100"), PeerDeliverMethod, codes.PermissionDenied},
		{peerCtx("quorumq://api/100"), raftStream, codes.PermissionDenied},
		{peerCtx("quorumq://api/100"), raftSnap, codes.PermissionDenied},
		{peerCtx(), PeerDeliverMethod, codes.Unauthenticated},            // verified, but no identity
		{none, PeerDeliverMethod, codes.Unauthenticated},                 // no TLS
		{none, raftStream, codes.Unauthenticated},                        // no TLS, streaming
		{context.Background(), PeerClusterMethod, codes.Unauthenticated}, // no peer at all
	} {
		called := false
		var err error
		if tc.method == raftStream || tc.method == raftSnap {
			err = stream(nil, fakeStream{ctx: tc.ctx}, &grpc.StreamServerInfo{FullMethod: tc.method, IsClientStream: true},
				func(any, grpc.ServerStream) error { called = true; return nil })
		} else {
			_, err = unary(tc.ctx, nil, &grpc.UnaryServerInfo{FullMethod: tc.method},
				func(context.Context, any) (any, error) { called = true; return nil, nil })
		}
		if got := status.Code(err); got != tc.want || called != (tc.want == codes.OK) {
			t.Errorf("case %d, %s: %v (handler called %v), want %v", i, tc.method, err, called, tc.want)
		}
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f fakeStream) Context() context.Context { return f.ctx }

package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Peer identities live in the peer certificate as one URI SAN:
// quorumq://node/<id> for a storage node (Raft member), quorumq://api/<id>
// for an API-tier node (routes calls, never touches a Raft log). The CA of
// --peer-tls-ca-file vouches for the binding of id to key.
const (
	PeerRoleNode  = "node"
	PeerRoleAPI   = "api"
	peerURIScheme = "quorumq"
)

// PeerIdentity is who is on the other end of a peer connection.
type PeerIdentity struct {
	Role string // PeerRoleNode or PeerRoleAPI
	ID   uint64
}

func (p PeerIdentity) String() string { return fmt.Sprintf("%s %d", p.Role, p.ID) }

// PeerURI is the URI SAN a peer certificate of role and id carries.
func PeerURI(role string, id uint64) *url.URL {
	return &url.URL{Scheme: peerURIScheme, Host: role, Path: "/" + strconv.FormatUint(id, 10)}
}

// PeerIdentityOf reads the identity of a certificate: exactly one
// quorumq:// URI SAN naming a known role and a positive id.
func PeerIdentityOf(cert *x509.Certificate) (PeerIdentity, error) {
	var found []PeerIdentity
	for _, u := range cert.URIs {
		if u.Scheme != peerURIScheme {
			continue
		}
		role := u.Host
		id, err := strconv.ParseUint(strings.TrimPrefix(u.Path, "/"), 10, 64)
		if (role != PeerRoleNode && role != PeerRoleAPI) || err != nil || id == 0 {
			return PeerIdentity{}, fmt.Errorf("peer certificate %q: bad identity URI %q (want quorumq://node/<id> or quorumq://api/<id>)", cert.Subject.CommonName, u)
		}
		found = append(found, PeerIdentity{Role: role, ID: id})
	}
	switch len(found) {
	case 0:
		return PeerIdentity{}, fmt.Errorf("peer certificate %q has no quorumq://node/<id> or quorumq://api/<id> URI SAN", cert.Subject.CommonName)
	case 1:
		return found[0], nil
	default:
		return PeerIdentity{}, fmt.Errorf("peer certificate %q names %d identities; want one", cert.Subject.CommonName, len(found))
	}
}

// PeerIdentityFrom returns the identity of a call's peer: the leaf of the
// certificate chain the TLS handshake verified. Unverified or absent
// certificates have no identity.
func PeerIdentityFrom(ctx context.Context) (PeerIdentity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return PeerIdentity{}, fmt.Errorf("no peer certificate: %w", errNoPeerTLS)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return PeerIdentity{}, fmt.Errorf("no peer certificate: %w", errNoPeerTLS)
	}
	chains := info.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return PeerIdentity{}, fmt.Errorf("no verified peer certificate: %w", errNoPeerTLS)
	}
	return PeerIdentityOf(chains[0][0])
}

var errNoPeerTLS = errors.New("peer is not authenticated by mutual TLS")

// PeerNodeID is the storage-node id a call's certificate proves (the Raft
// transport checks FromNode and Msg.From against it).
func PeerNodeID(ctx context.Context) (uint64, error) {
	id, err := PeerIdentityFrom(ctx)
	if err != nil {
		return 0, err
	}
	if id.Role != PeerRoleNode {
		return 0, fmt.Errorf("%v is not a storage node", id)
	}
	return id.ID, nil
}

// Raft transport methods (the raftnode transport's service).
const raftTransportPrefix = "/transportpb.v1.RaftTransportService/"

// nodeOnlyMethod reports whether only a storage node may call a peer
// method: Raft traffic and outbox deliveries write to a shard's log. API
// nodes may read the cluster view and forward client calls (which carry
// the client's token and are authorized again).
func nodeOnlyMethod(m string) bool {
	return strings.HasPrefix(m, raftTransportPrefix) || m == PeerDeliverMethod
}

// authorizePeer checks a peer-listener call against its certificate.
func authorizePeer(ctx context.Context, method string) error {
	id, err := PeerIdentityFrom(ctx)
	if err != nil {
		return StatusError(codes.Unauthenticated, ReasonUnauthenticated, fmt.Sprintf("%s: %v", method, err), nil)
	}
	if nodeOnlyMethod(method) && id.Role != PeerRoleNode {
		return StatusError(codes.PermissionDenied, ReasonPermissionDenied, fmt.Sprintf("%s: %v may not call it (storage nodes only)", method, id), nil)
	}
	return nil
}

// PeerAuthInterceptors guard the peer listener when peer mutual TLS is on:
// every call, unary or streaming, needs a verified peer certificate with a
// quorumq identity, and Raft and outbox methods a storage-node one.
func PeerAuthInterceptors() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := authorizePeer(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := authorizePeer(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
	return unary, stream
}

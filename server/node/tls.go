package node

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/quorumq/quorumq/server"
)

// TLSFiles names the certificate files of a node. Empty fields mean plain
// TCP for that side.
type TLSFiles struct {
	// CertFile and KeyFile serve the client listeners (gRPC and HTTP).
	CertFile, KeyFile string
	// PeerCertFile, PeerKeyFile and PeerCAFile secure peer traffic with
	// mutual TLS: a node presents its certificate and accepts only peers
	// whose certificates PeerCAFile signed.
	PeerCertFile, PeerKeyFile, PeerCAFile string
}

// clientTLS is the server-side TLS of the client listeners, or nil.
func (f TLSFiles) clientTLS() (*tls.Config, error) {
	if f.CertFile == "" && f.KeyFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("client TLS certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// selfDialTLS lets the REST gateway call this node's own gRPC listener: the
// only certificate it accepts is the node's own (pinned), whatever name or
// address the listener has.
func selfDialTLS(server *tls.Config) *tls.Config {
	own := server.Certificates[0].Certificate[0]
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], own) {
				return errors.New("gateway: the gRPC listener does not present this node's certificate")
			}
			return nil
		},
	}
}

// peerTLS returns the server and client sides of mutual TLS between nodes,
// or nils when peer TLS is not configured. The certificate must carry the
// identity of this node (quorumq://node/<id>, or quorumq://api/<id> for an
// API-tier node): peers check it on every call.
func (f TLSFiles) peerTLS(role string, id uint64) (server, client *tls.Config, err error) {
	if f.PeerCertFile == "" && f.PeerKeyFile == "" && f.PeerCAFile == "" {
		return nil, nil, nil
	}
	if f.PeerCertFile == "" || f.PeerKeyFile == "" || f.PeerCAFile == "" {
		return nil, nil, errors.New("peer TLS needs a certificate, its key and a CA file")
	}
	cert, err := tls.LoadX509KeyPair(f.PeerCertFile, f.PeerKeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("peer TLS certificate: %w", err)
	}
	if err := checkPeerIdentity(cert, role, id); err != nil {
		return nil, nil, fmt.Errorf("--peer-tls-cert-file %s: %w", f.PeerCertFile, err)
	}
	pem, err := os.ReadFile(f.PeerCAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("peer CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("peer CA %s: no certificate found", f.PeerCAFile)
	}
	server = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	return server, client, nil
}

// peerDialTLS is the client side of peer TLS for dialing node id: beyond
// the CA, the server's certificate must name that storage node, so an
// address taken over by another certificate holder gets no Raft traffic or
// forwarded calls.
func peerDialTLS(client *tls.Config, id uint64) *tls.Config {
	c := client.Clone()
	want := server.PeerIdentity{Role: server.PeerRoleNode, ID: id}
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
			return errors.New("peer TLS: no verified certificate")
		}
		got, err := server.PeerIdentityOf(cs.VerifiedChains[0][0])
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("peer TLS: the server at this address is %v, want %v", got, want)
		}
		return nil
	}
	return c
}

// checkPeerIdentity refuses a peer certificate made for another node or
// role: peers would refuse this node's calls, or it would act as another.
func checkPeerIdentity(cert tls.Certificate, role string, id uint64) error {
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return err
	}
	got, err := server.PeerIdentityOf(leaf)
	if err != nil {
		return err
	}
	want := server.PeerIdentity{Role: server.PeerRoleNode, ID: id}
	if role == "api" {
		want.Role = server.PeerRoleAPI
	}
	if got != want {
		return fmt.Errorf("the certificate is for %v, this is %v (want URI SAN %s)", got, want, server.PeerURI(want.Role, want.ID))
	}
	return nil
}

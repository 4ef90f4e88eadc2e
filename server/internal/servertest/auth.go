package servertest

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/quorumq/quorumq/server/auth"
	"github.com/quorumq/quorumq/server/node"
)

// TestSecret is the HS256 secret of StartAuthNode's nodes and Token's tokens.
var TestSecret = []byte("0123456789abcdef0123456789abcdef-quorumq-test")

// AuthNode is a node that verifies HS256 tokens.
type AuthNode struct {
	*node.Node
	Conn *grpc.ClientConn
	Base string
}

// StartAuthNode starts a node that accepts tokens signed with TestSecret.
func StartAuthNode(t *testing.T) *AuthNode {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, append(TestSecret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return StartNodeWithAuth(t, auth.Config{HS256SecretFile: secret, Audience: "quorumq", Issuer: "quorumq-test"})
}

// StartNodeWithAuth starts a node whose authenticator is made of cfg.
func StartNodeWithAuth(t *testing.T, cfg auth.Config) *AuthNode {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := node.Start(ctx, node.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Authenticator: a,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &AuthNode{Node: n, Conn: conn, Base: "http://" + n.HTTPAddr()}
}

// Token mints an HS256 token with claims over StartAuthNode's defaults.
func Token(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	base := jwt.MapClaims{"aud": "quorumq", "iss": "quorumq-test", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		base[k] = v
	}
	tok, err := auth.Mint("HS256", TestSecret, "", base)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// AllScopes is the scope claim that allows every queue call.
const AllScopes = "queues:admin messages:send messages:receive"

// As returns a context carrying tok as a bearer token.
func As(t *testing.T, tok string) context.Context {
	return metadata.AppendToOutgoingContext(Ctx(t), "authorization", "Bearer "+tok)
}

// REST makes an HTTP call to n with tok as its bearer token (none if
// empty) and returns the status and body.
func (n *AuthNode) REST(t *testing.T, tok, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(Ctx(t), method, n.Base+path, strings.NewReader(body))
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

package router_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/server/shardserver"
)

func grantOf(t *testing.T, keys *router.AccessKeys, id string) (*router.AccessKeyGrant, error) {
	t.Helper()
	return keys.AccessKeyGrant(tctx(t), id, "20270115", "eu-west-1", "sqs")
}

// cluster:admin manages any tenant's keys; queues:admin only its own and
// only with scopes it holds; other tokens none. Secrets are shown once.
func TestAccessKeyAuthorization(t *testing.T) {
	n := startAuthNode(t)
	c := qv1.NewCredentialsServiceClient(n.Conn)
	admin := as(t, token(t, jwt.MapClaims{"tenant": "ops", "scope": "cluster:admin"}))
	acme := as(t, token(t, jwt.MapClaims{"tenant": "acme", "scope": "queues:admin messages:send"}))
	sender := as(t, token(t, jwt.MapClaims{"tenant": "acme", "scope": "messages:send messages:receive"}))

	created, err := c.CreateAccessKey(admin, &qv1.CreateAccessKeyRequest{Tenant: "beta", Description: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	k := created.GetAccessKey()
	if len(k.GetAccessKeyId()) != 20 || !strings.HasPrefix(k.GetAccessKeyId(), "AKQQ") || len(created.GetSecretAccessKey()) != 40 {
		t.Fatalf("created %v with a %d-byte secret", k, len(created.GetSecretAccessKey()))
	}
	if k.GetTenant() != "beta" || !slices.Equal(k.GetScopes(), []string{"messages:receive", "messages:send", "queues:admin"}) || k.GetCreateTime() == nil {
		t.Fatalf("created %v", k)
	}

	own, err := c.CreateAccessKey(acme, &qv1.CreateAccessKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if own.GetAccessKey().GetTenant() != "acme" || !slices.Equal(own.GetAccessKey().GetScopes(), []string{"messages:send", "queues:admin"}) {
		t.Fatalf("queues:admin's default key %v: want its own tenant and the default scopes it holds", own.GetAccessKey())
	}
	for name, tc := range map[string]struct {
		ctx  context.Context
		req  *qv1.CreateAccessKeyRequest
		code codes.Code
	}{
		"other tenant":        {acme, &qv1.CreateAccessKeyRequest{Tenant: "beta"}, codes.PermissionDenied},
		"scope not held":      {acme, &qv1.CreateAccessKeyRequest{Scopes: []string{"messages:receive"}}, codes.PermissionDenied},
		"cluster:admin key":   {admin, &qv1.CreateAccessKeyRequest{Tenant: "beta", Scopes: []string{"cluster:admin"}}, codes.InvalidArgument},
		"no admin scope":      {sender, &qv1.CreateAccessKeyRequest{}, codes.PermissionDenied},
		"long description":    {admin, &qv1.CreateAccessKeyRequest{Tenant: "beta", Description: strings.Repeat("x", 257)}, codes.InvalidArgument},
		"unknown scope name":  {admin, &qv1.CreateAccessKeyRequest{Tenant: "beta", Scopes: []string{"all"}}, codes.InvalidArgument},
		"tenant with a slash": {admin, &qv1.CreateAccessKeyRequest{Tenant: "a/b"}, codes.InvalidArgument},
	} {
		if _, err := c.CreateAccessKey(tc.ctx, tc.req); codeOf(err) != tc.code {
			t.Errorf("%s: %v, want %v", name, err, tc.code)
		}
	}

	if _, err := c.ListAccessKeys(acme, &qv1.ListAccessKeysRequest{Tenant: "beta"}); codeOf(err) != codes.PermissionDenied {
		t.Fatalf("acme lists beta's keys: %v", err)
	}
	if _, err := c.RevokeAccessKey(acme, &qv1.RevokeAccessKeyRequest{Tenant: "beta", AccessKeyId: k.GetAccessKeyId()}); codeOf(err) != codes.PermissionDenied {
		t.Fatalf("acme revokes beta's key: %v", err)
	}
	// Naming another tenant's key as one's own finds nothing.
	_, err = c.RevokeAccessKey(acme, &qv1.RevokeAccessKeyRequest{AccessKeyId: k.GetAccessKeyId()})
	if code, reason, _ := reasonOf(err); code != codes.NotFound || reason != server.ReasonAccessKeyNotFound {
		t.Fatalf("acme revokes beta's key as its own: %v", err)
	}
	list, err := c.ListAccessKeys(admin, &qv1.ListAccessKeysRequest{Tenant: "beta"})
	if err != nil || len(list.GetAccessKeys()) != 1 || list.GetAccessKeys()[0].GetAccessKeyId() != k.GetAccessKeyId() {
		t.Fatalf("beta's keys: %v %v", list, err)
	}

	// REST: the same service; no secret in any listing.
	tok := token(t, jwt.MapClaims{"tenant": "ops", "scope": "cluster:admin"})
	status, body := n.REST(t, tok, "GET", "/v1/tenants/beta/accessKeys", "")
	if status != http.StatusOK || !strings.Contains(body, k.GetAccessKeyId()) || strings.Contains(body, created.GetSecretAccessKey()) || strings.Contains(strings.ToLower(body), "secret") {
		t.Fatalf("REST list: %d %s", status, body)
	}
	status, body = n.REST(t, tok, "POST", "/v1/tenants/beta/accessKeys", `{"scopes":["messages:send"]}`)
	var rc struct {
		AccessKey struct {
			AccessKeyID string `json:"accessKeyId"`
		} `json:"accessKey"`
		SecretAccessKey string `json:"secretAccessKey"`
	}
	if err := json.Unmarshal([]byte(body), &rc); status != http.StatusOK || err != nil || rc.SecretAccessKey == "" {
		t.Fatalf("REST create: %d %s", status, body)
	}
	if status, body = n.REST(t, tok, "DELETE", "/v1/tenants/beta/accessKeys/"+rc.AccessKey.AccessKeyID, ""); status != http.StatusOK {
		t.Fatalf("REST revoke: %d %s", status, body)
	}
	if status, _ = n.REST(t, tok, "DELETE", "/v1/tenants/beta/accessKeys/"+rc.AccessKey.AccessKeyID, ""); status != http.StatusNotFound {
		t.Fatalf("REST revoke again: %d, want 404", status)
	}
}

func codeOf(err error) codes.Code {
	c, _, _ := reasonOf(err)
	if err == nil {
		return codes.OK
	}
	return c
}

// The node's lookup answers a key's tenant, scopes and the signing key of
// the asked scope (derived from the secret the creator got); a key revoked
// through the node is unknown at once.
func TestAccessKeyLookup(t *testing.T) {
	n := startAuthNode(t)
	c := qv1.NewCredentialsServiceClient(n.Conn)
	admin := as(t, token(t, jwt.MapClaims{"tenant": "ops", "scope": "cluster:admin"}))
	created, err := c.CreateAccessKey(admin, &qv1.CreateAccessKeyRequest{Tenant: "acme", Scopes: []string{"messages:send"}})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetAccessKey().GetAccessKeyId()
	g, err := grantOf(t, n.AccessKeys(), id)
	if err != nil {
		t.Fatal(err)
	}
	want := shardserver.SigningKey(created.GetSecretAccessKey(), "20270115", "eu-west-1", "sqs")
	if g.Tenant != "acme" || !slices.Equal(g.Scopes, []string{"messages:send"}) || string(g.SigningKey) != string(want) {
		t.Fatalf("grant %+v", g)
	}
	if _, err := n.AccessKeys().AccessKeyGrant(tctx(t), id, "20270115", "eu-west-1", "s3"); err == nil {
		t.Fatal("a signing key for another service was handed out")
	}
	if _, err := grantOf(t, n.AccessKeys(), "AKQQNOSUCHKEY0000000"); !errors.Is(err, shardserver.ErrUnknownAccessKey) {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := c.RevokeAccessKey(admin, &qv1.RevokeAccessKeyRequest{Tenant: "acme", AccessKeyId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := grantOf(t, n.AccessKeys(), id); !errors.Is(err, shardserver.ErrUnknownAccessKey) {
		t.Fatalf("after revoke: %v", err)
	}
}

// On a three-node cluster every node's lookup finds a new key through the
// metadata leader (forwarded by peer call), and a key revoked through one
// node is refused by every node within the cache TTL.
func TestAccessKeyRevokedOnEveryNode(t *testing.T) {
	c := startMemCluster(t, 3)
	conn, err := grpc.NewClient(c.Nodes[1].GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	creds := qv1.NewCredentialsServiceClient(conn)
	created, err := creds.CreateAccessKey(tctx(t), &qv1.CreateAccessKeyRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetAccessKey().GetAccessKeyId()
	want := shardserver.SigningKey(created.GetSecretAccessKey(), "20270115", "eu-west-1", "sqs")
	for nid, n := range c.Nodes {
		g, err := grantOf(t, n.AccessKeys(), id)
		if err != nil || g.Tenant != "acme" || string(g.SigningKey) != string(want) {
			t.Fatalf("node %d: %+v %v", nid, g, err)
		}
	}
	if _, err := creds.RevokeAccessKey(tctx(t), &qv1.RevokeAccessKeyRequest{Tenant: "acme", AccessKeyId: id}); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	for nid, n := range c.Nodes {
		// Generous deadline for a loaded machine; the exact bound is
		// TestAccessKeyCacheRevocationBound's (fake clock).
		checkFor(t, router.DefaultAccessKeyTTL+10*time.Second, 50*time.Millisecond, func() error {
			if _, err := grantOf(t, n.AccessKeys(), id); !errors.Is(err, shardserver.ErrUnknownAccessKey) {
				return fmt.Errorf("node %d still grants the key %v after the revoke: %v", nid, time.Since(revoked), err)
			}
			return nil
		})
	}
}

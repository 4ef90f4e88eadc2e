package sigv4_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server/node"
	"github.com/quorumq/quorumq/sqs/sigv4"
)

// The verifier over a real node's key store: a key made through
// CredentialsService signs requests as its tenant until it is revoked;
// then the same request gets InvalidClientTokenId.
func TestVerifyAgainstNodeKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := node.Start(ctx, node.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
	creds := qv1.NewCredentialsServiceClient(conn)
	made := map[string]aws.Credentials{}
	for _, tenant := range []string{"tenant-a", "tenant-b"} {
		k, err := creds.CreateAccessKey(ctx, &qv1.CreateAccessKeyRequest{Tenant: tenant, Scopes: []string{"messages:send"}})
		if err != nil {
			t.Fatal(err)
		}
		made[tenant] = aws.Credentials{AccessKeyID: k.GetAccessKey().GetAccessKeyId(), SecretAccessKey: k.GetSecretAccessKey()}
	}
	base := serve(t, sigv4.New(n.AccessKeys()))
	for tenant, c := range made {
		got := send(t, signed(t, c, "POST", base+"/", []byte(`{}`), jsonHeaders("ListQueues"), time.Now(), "us-east-1"))
		if got.Code != "" || got.Tenant != tenant || !got.Scopes["messages:send"] || len(got.Scopes) != 1 {
			t.Fatalf("key of %s: %+v", tenant, got)
		}
	}
	wrong := made["tenant-a"]
	wrong.SecretAccessKey = made["tenant-b"].SecretAccessKey
	if got := send(t, signed(t, wrong, "POST", base+"/", []byte(`{}`), jsonHeaders("ListQueues"), time.Now(), "us-east-1")); got.Code != sigv4.CodeSignatureDoesNotMatch {
		t.Fatalf("wrong secret: %+v", got)
	}
	if got := send(t, signed(t, made["tenant-a"], "POST", base+"/", []byte(`{}`), jsonHeaders("ListQueues"), time.Now().Add(-20*time.Minute), "us-east-1")); got.Code != sigv4.CodeRequestExpired {
		t.Fatalf("20 minutes old: %+v", got)
	}
	if _, err := creds.RevokeAccessKey(ctx, &qv1.RevokeAccessKeyRequest{Tenant: "tenant-a", AccessKeyId: made["tenant-a"].AccessKeyID}); err != nil {
		t.Fatal(err)
	}
	if got := send(t, signed(t, made["tenant-a"], "POST", base+"/", []byte(`{}`), jsonHeaders("ListQueues"), time.Now(), "us-east-1")); got.Code != sigv4.CodeInvalidClientTokenId {
		t.Fatalf("revoked key: %+v", got)
	}
	if got := send(t, signed(t, made["tenant-b"], "POST", base+"/", []byte(`{}`), jsonHeaders("ListQueues"), time.Now(), "us-east-1")); got.Tenant != "tenant-b" {
		t.Fatalf("the other tenant's key after the revoke: %+v", got)
	}
}

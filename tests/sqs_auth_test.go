package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"google.golang.org/grpc/metadata"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// With client auth on, the SQS endpoint verifies SigV4 against the access
// keys of the metadata shard: each key acts as its tenant only (tenant A
// neither lists, finds nor sends to tenant B's queues), and a wrong
// secret, a revoked key and a date 20 minutes old are refused with SQS's
// codes.
func TestSQSSigV4Tenants(t *testing.T) {
	secret, admin := writeSecret(t, t.TempDir())
	p := startServe(t, t.TempDir(), "--sqs-addr", "127.0.0.1:0", "--auth-hs256-secret-file", secret)
	creds := qv1.NewCredentialsServiceClient(p.grpcConn(t))
	adminCtx := func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+admin), cancel
	}
	keys := map[string]*qv1.CreateAccessKeyResponse{}
	deadline := time.Now().Add(30 * time.Second)
	for _, tenant := range []string{"tenant-a", "tenant-b"} {
		for {
			ctx, cancel := adminCtx()
			k, err := creds.CreateAccessKey(ctx, &qv1.CreateAccessKeyRequest{Tenant: tenant})
			cancel()
			if err == nil {
				keys[tenant] = k
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("create key of %s: %v", tenant, err)
			}
			time.Sleep(100 * time.Millisecond) // the node is starting; poll
		}
	}
	client := func(id, secret string) *awssqs.Client {
		return awssqs.New(awssqs.Options{Region: "eu-west-1", BaseEndpoint: aws.String("http://" + p.sqsAddr),
			Credentials: credentials.NewStaticCredentialsProvider(id, secret, "")})
	}
	a := client(keys["tenant-a"].GetAccessKey().GetAccessKeyId(), keys["tenant-a"].GetSecretAccessKey())
	b := client(keys["tenant-b"].GetAccessKey().GetAccessKeyId(), keys["tenant-b"].GetSecretAccessKey())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	qa, err := a.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("orders")})
	if err != nil {
		t.Fatal(err)
	}
	qb, err := b.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("payroll")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(*qa.QueueUrl, "/tenant-a/orders") || !strings.Contains(*qb.QueueUrl, "/tenant-b/payroll") {
		t.Fatalf("queue URLs %s %s", *qa.QueueUrl, *qb.QueueUrl)
	}
	la, err := a.ListQueues(ctx, &awssqs.ListQueuesInput{})
	if err != nil || len(la.QueueUrls) != 1 || la.QueueUrls[0] != *qa.QueueUrl {
		t.Fatalf("tenant A lists %v (%v)", la.QueueUrls, err)
	}
	_, err = a.GetQueueUrl(ctx, &awssqs.GetQueueUrlInput{QueueName: aws.String("payroll")})
	wantCode(t, "A finds B's queue", err, "AWS.SimpleQueueService.NonExistentQueue")
	_, err = a.GetQueueUrl(ctx, &awssqs.GetQueueUrlInput{QueueName: aws.String("payroll"), QueueOwnerAWSAccountId: aws.String("tenant-b")})
	wantCode(t, "A names B's account", err, "AWS.SimpleQueueService.NonExistentQueue")
	_, err = a.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: qb.QueueUrl, MessageBody: aws.String("x")})
	wantCode(t, "A sends to B's queue URL", err, "AWS.SimpleQueueService.NonExistentQueue")
	_, err = a.GetQueueAttributes(ctx, &awssqs.GetQueueAttributesInput{QueueUrl: qb.QueueUrl})
	wantCode(t, "A reads B's queue attributes", err, "AWS.SimpleQueueService.NonExistentQueue")
	rb, err := b.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: qb.QueueUrl})
	if err != nil || len(rb.Messages) != 0 {
		t.Fatalf("B's queue got %v (%v)", rb.Messages, err)
	}

	wrong := client(keys["tenant-a"].GetAccessKey().GetAccessKeyId(), keys["tenant-b"].GetSecretAccessKey())
	_, err = wrong.ListQueues(ctx, &awssqs.ListQueuesInput{})
	wantCode(t, "wrong secret", err, "SignatureDoesNotMatch")
	_, err = client("AKQQAAAAAAAAAAAAAAAA", keys["tenant-a"].GetSecretAccessKey()).ListQueues(ctx, &awssqs.ListQueuesInput{})
	wantCode(t, "unknown key", err, "InvalidClientTokenId")

	// A request signed 20 minutes ago (the SDK signs with the current
	// time, so this one is signed by hand).
	body := []byte(`{}`)
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+p.sqsAddr+"/", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	req.Header.Set("X-Amz-Target", "AmazonSQS.ListQueues")
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: keys["tenant-a"].GetAccessKey().GetAccessKeyId(),
		SecretAccessKey: keys["tenant-a"].GetSecretAccessKey()}, req, hex.EncodeToString(sum[:]), "sqs", "eu-west-1", time.Now().Add(-20*time.Minute)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(got), `"__type":"com.amazonaws.sqs#RequestExpired"`) ||
		resp.Header.Get("x-amzn-query-error") != "RequestExpired;Sender" {
		t.Fatalf("20 minutes old: %d %s %q", resp.StatusCode, got, resp.Header.Get("x-amzn-query-error"))
	}

	// The Query protocol (form in, XML out) is verified the same way: a
	// form signed with A's key lists A's queues only; signed with a wrong
	// secret or 20 minutes ago it is refused with SQS's XML error.
	query := func(secret string, at time.Time) (int, string) {
		t.Helper()
		form := []byte(url.Values{"Action": {"ListQueues"}, "Version": {"2012-11-05"}}.Encode())
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+p.sqsAddr+"/", bytes.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		sum := sha256.Sum256(form)
		if err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: keys["tenant-a"].GetAccessKey().GetAccessKeyId(),
			SecretAccessKey: secret}, req, hex.EncodeToString(sum[:]), "sqs", "eu-west-1", at); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := query(keys["tenant-a"].GetSecretAccessKey(), time.Now()); code != 200 ||
		!strings.Contains(body, "<QueueUrl>"+*qa.QueueUrl+"</QueueUrl>") || strings.Contains(body, "payroll") {
		t.Fatalf("signed Query ListQueues: %d %s", code, body)
	}
	for _, tc := range []struct {
		secret string
		at     time.Time
		status int
		code   string
	}{
		{keys["tenant-b"].GetSecretAccessKey(), time.Now(), 403, "SignatureDoesNotMatch"},
		{keys["tenant-a"].GetSecretAccessKey(), time.Now().Add(-20 * time.Minute), 400, "RequestExpired"},
	} {
		code, body := query(tc.secret, tc.at)
		var e xmlError
		if err := xml.Unmarshal([]byte(body), &e); err != nil || code != tc.status || e.Error.Code != tc.code || e.Error.Type != "Sender" {
			t.Fatalf("Query signed %v: %d %s, want %d %s", tc, code, body, tc.status, tc.code)
		}
	}

	rctx, rcancel := adminCtx()
	defer rcancel()
	if _, err := creds.RevokeAccessKey(rctx, &qv1.RevokeAccessKeyRequest{Tenant: "tenant-a", AccessKeyId: keys["tenant-a"].GetAccessKey().GetAccessKeyId()}); err != nil {
		t.Fatal(err)
	}
	_, err = a.ListQueues(ctx, &awssqs.ListQueuesInput{})
	wantCode(t, "revoked key", err, "InvalidClientTokenId")
	if code, body := query(keys["tenant-a"].GetSecretAccessKey(), time.Now()); code != 403 || !strings.Contains(body, "<Code>InvalidClientTokenId</Code>") {
		t.Fatalf("Query with the revoked key: %d %s", code, body)
	}
	if _, err := b.ListQueues(ctx, &awssqs.ListQueuesInput{}); err != nil {
		t.Fatalf("B after A's revoke: %v", err)
	}
}

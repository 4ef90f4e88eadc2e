package tests

import (
	"context"
	"crypto/md5"
	bin "encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	smithy "github.com/aws/smithy-go"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// The aws-sdk-go-v2 SQS client (a test-only dependency: it is the client
// the endpoint must satisfy, with its own request signing, JSON 1.0
// encoding, error decoding and MD5 checks) drives every action against a
// real node.

// startSQS runs a node with its SQS endpoint and returns an SDK client.
func startSQS(t *testing.T) (*proc, *awssqs.Client) {
	t.Helper()
	p := startServe(t, t.TempDir(), "--sqs-addr", "127.0.0.1:0")
	waitReady(t, p.client(t))
	if p.sqsAddr == "" {
		t.Fatal("the banner names no SQS address")
	}
	c := awssqs.New(awssqs.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String("http://" + p.sqsAddr),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
		// The SDK's MD5 checks of message bodies stay on (the default).
	})
	return p, c
}

// apiCode is the SQS error code of err ("" if it is not an API error).
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := apiCode(err); got != code {
		t.Fatalf("%s: got error %v (code %q), want code %q", what, err, got, code)
	}
}

// attrsMD5 is MD5OfMessageAttributes as the SQS documentation specifies
// it, written independently of the server's: names in order, each name,
// type and value length-prefixed, a transport byte before the value.
func attrsMD5(attrs map[string]types.MessageAttributeValue) string {
	names := make([]string, 0, len(attrs))
	for n := range attrs {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf []byte
	lp := func(b []byte) {
		buf = bin.BigEndian.AppendUint32(buf, uint32(len(b)))
		buf = append(buf, b...)
	}
	for _, n := range names {
		a := attrs[n]
		lp([]byte(n))
		lp([]byte(*a.DataType))
		if a.BinaryValue != nil {
			buf = append(buf, 2)
			lp(a.BinaryValue)
		} else {
			buf = append(buf, 1)
			lp([]byte(*a.StringValue))
		}
	}
	sum := md5.Sum(buf)
	return hex.EncodeToString(sum[:])
}

func TestSQSSDKQueues(t *testing.T) {
	p, c := startSQS(t)
	ctx := context.Background()

	created, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("orders"),
		Attributes: map[string]string{"VisibilityTimeout": "45", "DelaySeconds": "0"}, Tags: map[string]string{"team": "payments"}})
	if err != nil {
		t.Fatal(err)
	}
	url := *created.QueueUrl
	if want := "http://" + p.sqsAddr + "/default/orders"; url != want {
		t.Fatalf("queue URL %s, want %s", url, want)
	}
	// Same attributes: the same queue; a different value: QueueAlreadyExists.
	if again, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("orders"),
		Attributes: map[string]string{"VisibilityTimeout": "45"}}); err != nil || *again.QueueUrl != url {
		t.Fatalf("create again with the same attributes: %v", err)
	}
	_, err = c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("orders"), Attributes: map[string]string{"VisibilityTimeout": "46"}})
	wantCode(t, "create with other attributes", err, "QueueAlreadyExists")
	var exists *types.QueueNameExists
	if !errors.As(err, &exists) {
		t.Fatalf("create with other attributes: %T, want *types.QueueNameExists", err)
	}
	_, err = c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("bad"), Attributes: map[string]string{"VisibilityTimeout": "43201"}})
	wantCode(t, "visibility past 12h", err, "InvalidAttributeValue")
	_, err = c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("bad"), Attributes: map[string]string{"Colour": "blue"}})
	wantCode(t, "unknown attribute", err, "InvalidAttributeName")

	got, err := c.GetQueueUrl(ctx, &awssqs.GetQueueUrlInput{QueueName: aws.String("orders")})
	if err != nil || *got.QueueUrl != url {
		t.Fatalf("GetQueueUrl: %v %v", got, err)
	}
	_, err = c.GetQueueUrl(ctx, &awssqs.GetQueueUrlInput{QueueName: aws.String("missing")})
	wantCode(t, "GetQueueUrl of a missing queue", err, "AWS.SimpleQueueService.NonExistentQueue")
	var dne *types.QueueDoesNotExist
	if !errors.As(err, &dne) {
		t.Fatalf("missing queue: %T, want *types.QueueDoesNotExist", err)
	}
	_, err = c.GetQueueUrl(ctx, &awssqs.GetQueueUrlInput{QueueName: aws.String("orders"), QueueOwnerAWSAccountId: aws.String("other")})
	wantCode(t, "another account's queue", err, "AWS.SimpleQueueService.NonExistentQueue")

	for _, n := range []string{"orders-eu", "orders-us", "stock"} {
		if _, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String(n)}); err != nil {
			t.Fatal(err)
		}
	}
	// Prefix and pagination.
	var pages [][]string
	var token *string
	for {
		out, err := c.ListQueues(ctx, &awssqs.ListQueuesInput{QueueNamePrefix: aws.String("orders"), MaxResults: aws.Int32(2), NextToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, out.QueueUrls)
		if token = out.NextToken; token == nil {
			break
		}
	}
	if fmt.Sprint(pages) != fmt.Sprintf("[[%[1]s/orders %[1]s/orders-eu] [%[1]s/orders-us]]", "http://"+p.sqsAddr+"/default") {
		t.Fatalf("ListQueues pages: %v", pages)
	}

	attrs, err := c.GetQueueAttributes(ctx, &awssqs.GetQueueAttributesInput{QueueUrl: &url, AttributeNames: []types.QueueAttributeName{"All"}})
	if err != nil {
		t.Fatal(err)
	}
	a := attrs.Attributes
	if a["VisibilityTimeout"] != "45" || a["QueueArn"] != "arn:aws:sqs:us-east-1:default:orders" || a["MessageRetentionPeriod"] != "345600" ||
		a["ApproximateNumberOfMessages"] != "0" || a["CreatedTimestamp"] == "" || a["FifoQueue"] != "" ||
		a["LastModifiedTimestamp"] != a["CreatedTimestamp"] {
		t.Fatalf("attributes: %v", a)
	}
	createdAt := a["CreatedTimestamp"]
	if _, err := c.SetQueueAttributes(ctx, &awssqs.SetQueueAttributesInput{QueueUrl: &url,
		Attributes: map[string]string{"VisibilityTimeout": "10", "ReceiveMessageWaitTimeSeconds": "3", "MaximumMessageSize": "2048"}}); err != nil {
		t.Fatal(err)
	}
	attrs, err = c.GetQueueAttributes(ctx, &awssqs.GetQueueAttributesInput{QueueUrl: &url,
		AttributeNames: []types.QueueAttributeName{"VisibilityTimeout", "ReceiveMessageWaitTimeSeconds", "MaximumMessageSize"}})
	if err != nil || len(attrs.Attributes) != 3 || attrs.Attributes["VisibilityTimeout"] != "10" ||
		attrs.Attributes["ReceiveMessageWaitTimeSeconds"] != "3" || attrs.Attributes["MaximumMessageSize"] != "2048" {
		t.Fatalf("after SetQueueAttributes: %v %v", attrs, err)
	}
	// LastModifiedTimestamp moves with SetQueueAttributes (seconds: it may
	// still equal the creation second), CreatedTimestamp does not.
	attrs, err = c.GetQueueAttributes(ctx, &awssqs.GetQueueAttributesInput{QueueUrl: &url,
		AttributeNames: []types.QueueAttributeName{"CreatedTimestamp", "LastModifiedTimestamp"}})
	if err != nil || attrs.Attributes["CreatedTimestamp"] != createdAt || attrs.Attributes["LastModifiedTimestamp"] < createdAt ||
		len(attrs.Attributes["LastModifiedTimestamp"]) != len(createdAt) {
		t.Fatalf("timestamps after SetQueueAttributes: %v %v (created %s)", attrs, err, createdAt)
	}
	_, err = c.SetQueueAttributes(ctx, &awssqs.SetQueueAttributesInput{QueueUrl: &url, Attributes: map[string]string{"DelaySeconds": "901"}})
	wantCode(t, "DelaySeconds past SQS's 15 minutes", err, "InvalidAttributeValue")
	// A message over the queue's MaximumMessageSize is refused.
	_, err = c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(strings.Repeat("x", 3000))})
	wantCode(t, "message over MaximumMessageSize", err, "InvalidParameterValue")

	tags, err := c.ListQueueTags(ctx, &awssqs.ListQueueTagsInput{QueueUrl: &url})
	if err != nil || tags.Tags["team"] != "payments" || len(tags.Tags) != 1 {
		t.Fatalf("ListQueueTags: %v %v", tags, err)
	}

	if _, err := c.TagQueue(ctx, &awssqs.TagQueueInput{QueueUrl: &url, Tags: map[string]string{"env": "prod", "team": "billing"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UntagQueue(ctx, &awssqs.UntagQueueInput{QueueUrl: &url, TagKeys: []string{"env", "absent"}}); err != nil {
		t.Fatal(err)
	}
	tags, err = c.ListQueueTags(ctx, &awssqs.ListQueueTagsInput{QueueUrl: &url})
	if err != nil || fmt.Sprint(tags.Tags) != "map[team:billing]" {
		t.Fatalf("tags after TagQueue and UntagQueue: %v %v", tags, err)
	}
	// Tagging keeps the attributes.
	if a, err := c.GetQueueAttributes(ctx, &awssqs.GetQueueAttributesInput{QueueUrl: &url,
		AttributeNames: []types.QueueAttributeName{"VisibilityTimeout"}}); err != nil || a.Attributes["VisibilityTimeout"] != "10" {
		t.Fatalf("attributes after tagging: %v %v", a, err)
	}
	many := map[string]string{}
	for i := range 50 {
		many[fmt.Sprint("k", i)] = "v"
	}
	_, err = c.TagQueue(ctx, &awssqs.TagQueueInput{QueueUrl: &url, Tags: many})
	wantCode(t, "more than 50 tags in all", err, "InvalidParameterValue")

	if _, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PurgeQueue(ctx, &awssqs.PurgeQueueInput{QueueUrl: &url}); err != nil {
		t.Fatal(err)
	}
	r, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: &url, WaitTimeSeconds: 0})
	if err != nil || len(r.Messages) != 0 {
		t.Fatalf("receive after purge: %v %v", r, err)
	}
	if _, err := c.DeleteQueue(ctx, &awssqs.DeleteQueueInput{QueueUrl: &url}); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetQueueUrl(ctx, &awssqs.GetQueueUrlInput{QueueName: aws.String("orders")})
	wantCode(t, "deleted queue", err, "AWS.SimpleQueueService.NonExistentQueue")
	_, err = c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("x")})
	wantCode(t, "send to a deleted queue", err, "AWS.SimpleQueueService.NonExistentQueue")
}

func TestSQSSDKMessages(t *testing.T) {
	_, c := startSQS(t)
	ctx := context.Background()
	q, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("work"), Attributes: map[string]string{"VisibilityTimeout": "30"}})
	if err != nil {
		t.Fatal(err)
	}
	url := q.QueueUrl

	// Typed attributes keep their types; MD5OfMessageAttributes is SQS's.
	sent := map[string]types.MessageAttributeValue{
		"kind":   {DataType: aws.String("String"), StringValue: aws.String("invoice")},
		"amount": {DataType: aws.String("Number"), StringValue: aws.String("12.50")},
		"ratio":  {DataType: aws.String("Number.float"), StringValue: aws.String("-0.5e3")},
		"blob":   {DataType: aws.String("Binary"), BinaryValue: []byte{0, 1, 2, 0xff}},
		"thumb":  {DataType: aws.String("Binary.png"), BinaryValue: []byte("png")},
		"ord.id": {DataType: aws.String("String"), StringValue: aws.String("A-17")},
	}
	body := "héllo wörld ✓"
	out, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: url, MessageBody: &body, MessageAttributes: sent})
	if err != nil {
		t.Fatal(err)
	}
	if *out.MD5OfMessageAttributes != attrsMD5(sent) {
		t.Fatalf("MD5OfMessageAttributes %s, want %s", *out.MD5OfMessageAttributes, attrsMD5(sent))
	}
	_, err = c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: url, MessageBody: aws.String("x"),
		MessageAttributes: map[string]types.MessageAttributeValue{"n": {DataType: aws.String("Number"), StringValue: aws.String("twelve")}}})
	wantCode(t, "a Number that is not a number", err, "InvalidParameterValue")
	_, err = c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: url, MessageBody: aws.String("bad \x01 char")})
	wantCode(t, "a body with a control character", err, "InvalidMessageContents")

	r, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: url, MaxNumberOfMessages: 10,
		MessageAttributeNames: []string{"All"}, MessageSystemAttributeNames: []types.MessageSystemAttributeName{"All"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Messages) != 1 {
		t.Fatalf("received %d messages, want 1", len(r.Messages))
	}
	m := r.Messages[0]
	if *m.Body != body || *m.MessageId != *out.MessageId || *m.MD5OfMessageAttributes != attrsMD5(sent) {
		t.Fatalf("received %+v", m)
	}
	for n, a := range sent {
		g := m.MessageAttributes[n]
		if *g.DataType != *a.DataType || string(g.BinaryValue) != string(a.BinaryValue) || aws.ToString(g.StringValue) != aws.ToString(a.StringValue) {
			t.Fatalf("attribute %s: got %+v, want %+v", n, g, a)
		}
	}
	if m.Attributes["ApproximateReceiveCount"] != "1" || m.Attributes["SentTimestamp"] == "" || m.Attributes["SenderId"] != "default" {
		t.Fatalf("system attributes %v", m.Attributes)
	}
	// Selection by name and by prefix ("ord.*": names starting "ord.").
	if _, err := c.ChangeMessageVisibility(ctx, &awssqs.ChangeMessageVisibilityInput{QueueUrl: url, ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: 0}); err != nil {
		t.Fatal(err)
	}
	r, err = c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: url, MessageAttributeNames: []string{"ord.*", "kind"}, WaitTimeSeconds: 5})
	if err != nil || len(r.Messages) != 1 {
		t.Fatalf("receive again: %v %v", r, err)
	}
	m = r.Messages[0]
	want := map[string]types.MessageAttributeValue{"ord.id": sent["ord.id"], "kind": sent["kind"]}
	if len(m.MessageAttributes) != 2 || *m.MD5OfMessageAttributes != attrsMD5(want) {
		t.Fatalf("selected attributes %v (md5 %s)", m.MessageAttributes, aws.ToString(m.MD5OfMessageAttributes))
	}
	if _, err := c.DeleteMessage(ctx, &awssqs.DeleteMessageInput{QueueUrl: url, ReceiptHandle: m.ReceiptHandle}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteMessage(ctx, &awssqs.DeleteMessageInput{QueueUrl: url, ReceiptHandle: aws.String("not-a-handle")})
	wantCode(t, "a garbage receipt handle", err, "ReceiptHandleIsInvalid")
	_, err = c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: url, MaxNumberOfMessages: 11})
	wantCode(t, "MaxNumberOfMessages 11", err, "InvalidParameterValue")

	// A batch of 11 is refused whole: nothing is sent.
	var eleven []types.SendMessageBatchRequestEntry
	for i := range 11 {
		eleven = append(eleven, types.SendMessageBatchRequestEntry{Id: aws.String(fmt.Sprint("m", i)), MessageBody: aws.String("b")})
	}
	_, err = c.SendMessageBatch(ctx, &awssqs.SendMessageBatchInput{QueueUrl: url, Entries: eleven})
	wantCode(t, "a batch of 11", err, "AWS.SimpleQueueService.TooManyEntriesInBatchRequest")
	var tooMany *types.TooManyEntriesInBatchRequest
	if !errors.As(err, &tooMany) {
		t.Fatalf("batch of 11: %T", err)
	}
	if n := approx(t, c, url); n != "0" {
		t.Fatalf("after the refused batch the queue holds %s messages, want 0", n)
	}
	_, err = c.SendMessageBatch(ctx, &awssqs.SendMessageBatchInput{QueueUrl: url, Entries: []types.SendMessageBatchRequestEntry{}})
	wantCode(t, "an empty batch", err, "AWS.SimpleQueueService.EmptyBatchRequest")
	_, err = c.SendMessageBatch(ctx, &awssqs.SendMessageBatchInput{QueueUrl: url, Entries: []types.SendMessageBatchRequestEntry{
		{Id: aws.String("a"), MessageBody: aws.String("1")}, {Id: aws.String("a"), MessageBody: aws.String("2")}}})
	wantCode(t, "repeated ids", err, "AWS.SimpleQueueService.BatchEntryIdsNotDistinct")
	_, err = c.SendMessageBatch(ctx, &awssqs.SendMessageBatchInput{QueueUrl: url, Entries: []types.SendMessageBatchRequestEntry{
		{Id: aws.String("no spaces"), MessageBody: aws.String("1")}}})
	wantCode(t, "a bad entry id", err, "AWS.SimpleQueueService.InvalidBatchEntryId")

	var ten []types.SendMessageBatchRequestEntry
	for i := range 10 {
		ten = append(ten, types.SendMessageBatchRequestEntry{Id: aws.String(fmt.Sprint("m", i)), MessageBody: aws.String(fmt.Sprint("body ", i)),
			MessageAttributes: map[string]types.MessageAttributeValue{"i": {DataType: aws.String("Number"), StringValue: aws.String(fmt.Sprint(i))}}})
	}
	bo, err := c.SendMessageBatch(ctx, &awssqs.SendMessageBatchInput{QueueUrl: url, Entries: ten})
	if err != nil || len(bo.Successful) != 10 || len(bo.Failed) != 0 {
		t.Fatalf("batch of 10: %+v %v", bo, err)
	}
	for _, s := range bo.Successful {
		var i int
		fmt.Sscanf(*s.Id, "m%d", &i)
		if *s.MD5OfMessageAttributes != attrsMD5(ten[i].MessageAttributes) {
			t.Fatalf("entry %s: MD5OfMessageAttributes %s", *s.Id, *s.MD5OfMessageAttributes)
		}
	}
	var handles []string
	for len(handles) < 10 {
		r, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 5})
		if err != nil || len(r.Messages) == 0 {
			t.Fatalf("receive the batch: %v %v (have %d)", r, err, len(handles))
		}
		for _, m := range r.Messages {
			handles = append(handles, *m.ReceiptHandle)
		}
	}
	cv := []types.ChangeMessageVisibilityBatchRequestEntry{{Id: aws.String("bad"), ReceiptHandle: aws.String("garbage"), VisibilityTimeout: 60}}
	for i, h := range handles[:5] {
		cv = append(cv, types.ChangeMessageVisibilityBatchRequestEntry{Id: aws.String(fmt.Sprint("c", i)), ReceiptHandle: aws.String(h), VisibilityTimeout: 0})
	}
	co, err := c.ChangeMessageVisibilityBatch(ctx, &awssqs.ChangeMessageVisibilityBatchInput{QueueUrl: url, Entries: cv})
	if err != nil || len(co.Successful) != 5 || len(co.Failed) != 1 || *co.Failed[0].Code != "ReceiptHandleIsInvalid" || !co.Failed[0].SenderFault {
		t.Fatalf("ChangeMessageVisibilityBatch: %+v %v", co, err)
	}
	var del []types.DeleteMessageBatchRequestEntry
	for i, h := range handles[5:] {
		del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(fmt.Sprint("d", i)), ReceiptHandle: aws.String(h)})
	}
	do, err := c.DeleteMessageBatch(ctx, &awssqs.DeleteMessageBatchInput{QueueUrl: url, Entries: del})
	if err != nil || len(do.Successful) != 5 || len(do.Failed) != 0 {
		t.Fatalf("DeleteMessageBatch: %+v %v", do, err)
	}
	// The five made visible again come back; the five deleted do not.
	var again int
	for again < 5 {
		r, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 5})
		if err != nil || len(r.Messages) == 0 {
			t.Fatalf("receive the nacked five: %v %v (have %d)", r, err, again)
		}
		again += len(r.Messages)
		if again > 5 {
			t.Fatalf("received %d, want 5", again)
		}
	}
}

// Message tags travel as the SQS message attribute named by
// --sqs-tags-attribute: the broker filters on them like on tags sent
// through gRPC, and a receive shows them as that attribute again.
func TestSQSSDKTagsAttribute(t *testing.T) {
	p := startServe(t, t.TempDir(), "--sqs-addr", "127.0.0.1:0", "--sqs-tags-attribute", "labels")
	grpcc := p.client(t)
	waitReady(t, grpcc)
	c := awssqs.New(awssqs.Options{Region: "us-east-1", BaseEndpoint: aws.String("http://" + p.sqsAddr),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "")})
	ctx := context.Background()
	q, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("tagged")})
	if err != nil {
		t.Fatal(err)
	}
	for body, labels := range map[string]string{"red one": "red,big", "blue one": "blue"} {
		if _, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String(body),
			MessageAttributes: map[string]types.MessageAttributeValue{"labels": {DataType: aws.String("String"), StringValue: aws.String(labels)}}}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := grpcc.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "tagged", MaxMessages: 10,
		TagFilter: &qv1.TagFilter{All: []string{"red"}}, VisibilityTimeout: durationpb.New(0)})
	if err != nil || len(got.Messages) != 1 || got.Messages[0].Body != "red one" || strings.Join(got.Messages[0].Tags, ",") != "red,big" ||
		len(got.Messages[0].Attributes) != 0 {
		t.Fatalf("gRPC receive by tag: %v %v", got, err)
	}
	r, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, MaxNumberOfMessages: 10, MessageAttributeNames: []string{"labels"}})
	if err != nil || len(r.Messages) != 2 {
		t.Fatalf("SQS receive: %v %v", r, err)
	}
	for _, m := range r.Messages {
		want := map[string]string{"red one": "red,big", "blue one": "blue"}[*m.Body]
		if aws.ToString(m.MessageAttributes["labels"].StringValue) != want || *m.MD5OfMessageAttributes != attrsMD5(m.MessageAttributes) {
			t.Fatalf("%s: attributes %v", *m.Body, m.MessageAttributes)
		}
	}
}

// approx is the queue's ApproximateNumberOfMessages.
func approx(t *testing.T, c *awssqs.Client, url *string) string {
	t.Helper()
	a, err := c.GetQueueAttributes(context.Background(), &awssqs.GetQueueAttributesInput{QueueUrl: url,
		AttributeNames: []types.QueueAttributeName{"ApproximateNumberOfMessages"}})
	if err != nil {
		t.Fatal(err)
	}
	return a.Attributes["ApproximateNumberOfMessages"]
}

func TestSQSSDKLongPoll(t *testing.T) {
	_, c := startSQS(t)
	ctx := context.Background()
	q, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("poll")})
	if err != nil {
		t.Fatal(err)
	}
	// An empty queue: a 2 s long poll waits it out and answers empty.
	start := time.Now()
	r, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 2})
	if err != nil || len(r.Messages) != 0 {
		t.Fatalf("long poll on an empty queue: %v %v", r, err)
	}
	if waited := time.Since(start); waited < 1900*time.Millisecond {
		t.Fatalf("a 2 s long poll answered after %v", waited)
	}
	// A message sent during a long poll ends it.
	got := make(chan *awssqs.ReceiveMessageOutput, 1)
	errc := make(chan error, 1)
	go func() {
		r, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 20})
		got <- r
		errc <- err
	}()
	if _, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("wake")}); err != nil {
		t.Fatal(err)
	}
	r = <-got
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if len(r.Messages) != 1 || *r.Messages[0].Body != "wake" {
		// The poll may have started after the send and found it at once;
		// either way it returns the message.
		t.Fatalf("long poll got %+v", r.Messages)
	}
}

func TestSQSSDKFIFO(t *testing.T) {
	_, c := startSQS(t)
	ctx := context.Background()
	q, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("jobs.fifo"),
		Attributes: map[string]string{"FifoQueue": "true", "ContentBasedDeduplication": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("plain"), Attributes: map[string]string{"FifoQueue": "true"}})
	wantCode(t, "FifoQueue without .fifo", err, "InvalidParameterValue")
	a, err := c.GetQueueAttributes(ctx, &awssqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl, AttributeNames: []types.QueueAttributeName{"All"}})
	if err != nil || a.Attributes["FifoQueue"] != "true" || a.Attributes["ContentBasedDeduplication"] != "true" {
		t.Fatalf("FIFO attributes: %v %v", a, err)
	}
	first, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("one"), MessageGroupId: aws.String("g1")})
	if err != nil || first.SequenceNumber == nil {
		t.Fatalf("FIFO send: %+v %v", first, err)
	}
	dup, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("one"), MessageGroupId: aws.String("g1")})
	if err != nil || *dup.MessageId != *first.MessageId {
		t.Fatalf("content-based duplicate: %v %v, want id %s", dup, err, *first.MessageId)
	}
	if _, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("two"), MessageGroupId: aws.String("g1"),
		MessageDeduplicationId: aws.String("d2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("other"), MessageGroupId: aws.String("g1"),
		MessageDeduplicationId: aws.String("d2")}); err != nil {
		t.Fatal(err)
	}
	strict, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("strict.fifo"), Attributes: map[string]string{"FifoQueue": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: strict.QueueUrl, MessageBody: aws.String("x"), MessageGroupId: aws.String("g")})
	wantCode(t, "no deduplication id without content-based deduplication", err, "InvalidParameterValue")
	_, err = c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: strict.QueueUrl, MessageBody: aws.String("x"), MessageGroupId: aws.String("g"),
		MessageDeduplicationId: aws.String("d"), DelaySeconds: 5})
	wantCode(t, "a per-message delay on a FIFO queue", err, "InvalidParameterValue")
	_, err = c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("no group")})
	if apiCode(err) != "InvalidParameterValue" && apiCode(err) != "MissingParameter" {
		t.Fatalf("FIFO send without a group: %v", err)
	}
	r, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, MaxNumberOfMessages: 10,
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{"MessageGroupId", "SequenceNumber"}})
	if err != nil {
		t.Fatal(err)
	}
	var bodies []string
	for _, m := range r.Messages {
		bodies = append(bodies, *m.Body)
		if m.Attributes["MessageGroupId"] != "g1" || m.Attributes["SequenceNumber"] == "" {
			t.Fatalf("FIFO system attributes %v", m.Attributes)
		}
	}
	if strings.Join(bodies, ",") != "one,two" {
		t.Fatalf("FIFO receive %v, want one,two (deduplicated, in order)", bodies)
	}
}

func TestSQSSDKDeadLetterAndMoveTask(t *testing.T) {
	_, c := startSQS(t)
	ctx := context.Background()
	dlq, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("dlq")})
	if err != nil {
		t.Fatal(err)
	}
	da, err := c.GetQueueAttributes(ctx, &awssqs.GetQueueAttributesInput{QueueUrl: dlq.QueueUrl, AttributeNames: []types.QueueAttributeName{"QueueArn"}})
	if err != nil {
		t.Fatal(err)
	}
	dlqArn := da.Attributes["QueueArn"]
	policy := `{"deadLetterTargetArn":"` + dlqArn + `","maxReceiveCount":"1"}`
	src, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("src"), Attributes: map[string]string{"RedrivePolicy": policy}})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := c.GetQueueAttributes(ctx, &awssqs.GetQueueAttributesInput{QueueUrl: src.QueueUrl, AttributeNames: []types.QueueAttributeName{"RedrivePolicy"}})
	if err != nil || !strings.Contains(sa.Attributes["RedrivePolicy"], dlqArn) || !strings.Contains(sa.Attributes["RedrivePolicy"], `"maxReceiveCount":1`) {
		t.Fatalf("RedrivePolicy read back: %v %v", sa, err)
	}
	_, err = c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("bad-dlq"), Attributes: map[string]string{
		"RedrivePolicy": `{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:default:missing","maxReceiveCount":3}`}})
	wantCode(t, "a dead-letter target that does not exist", err, "InvalidParameterValue")

	srcs, err := c.ListDeadLetterSourceQueues(ctx, &awssqs.ListDeadLetterSourceQueuesInput{QueueUrl: dlq.QueueUrl})
	if err != nil || len(srcs.QueueUrls) != 1 || srcs.QueueUrls[0] != *src.QueueUrl {
		t.Fatalf("ListDeadLetterSourceQueues: %v %v", srcs, err)
	}

	if _, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: src.QueueUrl, MessageBody: aws.String("poison")}); err != nil {
		t.Fatal(err)
	}
	r, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: src.QueueUrl, WaitTimeSeconds: 5})
	if err != nil || len(r.Messages) != 1 {
		t.Fatalf("first receive: %v %v", r, err)
	}
	if _, err := c.ChangeMessageVisibility(ctx, &awssqs.ChangeMessageVisibilityInput{QueueUrl: src.QueueUrl, ReceiptHandle: r.Messages[0].ReceiptHandle}); err != nil {
		t.Fatal(err)
	}
	// The second receive would exceed maxReceiveCount: the message moves.
	r, err = c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: src.QueueUrl, WaitTimeSeconds: 1})
	if err != nil || len(r.Messages) != 0 {
		t.Fatalf("second receive: %v %v", r, err)
	}
	r, err = c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: dlq.QueueUrl, WaitTimeSeconds: 10,
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{"DeadLetterQueueSourceArn"}})
	if err != nil || len(r.Messages) != 1 || *r.Messages[0].Body != "poison" ||
		r.Messages[0].Attributes["DeadLetterQueueSourceArn"] != "arn:aws:sqs:us-east-1:default:src" {
		t.Fatalf("dead-lettered message: %+v %v", r, err)
	}
	if _, err := c.ChangeMessageVisibility(ctx, &awssqs.ChangeMessageVisibilityInput{QueueUrl: dlq.QueueUrl, ReceiptHandle: r.Messages[0].ReceiptHandle}); err != nil {
		t.Fatal(err)
	}

	// A move task takes it back to its source queue.
	task, err := c.StartMessageMoveTask(ctx, &awssqs.StartMessageMoveTaskInput{SourceArn: &dlqArn})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := c.ListMessageMoveTasks(ctx, &awssqs.ListMessageMoveTasksInput{SourceArn: &dlqArn})
		if err != nil || len(l.Results) != 1 {
			t.Fatalf("ListMessageMoveTasks: %v %v", l, err)
		}
		if s := aws.ToString(l.Results[0].Status); s == "COMPLETED" {
			if l.Results[0].ApproximateNumberOfMessagesMoved != 1 {
				t.Fatalf("task moved %d messages, want 1", l.Results[0].ApproximateNumberOfMessagesMoved)
			}
			break
		} else if s != "RUNNING" || time.Now().After(deadline) {
			t.Fatalf("task status %s", s)
		}
		time.Sleep(50 * time.Millisecond) // polling a status, with a deadline
	}
	_, err = c.CancelMessageMoveTask(ctx, &awssqs.CancelMessageMoveTaskInput{TaskHandle: task.TaskHandle})
	wantCode(t, "cancel a completed task", err, "ResourceNotFoundException")
	r, err = c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: src.QueueUrl, WaitTimeSeconds: 10})
	if err != nil || len(r.Messages) != 1 || *r.Messages[0].Body != "poison" {
		t.Fatalf("redriven message: %+v %v", r, err)
	}
}

// SQS calls show in the same metrics as gRPC calls: the gRPC server
// series of QueueService methods and the per-queue message counters; the
// SQS endpoint's own request series counts also what it refuses before
// any QueueService call (here a batch of 11), by action, protocol and code.
func TestSQSMetrics(t *testing.T) {
	p, c := startSQS(t)
	ctx := context.Background()
	q, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("metered")})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("m")}); err != nil {
			t.Fatal(err)
		}
	}
	var eleven []types.SendMessageBatchRequestEntry
	for i := range 11 {
		eleven = append(eleven, types.SendMessageBatchRequestEntry{Id: aws.String(fmt.Sprint("m", i)), MessageBody: aws.String("b")})
	}
	_, err = c.SendMessageBatch(ctx, &awssqs.SendMessageBatchInput{QueueUrl: q.QueueUrl, Entries: eleven})
	wantCode(t, "a batch of 11", err, "AWS.SimpleQueueService.TooManyEntriesInBatchRequest")
	if code, body := queryCall(t, p.sqsAddr, url.Values{"Action": {"ListQueues"}}); code != 200 {
		t.Fatalf("Query ListQueues: %d %s", code, body)
	}
	resp, err := http.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	var sent, rpc bool
	sqsSeries := map[string]bool{
		`quorumq_sqs_request_duration_seconds_count{sqs_action="SendMessage",sqs_error_code="",sqs_protocol="json"} 3`:                                                         false,
		`quorumq_sqs_request_duration_seconds_count{sqs_action="SendMessageBatch",sqs_error_code="AWS.SimpleQueueService.TooManyEntriesInBatchRequest",sqs_protocol="json"} 1`: false,
		`quorumq_sqs_request_duration_seconds_count{sqs_action="ListQueues",sqs_error_code="",sqs_protocol="query"} 1`:                                                         false,
	}
	for _, line := range strings.Split(text, "\n") {
		if _, ok := sqsSeries[line]; ok {
			sqsSeries[line] = true
		}
		if strings.HasPrefix(line, "quorumq_messages_sent_total{") && strings.Contains(line, `queue="metered"`) && strings.HasSuffix(line, " 3") {
			sent = true
		}
		if strings.HasPrefix(line, "quorumq_rpc_server_call_duration_seconds_count{") &&
			strings.Contains(line, `rpc_method="quorumq.v1.QueueService/SendMessage"`) && strings.HasSuffix(line, " 3") {
			rpc = true
		}
	}
	if !sent || !rpc {
		t.Fatalf("metrics after 3 SQS sends: sent counter %v, gRPC server series %v\n%s", sent, rpc, text)
	}
	for line, found := range sqsSeries {
		if !found {
			t.Fatalf("metrics lack %s\n%s", line, text)
		}
	}
}

// Every node serves SQS, API-tier nodes included, and routes like gRPC:
// a queue created through the API node is used through storage nodes.
func TestSQSAPITierAndCluster(t *testing.T) {
	c := startCluster(t, 3, "--shards", "3", "--sqs-addr", "127.0.0.1:0")
	for id := uint64(1); id <= 3; id++ {
		waitReady(t, c.client(id))
	}
	api := c.startAPINode(100)
	client := func(p *proc) *awssqs.Client {
		if p.sqsAddr == "" {
			t.Fatal("a node without an SQS address")
		}
		return awssqs.New(awssqs.Options{Region: "us-east-1", BaseEndpoint: aws.String("http://" + p.sqsAddr),
			Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "")})
	}
	ctx := context.Background()
	viaAPI := client(api)
	q, err := viaAPI.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("spread")})
	if err != nil {
		t.Fatal(err)
	}
	for id := uint64(1); id <= 3; id++ {
		// The URL names the node that answered; every node takes any URL
		// of the tenant's queue.
		if _, err := client(c.procs[id]).SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String(fmt.Sprint("via ", id))}); err != nil {
			t.Fatalf("send via node %d: %v", id, err)
		}
	}
	got := map[string]bool{}
	for len(got) < 3 {
		r, err := viaAPI.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 5})
		if err != nil || len(r.Messages) == 0 {
			t.Fatalf("receive via the API node: %v %v (have %v)", r, err, got)
		}
		for _, m := range r.Messages {
			got[*m.Body] = true
			if _, err := viaAPI.DeleteMessage(ctx, &awssqs.DeleteMessageInput{QueueUrl: q.QueueUrl, ReceiptHandle: m.ReceiptHandle}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(got) != 3 {
		t.Fatalf("received %v", got)
	}
}

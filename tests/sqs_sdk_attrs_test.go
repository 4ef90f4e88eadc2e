package tests

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// The queue attributes TestSQSSDKQueues leaves out (MessageRetentionPeriod,
// a queue delay, RedriveAllowPolicy) and the Approximate* counts they
// move: a delayed message counts as delayed, a leased one as not visible.
func TestSQSSDKQueueAttributesAndCounts(t *testing.T) {
	_, c := startSQS(t)
	ctx := context.Background()
	q, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("counted"),
		Attributes: map[string]string{"RedriveAllowPolicy": `{"redrivePermission":"allowAll"}`}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetQueueAttributes(ctx, &awssqs.SetQueueAttributesInput{QueueUrl: q.QueueUrl,
		Attributes: map[string]string{"MessageRetentionPeriod": "120", "DelaySeconds": "600"}}); err != nil {
		t.Fatal(err)
	}
	_, err = c.SetQueueAttributes(ctx, &awssqs.SetQueueAttributesInput{QueueUrl: q.QueueUrl,
		Attributes: map[string]string{"RedriveAllowPolicy": `{"redrivePermission":"denyAll"}`}})
	wantCode(t, "RedriveAllowPolicy denyAll", err, "InvalidAttributeValue")
	_, err = c.SetQueueAttributes(ctx, &awssqs.SetQueueAttributesInput{QueueUrl: q.QueueUrl,
		Attributes: map[string]string{"MessageRetentionPeriod": "59"}})
	wantCode(t, "MessageRetentionPeriod under a minute", err, "InvalidAttributeValue")

	counts := func() map[string]string {
		t.Helper()
		a, err := c.GetQueueAttributes(ctx, &awssqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl,
			AttributeNames: []types.QueueAttributeName{"All"}})
		if err != nil {
			t.Fatal(err)
		}
		return a.Attributes
	}
	a := counts()
	if a["MessageRetentionPeriod"] != "120" || a["DelaySeconds"] != "600" || a["RedriveAllowPolicy"] != `{"redrivePermission":"allowAll"}` {
		t.Fatalf("attributes after SetQueueAttributes: %v", a)
	}

	// quorumq keeps no message past its retention, so a delay past it is
	// refused (sqs/README.md lists this difference from SQS).
	_, err = c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("x"), DelaySeconds: 900})
	wantCode(t, "a delay past the retention", err, "InvalidParameterValue")
	if _, err := c.SetQueueAttributes(ctx, &awssqs.SetQueueAttributesInput{QueueUrl: q.QueueUrl,
		Attributes: map[string]string{"MessageRetentionPeriod": "3600"}}); err != nil {
		t.Fatal(err)
	}

	// The queue's delay holds the first message, the message's own delay
	// the second; after the queue's delay goes back to 0 the third is
	// visible at once.
	if _, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("later")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("latest"), DelaySeconds: 900}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetQueueAttributes(ctx, &awssqs.SetQueueAttributesInput{QueueUrl: q.QueueUrl,
		Attributes: map[string]string{"DelaySeconds": "0"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("visible")}); err != nil {
		t.Fatal(err)
	}
	a = counts()
	if a["ApproximateNumberOfMessagesDelayed"] != "2" || a["ApproximateNumberOfMessages"] != "1" || a["ApproximateNumberOfMessagesNotVisible"] != "0" {
		t.Fatalf("counts with two delayed and one visible: %v", a)
	}
	r, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 5})
	if err != nil || len(r.Messages) != 1 || *r.Messages[0].Body != "visible" {
		t.Fatalf("receive: %+v %v", r, err)
	}
	a = counts()
	if a["ApproximateNumberOfMessagesDelayed"] != "2" || a["ApproximateNumberOfMessages"] != "0" || a["ApproximateNumberOfMessagesNotVisible"] != "1" {
		t.Fatalf("counts with one leased: %v", a)
	}
}

// ReceiveMessage's own VisibilityTimeout overrides the queue's, the
// deprecated AttributeNames still selects system attributes, and a
// ReceiveRequestAttemptId retried returns the messages of the first try.
func TestSQSSDKReceiveOptions(t *testing.T) {
	_, c := startSQS(t)
	ctx := context.Background()
	q, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("leases"),
		Attributes: map[string]string{"VisibilityTimeout": "600"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("short lease")}); err != nil {
		t.Fatal(err)
	}
	r, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, VisibilityTimeout: 1, WaitTimeSeconds: 5})
	if err != nil || len(r.Messages) != 1 {
		t.Fatalf("first receive: %+v %v", r, err)
	}
	// Under the queue's 600 s it would not come back within this poll.
	// AttributeNames is the deprecated member older code still sends.
	in := &awssqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 20}
	//lint:ignore SA1019 the deprecated member is what is tested
	in.AttributeNames = []types.QueueAttributeName{"ApproximateReceiveCount"}
	r, err = c.ReceiveMessage(ctx, in)
	if err != nil || len(r.Messages) != 1 || r.Messages[0].Attributes["ApproximateReceiveCount"] != "2" {
		t.Fatalf("receive after the 1 s lease: %+v %v", r, err)
	}

	f, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("attempts.fifo"),
		Attributes: map[string]string{"FifoQueue": "true", "ContentBasedDeduplication": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"a", "b"} {
		if _, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: f.QueueUrl, MessageBody: aws.String(b), MessageGroupId: aws.String("g")}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: f.QueueUrl, MaxNumberOfMessages: 10, ReceiveRequestAttemptId: aws.String("try-1")})
	if err != nil || len(first.Messages) != 2 {
		t.Fatalf("receive with an attempt id: %+v %v", first, err)
	}
	retry, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: f.QueueUrl, MaxNumberOfMessages: 10, ReceiveRequestAttemptId: aws.String("try-1")})
	if err != nil || len(retry.Messages) != 2 || *retry.Messages[0].MessageId != *first.Messages[0].MessageId ||
		*retry.Messages[1].MessageId != *first.Messages[1].MessageId {
		t.Fatalf("retried attempt: %+v %v, want the messages of the first try", retry, err)
	}
	other, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: f.QueueUrl, MaxNumberOfMessages: 10, ReceiveRequestAttemptId: aws.String("try-2")})
	if err != nil || len(other.Messages) != 0 {
		t.Fatalf("another attempt while the group is leased: %+v %v", other, err)
	}
	_, err = c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: f.QueueUrl, ReceiveRequestAttemptId: aws.String(strings.Repeat("x", 129))})
	if apiCode(err) != "InvalidParameterValue" {
		t.Fatalf("an attempt id of 129 characters: %v", err)
	}
}

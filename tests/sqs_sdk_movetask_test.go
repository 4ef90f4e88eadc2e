package tests

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// A move task to a DestinationArn at 1 message a second: a second task on
// the same source is refused while it runs, CancelMessageMoveTask stops it
// (CANCELLED, fewer than all moved) and cancelling it again is
// ResourceNotFoundException.
func TestSQSSDKMoveTaskCancel(t *testing.T) {
	_, c := startSQS(t)
	ctx := context.Background()
	arn := func(url *string) string {
		t.Helper()
		a, err := c.GetQueueAttributes(ctx, &awssqs.GetQueueAttributesInput{QueueUrl: url, AttributeNames: []types.QueueAttributeName{"QueueArn"}})
		if err != nil {
			t.Fatal(err)
		}
		return a.Attributes["QueueArn"]
	}
	held, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("held")})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("out")})
	if err != nil {
		t.Fatal(err)
	}
	var ten []types.SendMessageBatchRequestEntry
	for i := range 10 {
		ten = append(ten, types.SendMessageBatchRequestEntry{Id: aws.String(fmt.Sprint("m", i)), MessageBody: aws.String("b")})
	}
	if b, err := c.SendMessageBatch(ctx, &awssqs.SendMessageBatchInput{QueueUrl: held.QueueUrl, Entries: ten}); err != nil || len(b.Successful) != 10 {
		t.Fatalf("send 10: %+v %v", b, err)
	}
	heldArn, outArn := arn(held.QueueUrl), arn(out.QueueUrl)
	task, err := c.StartMessageMoveTask(ctx, &awssqs.StartMessageMoveTaskInput{SourceArn: &heldArn, DestinationArn: &outArn,
		MaxNumberOfMessagesPerSecond: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.StartMessageMoveTask(ctx, &awssqs.StartMessageMoveTaskInput{SourceArn: &heldArn, DestinationArn: &outArn})
	wantCode(t, "a second task on the source", err, "AWS.SimpleQueueService.UnsupportedOperation")
	if _, err := c.CancelMessageMoveTask(ctx, &awssqs.CancelMessageMoveTaskInput{TaskHandle: task.TaskHandle}); err != nil {
		t.Fatalf("cancel the running task: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	var res types.ListMessageMoveTasksResultEntry
	for {
		l, err := c.ListMessageMoveTasks(ctx, &awssqs.ListMessageMoveTasksInput{SourceArn: &heldArn})
		if err != nil || len(l.Results) != 1 {
			t.Fatalf("ListMessageMoveTasks: %+v %v", l, err)
		}
		res = l.Results[0]
		if s := aws.ToString(res.Status); s == "CANCELLED" {
			break
		} else if s != "CANCELLING" || time.Now().After(deadline) {
			t.Fatalf("task status %s, want CANCELLING then CANCELLED", s)
		}
		time.Sleep(50 * time.Millisecond) // polling a status, with a deadline
	}
	if aws.ToString(res.DestinationArn) != outArn || aws.ToInt32(res.MaxNumberOfMessagesPerSecond) != 1 || res.ApproximateNumberOfMessagesToMove == nil ||
		*res.ApproximateNumberOfMessagesToMove != 10 || res.ApproximateNumberOfMessagesMoved >= 10 {
		t.Fatalf("cancelled task %+v", res)
	}
	// A step (1 message at this rate) cut short by the cancel may have
	// moved its message without the task counting it: the count is
	// approximate, by at most that step.
	n, err := strconv.ParseInt(approx(t, c, out.QueueUrl), 10, 64)
	if moved := res.ApproximateNumberOfMessagesMoved; err != nil || n < moved || n > moved+1 || n >= 10 {
		t.Fatalf("the destination holds %d messages (%v), the task says it moved %d of 10", n, err, moved)
	}
	_, err = c.CancelMessageMoveTask(ctx, &awssqs.CancelMessageMoveTaskInput{TaskHandle: task.TaskHandle})
	wantCode(t, "cancel a cancelled task", err, "ResourceNotFoundException")
}

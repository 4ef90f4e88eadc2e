package shardserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

func repeat(n int) string { return strings.Repeat("x", n) }

func manyAttrs(n, size int) map[string]string {
	m := map[string]string{}
	for i := 0; i < n; i++ {
		m[fmt.Sprintf("k%d", i)] = repeat(size)
	}
	return m
}

func manyTags(n, size int) []string {
	var t []string
	for i := 0; i < n; i++ {
		t = append(t, fmt.Sprintf("%d%s", i, repeat(size-1)))
	}
	return t
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// badInput is one out-of-bounds request, sent over gRPC and over REST.
type badInput struct {
	name  string
	field string
	// reason is the ErrorInfo reason expected; "" means INVALID_ARGUMENT.
	reason string
	call   func(ctx context.Context, c qv1.QueueServiceClient) error
	// REST form of the same request.
	method, path, body string
}

func (b badInput) wantReason() string {
	if b.reason == "" {
		return server.ReasonInvalidArgument
	}
	return b.reason
}

func badInputs() []badInput {
	d := func(x time.Duration) *durationpb.Duration { return durationpb.New(x) }
	sendEntries := func(n int) []*qv1.SendMessageBatchEntry {
		var e []*qv1.SendMessageBatchEntry
		for i := 0; i < n; i++ {
			e = append(e, &qv1.SendMessageBatchEntry{Id: fmt.Sprint("e", i), Body: "b"})
		}
		return e
	}
	restEntries := func(n int) string {
		var e []map[string]string
		for i := 0; i < n; i++ {
			e = append(e, map[string]string{"id": fmt.Sprint("e", i), "body": "b"})
		}
		return jsonOf(map[string]any{"entries": e})
	}
	return []badInput{
		{"queue name charset", "name", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "bad name!"})
				return err
			}, "POST", "/v1/queues", `{"name":"bad name!"}`},
		{"queue name length", "name", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: repeat(81)})
				return err
			}, "POST", "/v1/queues", jsonOf(map[string]string{"name": repeat(81)})},
		{"visibility_timeout attribute", "attributes.visibility_timeout", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "x", Attributes: &qv1.QueueAttributes{VisibilityTimeout: d(13 * time.Hour)}})
				return err
			}, "POST", "/v1/queues", `{"name":"x","attributes":{"visibilityTimeout":"46800s"}}`},
		{"message_retention attribute", "attributes.message_retention", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "x", Attributes: &qv1.QueueAttributes{MessageRetention: d(59 * time.Second)}})
				return err
			}, "POST", "/v1/queues", `{"name":"x","attributes":{"messageRetention":"59s"}}`},
		{"delivery_delay attribute", "attributes.delivery_delay", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "x", Attributes: &qv1.QueueAttributes{DeliveryDelay: d(16 * time.Minute)}})
				return err
			}, "POST", "/v1/queues", `{"name":"x","attributes":{"deliveryDelay":"960s"}}`},
		{"receive_wait attribute", "attributes.receive_wait", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "x", Attributes: &qv1.QueueAttributes{ReceiveWait: d(21 * time.Second)}})
				return err
			}, "POST", "/v1/queues", `{"name":"x","attributes":{"receiveWait":"21s"}}`},
		{"max_message_size attribute", "attributes.max_message_size", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "x", Attributes: &qv1.QueueAttributes{MaxMessageSize: 100}})
				return err
			}, "POST", "/v1/queues", `{"name":"x","attributes":{"maxMessageSize":"100"}}`},
		{"dead letter max_receive_count", "attributes.dead_letter.max_receive_count", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "x", Attributes: &qv1.QueueAttributes{DeadLetter: &qv1.DeadLetterPolicy{Queue: "known", MaxReceiveCount: 1001}}})
				return err
			}, "POST", "/v1/queues", `{"name":"x","attributes":{"deadLetter":{"queue":"known","maxReceiveCount":1001}}}`},
		{"body size", "body", server.ReasonMessageTooLarge,
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "known", Body: repeat(1<<20 + 1)})
				return err
			}, "POST", "/v1/queues/known/messages", jsonOf(map[string]string{"body": repeat(1<<20 + 1)})},
		{"empty body", "body", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "known"})
				return err
			}, "POST", "/v1/queues/known/messages", `{}`},
		{"attribute count", "attributes", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "known", Body: "b", Attributes: manyAttrs(17, 1)})
				return err
			}, "POST", "/v1/queues/known/messages", jsonOf(map[string]any{"body": "b", "attributes": manyAttrs(17, 1)})},
		{"attribute size", "attributes", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "known", Body: "b", Attributes: manyAttrs(2, 40<<10)})
				return err
			}, "POST", "/v1/queues/known/messages", jsonOf(map[string]any{"body": "b", "attributes": manyAttrs(2, 40<<10)})},
		{"tag count", "tags", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "known", Body: "b", Tags: manyTags(17, 3)})
				return err
			}, "POST", "/v1/queues/known/messages", jsonOf(map[string]any{"body": "b", "tags": manyTags(17, 3)})},
		{"tag size", "tags", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "known", Body: "b", Tags: []string{repeat(129)}})
				return err
			}, "POST", "/v1/queues/known/messages", jsonOf(map[string]any{"body": "b", "tags": []string{repeat(129)}})},
		{"send delay", "delay", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "known", Body: "b", Delay: d(-time.Second)})
				return err
			}, "POST", "/v1/queues/known/messages", `{"body":"b","delay":"-1s"}`},
		{"send delay past retention", "delay", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "known", Body: "b", Delay: d(5 * 24 * time.Hour)})
				return err
			}, "POST", "/v1/queues/known/messages", `{"body":"b","delay":"432000s"}`},
		{"batch too large", "entries", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.SendMessageBatch(ctx, &qv1.SendMessageBatchRequest{Queue: "known", Entries: sendEntries(101)})
				return err
			}, "POST", "/v1/queues/known/messages:batchSend", restEntries(101)},
		{"empty batch", "entries", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.SendMessageBatch(ctx, &qv1.SendMessageBatchRequest{Queue: "known"})
				return err
			}, "POST", "/v1/queues/known/messages:batchSend", `{"entries":[]}`},
		{"max_messages", "max_messages", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "known", MaxMessages: 101})
				return err
			}, "POST", "/v1/queues/known/messages:receive", `{"maxMessages":101}`},
		{"receive visibility_timeout", "visibility_timeout", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "known", VisibilityTimeout: d(13 * time.Hour)})
				return err
			}, "POST", "/v1/queues/known/messages:receive", `{"visibilityTimeout":"46800s"}`},
		{"wait_time", "wait_time", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "known", WaitTime: d(21 * time.Second)})
				return err
			}, "POST", "/v1/queues/known/messages:receive", `{"waitTime":"21s"}`},
		{"filter tag size", "tag_filter.all", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "known", TagFilter: &qv1.TagFilter{All: []string{repeat(129)}}})
				return err
			}, "POST", "/v1/queues/known/messages:receive", jsonOf(map[string]any{"tagFilter": map[string]any{"all": []string{repeat(129)}}})},
		{"change visibility timeout", "visibility_timeout", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.ChangeMessageVisibility(ctx, &qv1.ChangeMessageVisibilityRequest{Queue: "known", ReceiptHandle: "AAAA", VisibilityTimeout: d(13 * time.Hour)})
				return err
			}, "POST", "/v1/queues/known/messages:changeVisibility", `{"receiptHandle":"AAAA","visibilityTimeout":"46800s"}`},
		{"empty receipt handle", "receipt_handle", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.DeleteMessage(ctx, &qv1.DeleteMessageRequest{Queue: "known"})
				return err
			}, "POST", "/v1/queues/known/messages:delete", `{}`},
		{"page size", "page_size", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.ListQueues(ctx, &qv1.ListQueuesRequest{PageSize: 1001})
				return err
			}, "GET", "/v1/queues?pageSize=1001", ""},
		{"redrive max_messages", "max_messages", "",
			func(ctx context.Context, c qv1.QueueServiceClient) error {
				_, err := c.RedriveMessages(ctx, &qv1.RedriveMessagesRequest{DeadLetterQueue: "known", MaxMessages: 10001})
				return err
			}, "POST", "/v1/queues/known:redrive", `{"maxMessages":10001}`},
	}
}

func TestBadInputNamesTheField(t *testing.T) {
	n := startNode(t, nodeOpts{})
	createQueue(t, n, "known", &qv1.QueueAttributes{MessageRetention: durationpb.New(24 * time.Hour)})
	for _, tc := range badInputs() {
		t.Run("grpc/"+tc.name, func(t *testing.T) {
			err := tc.call(tctx(t), n.Client)
			code, reason, meta := reasonOf(err)
			if code != codes.InvalidArgument || reason != tc.wantReason() || meta["field"] != tc.field {
				t.Fatalf("got %v (reason %q, field %q), want INVALID_ARGUMENT/%s naming %q", err, reason, meta["field"], tc.wantReason(), tc.field)
			}
		})
		t.Run("rest/"+tc.name, func(t *testing.T) {
			status, body := doHTTP(t, n, tc.method, tc.path, tc.body)
			reason, field := restErrorInfo(body)
			if status != http.StatusBadRequest || reason != tc.wantReason() || field != tc.field {
				t.Fatalf("HTTP %d %s, want 400 %s naming field %q", status, body, tc.wantReason(), tc.field)
			}
		})
	}
}

func TestUnknownQueueIsNotFound(t *testing.T) {
	n := startNode(t, nodeOpts{})
	_, err := n.Client.SendMessage(tctx(t), &qv1.SendMessageRequest{Queue: "nope", Body: "b"})
	wantReason(t, err, codes.NotFound, server.ReasonQueueNotFound)
	_, err = n.Client.ReceiveMessages(tctx(t), &qv1.ReceiveMessagesRequest{Queue: "nope"})
	wantReason(t, err, codes.NotFound, server.ReasonQueueNotFound)
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/v1/queues/nope", ""},
		{"POST", "/v1/queues/nope/messages", `{"body":"b"}`},
		{"POST", "/v1/queues/nope/messages:receive", `{}`},
		{"DELETE", "/v1/queues/nope", ""},
		{"POST", "/v1/queues/nope:purge", `{}`},
	} {
		status, body := doHTTP(t, n, r.method, r.path, r.body)
		if reason, _ := restErrorInfo(body); status != http.StatusNotFound || reason != server.ReasonQueueNotFound {
			t.Errorf("%s %s: HTTP %d %s, want 404 QUEUE_NOT_FOUND", r.method, r.path, status, body)
		}
	}
}

func doHTTP(t *testing.T, n *testNode, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(tctx(t), method, n.Base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// restErrorInfo extracts the ErrorInfo reason and field of a REST error body.
func restErrorInfo(body string) (reason, field string) {
	var e struct {
		Details []struct {
			Type     string            `json:"@type"`
			Reason   string            `json:"reason"`
			Metadata map[string]string `json:"metadata"`
		} `json:"details"`
	}
	if json.Unmarshal([]byte(body), &e) != nil {
		return "", ""
	}
	for _, d := range e.Details {
		if d.Type == "type.googleapis.com/google.rpc.ErrorInfo" {
			return d.Reason, d.Metadata["field"]
		}
	}
	return "", ""
}

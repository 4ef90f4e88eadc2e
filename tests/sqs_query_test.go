package tests

import (
	"context"
	"crypto/md5"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// queryCall posts a Query-protocol request (form in, XML out).
func queryCall(t *testing.T, addr string, params url.Values) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/", "application/x-www-form-urlencoded", strings.NewReader(params.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/xml") {
		t.Fatalf("Query answer of type %q: %s", ct, b)
	}
	return resp.StatusCode, string(b)
}

type xmlError struct {
	Error struct{ Type, Code, Message string }
}

func TestSQSQueryProtocol(t *testing.T) {
	p := startServe(t, t.TempDir(), "--sqs-addr", "127.0.0.1:0")
	waitReady(t, p.client(t))
	base := "http://" + p.sqsAddr + "/default/"

	code, body := queryCall(t, p.sqsAddr, url.Values{"Action": {"CreateQueue"}, "QueueName": {"legacy"},
		"Attribute.1.Name": {"VisibilityTimeout"}, "Attribute.1.Value": {"40"}, "Tag.1.Key": {"env"}, "Tag.1.Value": {"test"}})
	var created struct {
		CreateQueueResult struct{ QueueUrl string }  //nolint:revive // SQS's element name
		ResponseMetadata  struct{ RequestId string } //nolint:revive // SQS's element name
	}
	if err := xml.Unmarshal([]byte(body), &created); code != 200 || err != nil || created.CreateQueueResult.QueueUrl != base+"legacy" ||
		created.ResponseMetadata.RequestId == "" {
		t.Fatalf("CreateQueue: %d %s (%v)", code, body, err)
	}
	qurl := created.CreateQueueResult.QueueUrl

	// A message with typed attributes: the body's MD5 here, the attributes'
	// MD5 against the receive below (TestSQSSDKMessages checks its value).
	code, body = queryCall(t, p.sqsAddr, url.Values{"Action": {"SendMessage"}, "QueueUrl": {qurl}, "MessageBody": {"from a form"},
		"MessageAttribute.1.Name": {"n"}, "MessageAttribute.1.Value.DataType": {"Number"}, "MessageAttribute.1.Value.StringValue": {"7"},
		"MessageAttribute.2.Name": {"b"}, "MessageAttribute.2.Value.DataType": {"Binary"}, "MessageAttribute.2.Value.BinaryValue": {"AAEC"}})
	var sent struct {
		SendMessageResult struct{ MD5OfMessageBody, MD5OfMessageAttributes, MessageId string } //nolint:revive // SQS's element name
	}
	if err := xml.Unmarshal([]byte(body), &sent); code != 200 || err != nil || sent.SendMessageResult.MD5OfMessageBody != fmt.Sprintf("%x", md5.Sum([]byte("from a form"))) ||
		sent.SendMessageResult.MessageId == "" {
		t.Fatalf("SendMessage: %d %s (%v)", code, body, err)
	}

	code, body = queryCall(t, p.sqsAddr, url.Values{"Action": {"ReceiveMessage"}, "QueueUrl": {qurl}, "MaxNumberOfMessages": {"10"},
		"AttributeName.1": {"All"}, "MessageAttributeName.1": {"All"}, "WaitTimeSeconds": {"5"}})
	var got struct {
		ReceiveMessageResult struct {
			Message []struct {
				MessageId, ReceiptHandle, MD5OfBody, Body, MD5OfMessageAttributes string //nolint:revive // SQS's element names
				Attribute                                                         []struct{ Name, Value string }
				MessageAttribute                                                  []struct {
					Name  string
					Value struct{ StringValue, BinaryValue, DataType string }
				}
			}
		}
	}
	if err := xml.Unmarshal([]byte(body), &got); code != 200 || err != nil || len(got.ReceiveMessageResult.Message) != 1 {
		t.Fatalf("ReceiveMessage: %d %s (%v)", code, body, err)
	}
	m := got.ReceiveMessageResult.Message[0]
	if m.Body != "from a form" || m.MD5OfBody != sent.SendMessageResult.MD5OfMessageBody || m.MD5OfMessageAttributes != sent.SendMessageResult.MD5OfMessageAttributes ||
		len(m.MessageAttribute) != 2 || m.MessageAttribute[0].Name != "b" || m.MessageAttribute[0].Value.BinaryValue != "AAEC" ||
		m.MessageAttribute[1].Value.DataType != "Number" || m.MessageAttribute[1].Value.StringValue != "7" || len(m.Attribute) < 3 {
		t.Fatalf("received %+v", m)
	}

	// Batches: entries are indexed members.
	code, body = queryCall(t, p.sqsAddr, url.Values{"Action": {"DeleteMessageBatch"}, "QueueUrl": {qurl},
		"DeleteMessageBatchRequestEntry.1.Id": {"ok"}, "DeleteMessageBatchRequestEntry.1.ReceiptHandle": {m.ReceiptHandle},
		"DeleteMessageBatchRequestEntry.2.Id": {"bad"}, "DeleteMessageBatchRequestEntry.2.ReceiptHandle": {"junk"}})
	var del struct {
		DeleteMessageBatchResult struct {
			DeleteMessageBatchResultEntry []struct{ Id string } //nolint:revive // SQS's element name
			BatchResultErrorEntry         []struct {
				Id, Code    string //nolint:revive // SQS's element name
				SenderFault bool
			}
		}
	}
	if err := xml.Unmarshal([]byte(body), &del); code != 200 || err != nil ||
		len(del.DeleteMessageBatchResult.DeleteMessageBatchResultEntry) != 1 || len(del.DeleteMessageBatchResult.BatchResultErrorEntry) != 1 ||
		del.DeleteMessageBatchResult.BatchResultErrorEntry[0].Code != "ReceiptHandleIsInvalid" {
		t.Fatalf("DeleteMessageBatch: %d %s (%v)", code, body, err)
	}

	code, body = queryCall(t, p.sqsAddr, url.Values{"Action": {"GetQueueAttributes"}, "QueueUrl": {qurl}, "AttributeName.1": {"VisibilityTimeout"}})
	if code != 200 || !strings.Contains(body, "<Attribute><Name>VisibilityTimeout</Name><Value>40</Value></Attribute>") {
		t.Fatalf("GetQueueAttributes: %d %s", code, body)
	}
	code, body = queryCall(t, p.sqsAddr, url.Values{"Action": {"ListQueueTags"}, "QueueUrl": {qurl}})
	if code != 200 || !strings.Contains(body, "<Tag><Key>env</Key><Value>test</Value></Tag>") {
		t.Fatalf("ListQueueTags: %d %s", code, body)
	}
	// Older SDKs post to the queue URL instead of naming it.
	resp, err := http.PostForm(qurl, url.Values{"Action": {"GetQueueAttributes"}, "AttributeName.1": {"QueueArn"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "arn:aws:sqs:us-east-1:default:legacy") {
		t.Fatalf("action on the queue URL: %d %s", resp.StatusCode, b)
	}

	// Errors: the Query code, type and status of SQS.
	for _, tc := range []struct {
		params url.Values
		status int
		code   string
	}{
		{url.Values{"Action": {"GetQueueUrl"}, "QueueName": {"missing"}}, 400, "AWS.SimpleQueueService.NonExistentQueue"},
		{url.Values{"Action": {"SendMessage"}, "QueueUrl": {qurl}}, 400, "MissingParameter"},
		{url.Values{"Action": {"DeleteMessage"}, "QueueUrl": {qurl}, "ReceiptHandle": {"junk"}}, 404, "ReceiptHandleIsInvalid"},
		{url.Values{"Action": {"ReceiveMessage"}, "QueueUrl": {qurl}, "MaxNumberOfMessages": {"11"}}, 400, "InvalidParameterValue"},
		{url.Values{"Action": {"SendMessageBatch"}, "QueueUrl": {qurl}}, 400, "AWS.SimpleQueueService.EmptyBatchRequest"},
		{url.Values{"Action": {"Explode"}}, 400, "InvalidAction"},
		{url.Values{"Action": {"AddPermission"}, "QueueUrl": {qurl}}, 400, "AWS.SimpleQueueService.UnsupportedOperation"},
		{url.Values{"Action": {"CreateQueue"}, "QueueName": {"legacy"}, "Attribute.1.Name": {"VisibilityTimeout"}, "Attribute.1.Value": {"41"}}, 400, "QueueAlreadyExists"},
	} {
		code, body := queryCall(t, p.sqsAddr, tc.params)
		var e xmlError
		if err := xml.Unmarshal([]byte(body), &e); err != nil || code != tc.status || e.Error.Code != tc.code || e.Error.Type != "Sender" {
			t.Errorf("%v: %d %s, want %d %s", tc.params, code, body, tc.status, tc.code)
		}
	}
	sendEleven := url.Values{"Action": {"SendMessageBatch"}, "QueueUrl": {qurl}}
	for i := 1; i <= 11; i++ {
		sendEleven.Set("SendMessageBatchRequestEntry."+strconv.Itoa(i)+".Id", "e"+strconv.Itoa(i))
		sendEleven.Set("SendMessageBatchRequestEntry."+strconv.Itoa(i)+".MessageBody", "x")
	}
	if code, body := queryCall(t, p.sqsAddr, sendEleven); code != 400 || !strings.Contains(body, "<Code>AWS.SimpleQueueService.TooManyEntriesInBatchRequest</Code>") {
		t.Fatalf("a batch of 11: %d %s", code, body)
	}
}

// JSON 1.0 errors carry __type and x-amzn-query-error, as SQS's.
func TestSQSJSONErrors(t *testing.T) {
	p := startServe(t, t.TempDir(), "--sqs-addr", "127.0.0.1:0")
	waitReady(t, p.client(t))
	for _, tc := range []struct {
		target, body string
		status       int
		typ, query   string
	}{
		{"GetQueueUrl", `{"QueueName":"missing"}`, 400, "com.amazonaws.sqs#QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue;Sender"},
		{"SendMessage", `{"QueueUrl":"http://x/default/missing","MessageBody":"x"}`, 400, "com.amazonaws.sqs#QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue;Sender"},
		{"CreateQueue", `{}`, 400, "com.amazonaws.sqs#MissingParameter", "MissingParameter;Sender"},
		{"CreateQueue", `{"QueueName":"a b"}`, 400, "com.amazonaws.sqs#InvalidParameterValue", "InvalidParameterValue;Sender"},
		{"CreateQueue", `not json`, 400, "com.amazonaws.sqs#SerializationException", "SerializationException;Sender"},
		{"Nope", `{}`, 400, "com.amazonaws.sqs#InvalidAction", "InvalidAction;Sender"},
	} {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "http://"+p.sqsAddr+"/", strings.NewReader(tc.body))
		req.Header.Set("X-Amz-Target", "AmazonSQS."+tc.target)
		req.Header.Set("Content-Type", "application/x-amz-json-1.0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct {
			Type    string `json:"__type"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != tc.status || e.Type != tc.typ ||
			resp.Header.Get("x-amzn-query-error") != tc.query || e.Message == "" {
			t.Errorf("%s %s: %d %s %q, want %d %s %s", tc.target, tc.body, resp.StatusCode, b, resp.Header.Get("x-amzn-query-error"), tc.status, tc.typ, tc.query)
		}
	}
}

package sqs

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

// Published vectors of other SQS implementations' tests (a JavaScript
// checksum library, LocalStack), not computed by this code.
func TestMD5OfAttributesKnownVectors(t *testing.T) {
	for _, tc := range []struct {
		attrs map[string]msgAttr
		want  string
	}{
		{map[string]msgAttr{"SellerName": {dataType: "String", value: []byte("Example Store")}}, "cd28f3b68aeee4b2eac9c66f2f694b58"},
		{map[string]msgAttr{"timestamp": {dataType: "Number", value: []byte("1493147359900")}}, "235c5c510d26fb653d073faed50ae77c"},
	} {
		if got := md5OfAttributes(tc.attrs); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.attrs, got, tc.want)
		}
	}
	if md5OfAttributes(nil) != "" {
		t.Error("no attributes: want no MD5")
	}
}

// Typed attributes survive the trip through quorumq's string map, tags
// travel as the tags attribute, and attributes set through the other APIs
// read as Strings.
func TestStoredAttributesRoundTrip(t *testing.T) {
	in := map[string]msgAttr{
		"s":     {dataType: "String", value: []byte("text")},
		"n":     {dataType: "Number.int", value: []byte("42")},
		"b":     {dataType: "Binary", value: []byte{0, 0xff}, binary: true},
		"x":     {dataType: "String.custom", value: []byte("v")},
		"q.tag": {dataType: "String", value: []byte("red, blue")},
	}
	stored, tags := toStored(in, "q.tag")
	if strings.Join(tags, ",") != "red,blue" || stored["s"] != "text" || stored["b"] != "AP8=" || stored["q.tag"] != "" {
		t.Fatalf("stored %v tags %v", stored, tags)
	}
	back := fromStored(stored, tags, "q.tag")
	if len(back) != 5 || back["q.tag"].dataType != "String" || string(back["q.tag"].value) != "red,blue" {
		t.Fatalf("back: %v", back)
	}
	for _, n := range []string{"s", "n", "b", "x"} {
		if back[n].dataType != in[n].dataType || string(back[n].value) != string(in[n].value) || back[n].binary != in[n].binary {
			t.Errorf("%s: %+v, want %+v", n, back[n], in[n])
		}
	}
	plain := fromStored(map[string]string{"k": "v"}, nil, "q.tag")
	if plain["k"].dataType != "String" || string(plain["k"].value) != "v" {
		t.Fatalf("a plain attribute: %+v", plain["k"])
	}
}

func TestParseMessageAttributes(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, tc := range []struct {
		in   map[string]msgAttrIn
		fail bool
	}{
		{map[string]msgAttrIn{"ok.name-1_x": {DataType: "Number.float", StringValue: s("-1.5e3")}}, false},
		{map[string]msgAttrIn{"AWS.x": {DataType: "String", StringValue: s("v")}}, true},
		{map[string]msgAttrIn{"a..b": {DataType: "String", StringValue: s("v")}}, true},
		{map[string]msgAttrIn{".a": {DataType: "String", StringValue: s("v")}}, true},
		{map[string]msgAttrIn{"n": {DataType: "Number", StringValue: s("1x")}}, true},
		{map[string]msgAttrIn{"n": {DataType: "Integer", StringValue: s("1")}}, true},
		{map[string]msgAttrIn{"n": {DataType: "String"}}, true},
		{map[string]msgAttrIn{"b": {DataType: "Binary", BinaryValue: s("%%%")}}, true},
		{map[string]msgAttrIn{"s": {DataType: "String", StringValue: s("bad\x00")}}, true},
	} {
		_, err := parseMessageAttributes("MessageAttributes", tc.in)
		if (err != nil) != tc.fail {
			t.Errorf("%v: err %v, want failure %v", tc.in, err, tc.fail)
		}
	}
	eleven := map[string]msgAttrIn{}
	for _, n := range "abcdefghijk" {
		eleven[string(n)] = msgAttrIn{DataType: "String", StringValue: s("v")}
	}
	if _, err := parseMessageAttributes("MessageAttributes", eleven); err == nil {
		t.Error("11 attributes accepted")
	}
}

// The Query protocol's flattened parameters become the JSON protocol's
// document.
func TestDecodeQuery(t *testing.T) {
	form := url.Values{
		"Action":                            {"SendMessageBatch"},
		"Version":                           {"2012-11-05"},
		"QueueUrl":                          {"http://h/default/q"},
		"SendMessageBatchRequestEntry.2.Id": {"second"}, "SendMessageBatchRequestEntry.2.MessageBody": {"b2"},
		"SendMessageBatchRequestEntry.1.Id": {"first"}, "SendMessageBatchRequestEntry.1.MessageBody": {"b1"},
		"SendMessageBatchRequestEntry.1.DelaySeconds":                         {"5"},
		"SendMessageBatchRequestEntry.1.MessageAttribute.1.Name":              {"k"},
		"SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType":    {"Number"},
		"SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue": {"7"},
	}
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	action, doc, err := decodeQuery(r, []byte(form.Encode()))
	if err != nil || action != "SendMessageBatch" {
		t.Fatalf("decodeQuery: %q %v", action, err)
	}
	var req sendBatchIn
	if err := decode(doc, &req); err != nil {
		t.Fatal(err)
	}
	if req.QueueUrl != "http://h/default/q" || len(req.Entries) != 2 || req.Entries[0].Id != "first" || req.Entries[1].Id != "second" ||
		!req.Entries[0].DelaySeconds.set || req.Entries[0].DelaySeconds.v != 5 ||
		req.Entries[0].MessageAttributes["k"].DataType != "Number" || *req.Entries[0].MessageAttributes["k"].StringValue != "7" {
		t.Fatalf("decoded %s as %+v", doc, req)
	}

	form = url.Values{"Action": {"CreateQueue"}, "QueueName": {"q"}, "Attribute.1.Name": {"DelaySeconds"}, "Attribute.1.Value": {"3"},
		"Tag.1.Key": {"env"}, "Tag.1.Value": {"prod"}}
	_, doc, err = decodeQuery(httptest.NewRequest(http.MethodGet, "/?"+form.Encode(), nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	var cq createQueueIn
	if err := decode(doc, &cq); err != nil || cq.Attributes["DelaySeconds"] != "3" || cq.Tags["env"] != "prod" {
		t.Fatalf("CreateQueue from a GET: %s -> %+v %v", doc, cq, err)
	}

	for _, bad := range []string{"Action=X&A.1=v&A.1.B=w", "Action=X&A.0=v", "Action=X&A..B=v"} {
		if _, _, err := decodeQuery(httptest.NewRequest(http.MethodGet, "/?"+bad, nil), nil); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if _, _, err := decodeQuery(httptest.NewRequest(http.MethodGet, "/?QueueName=x", nil), nil); asAPIError(err).code != "MissingParameter" {
		t.Errorf("no Action: %v", err)
	}
}

// QueueService statuses map to SQS's errors by their ErrorInfo reason.
func TestFromStatus(t *testing.T) {
	st := func(c codes.Code, reason string) *status.Status {
		s, _ := status.New(c, "m").WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: server.ErrorDomain})
		return s
	}
	for _, tc := range []struct {
		st     *status.Status
		code   string
		status int
	}{
		{st(codes.NotFound, server.ReasonQueueNotFound), "AWS.SimpleQueueService.NonExistentQueue", 400},
		{st(codes.AlreadyExists, server.ReasonQueueAlreadyExists), "QueueAlreadyExists", 400},
		{st(codes.InvalidArgument, server.ReasonInvalidReceiptHandle), "ReceiptHandleIsInvalid", 404},
		{st(codes.InvalidArgument, server.ReasonInvalidArgument), "InvalidParameterValue", 400},
		{st(codes.InvalidArgument, server.ReasonMessageTooLarge), "InvalidParameterValue", 400},
		{st(codes.ResourceExhausted, server.ReasonOverloaded), "RequestThrottled", 403},
		{st(codes.ResourceExhausted, server.ReasonQuotaExceeded), "OverLimit", 403},
		{st(codes.PermissionDenied, server.ReasonPermissionDenied), "AccessDenied", 403},
		{st(codes.Unavailable, server.ReasonNoQuorum), "ServiceUnavailable", 503},
		{st(codes.Internal, server.ReasonInternal), "InternalFailure", 500},
	} {
		e := fromStatus(tc.st)
		if e.code != tc.code || e.status != tc.status || e.receiver != (tc.status >= 500) {
			t.Errorf("%v: %+v, want %s %d", tc.st.Proto(), e, tc.code, tc.status)
		}
	}
}

// A JSON body that is no object, and an oversized one, are refused
// before authentication.
func TestHandlerRefusesBadBodies(t *testing.T) {
	if _, err := New(Config{Client: nil, Auth: DevAuthenticator{}}); err == nil {
		t.Fatal("a handler without a client was built")
	}
	h, err := New(Config{Client: unreachable{}, Auth: RefuseAuthenticator{}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, tc := range []struct {
		body   string
		status int
		typ    string
	}{
		{`[1]`, 400, "com.amazonaws.sqs#SerializationException"},
		{strings.Repeat(" ", maxRequestBytes+1), 413, "com.amazonaws.sqs#RequestEntityTooLarge"},
		{`{}`, 403, "com.amazonaws.sqs#InvalidClientTokenId"}, // well formed: then authentication refuses
	} {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
		r.Header.Set("X-Amz-Target", "AmazonSQS.ListQueues")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var out map[string]string
		_ = json.Unmarshal(w.Body.Bytes(), &out)
		if w.Code != tc.status || out["__type"] != tc.typ {
			t.Errorf("body of %d bytes: %d %v, want %d %s", len(tc.body), w.Code, out, tc.status, tc.typ)
		}
	}
}

// unreachable is a QueueService client no test call may reach.
type unreachable struct{ qv1.QueueServiceClient }

// Attributes without a quorumq setting are accepted only with the value
// that is quorumq's behaviour.
func TestOnlyValue(t *testing.T) {
	for _, tc := range []struct {
		name, v  string
		fifo, ok bool
	}{
		{"RedriveAllowPolicy", `{"redrivePermission":"allowAll"}`, false, true},
		{"RedriveAllowPolicy", `{"redrivePermission":"denyAll"}`, false, false},
		{"DeduplicationScope", "queue", true, true},
		{"DeduplicationScope", "messageGroup", true, false},
		{"DeduplicationScope", "queue", false, false},
		{"FifoThroughputLimit", "perQueue", true, true},
		{"FifoThroughputLimit", "perMessageGroupId", true, false},
		{"SqsManagedSseEnabled", "false", false, true},
		{"SqsManagedSseEnabled", "true", false, false},
	} {
		if err := onlyValue(tc.name, tc.v, tc.fifo); (err == nil) != tc.ok {
			t.Errorf("%s=%s (fifo %v): %v, want ok %v", tc.name, tc.v, tc.fifo, err, tc.ok)
		}
	}
}

package shardserver_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(tctx(t), "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func peekBodies(ms []*qv1.PeekedMessage) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.GetBody())
	}
	return out
}

// TestPeekMessagesStandardQueue: peek shows visible, in-flight and delayed
// messages with their counts and next visibility, filters by state and
// tag over gRPC and REST, returns no receipt handle, and changes nothing:
// the in-flight message keeps its lease and count, and a receive after the
// peeks gets the visible messages.
func TestPeekMessagesStandardQueue(t *testing.T) {
	n := startNode(t, nodeOpts{})
	ctx, c := tctx(t), n.Client
	if _, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "browse"}); err != nil {
		t.Fatal(err)
	}
	send := func(body string, tags []string, delay time.Duration) string {
		r, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "browse", Body: body, Tags: tags, Delay: durationpb.New(delay)})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetMessageId()
	}
	id1 := send("m1", []string{"red"}, 0)
	send("m2", nil, 0)
	send("m3", []string{"red"}, 10*time.Minute)
	rr, err := c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "browse", VisibilityTimeout: durationpb.New(time.Hour)})
	if err != nil || len(rr.GetMessages()) != 1 || rr.GetMessages()[0].GetMessageId() != id1 {
		t.Fatalf("receive: %v %v", rr, err)
	}
	for range 2 { // peeking twice sees the same: nothing changed
		p, err := c.PeekMessages(ctx, &qv1.PeekMessagesRequest{Queue: "browse"})
		if err != nil {
			t.Fatal(err)
		}
		if got := peekBodies(p.GetMessages()); !slices.Equal(got, []string{"m1", "m2", "m3"}) || p.GetNextPageToken() != "" {
			t.Fatalf("peek = %v token %q", got, p.GetNextPageToken())
		}
		m1, m2, m3 := p.Messages[0], p.Messages[1], p.Messages[2]
		if m1.GetState() != qv1.MessageState_MESSAGE_STATE_IN_FLIGHT || m1.GetReceiveCount() != 1 || m1.GetFirstReceivedAt() == nil ||
			m1.GetVisibleAt().AsTime().Before(time.Now().Add(50*time.Minute)) {
			t.Errorf("in-flight m1 = %v", m1)
		}
		if m2.GetState() != qv1.MessageState_MESSAGE_STATE_VISIBLE || m2.GetReceiveCount() != 0 || m2.GetFirstReceivedAt() != nil {
			t.Errorf("visible m2 = %v", m2)
		}
		if m3.GetState() != qv1.MessageState_MESSAGE_STATE_DELAYED || m3.GetSequence() != 3 {
			t.Errorf("delayed m3 = %v", m3)
		}
	}
	p, err := c.PeekMessages(ctx, &qv1.PeekMessagesRequest{Queue: "browse", States: []qv1.MessageState{qv1.MessageState_MESSAGE_STATE_DELAYED, qv1.MessageState_MESSAGE_STATE_IN_FLIGHT},
		TagFilter: &qv1.TagFilter{All: []string{"red"}}})
	if err != nil || !slices.Equal(peekBodies(p.GetMessages()), []string{"m1", "m3"}) {
		t.Fatalf("filtered peek = %v %v", peekBodies(p.GetMessages()), err)
	}
	// REST: GET with query parameters; no receipt handle in the JSON.
	code, body := httpGet(t, n.Base+"/v1/queues/browse/messages?states=MESSAGE_STATE_IN_FLIGHT&tagFilter.all=red")
	if code != 200 || strings.Contains(body, "receiptHandle") {
		t.Fatalf("REST peek: HTTP %d %s", code, body)
	}
	var page struct {
		Messages []struct {
			MessageID    string `json:"messageId"`
			ReceiveCount int    `json:"receiveCount"`
			State        string `json:"state"`
		} `json:"messages"`
	}
	if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 1 || page.Messages[0].MessageID != id1 || page.Messages[0].ReceiveCount != 1 || page.Messages[0].State != "MESSAGE_STATE_IN_FLIGHT" {
		t.Fatalf("REST peek = %s", body)
	}
	code, body = httpGet(t, n.Base+"/v1/queues/browse/messages/"+id1)
	var got struct {
		Message struct {
			Body string `json:"body"`
		} `json:"message"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &got) != nil || got.Message.Body != "m1" {
		t.Fatalf("REST get: HTTP %d %s", code, body)
	}
	code, body = httpGet(t, n.Base+"/v1/queues/browse/messages/"+strings.Repeat("0", 52))
	if code != http.StatusNotFound || !strings.Contains(body, server.ReasonMessageNotFound) {
		t.Fatalf("REST get of an unknown id: HTTP %d %s", code, body)
	}
	_, err = c.GetMessage(ctx, &qv1.GetMessageRequest{Queue: "browse", MessageId: "nope"})
	wantReason(t, err, codes.NotFound, server.ReasonMessageNotFound)
	_, err = c.PeekMessages(ctx, &qv1.PeekMessagesRequest{Queue: "missing"})
	wantReason(t, err, codes.NotFound, server.ReasonQueueNotFound)
	_, err = c.PeekMessages(ctx, &qv1.PeekMessagesRequest{Queue: "browse", PageSize: 101})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	// Nothing changed: m1's lease holds, the receive gets m2 alone.
	rr, err = c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "browse", MaxMessages: 10})
	if err != nil || len(rr.GetMessages()) != 1 || rr.GetMessages()[0].GetBody() != "m2" || rr.GetMessages()[0].GetReceiveCount() != 1 {
		t.Fatalf("receive after peeks: %v %v", rr, err)
	}
	g, err := c.GetMessage(ctx, &qv1.GetMessageRequest{Queue: "browse", MessageId: id1})
	if err != nil || g.GetMessage().GetReceiveCount() != 1 {
		t.Fatalf("get m1 after peeks: %v %v", g, err)
	}
}

// TestPeekMessagesFIFOQueue: a FIFO queue's messages show their group and
// sequence, and peeking does not block or release a group.
func TestPeekMessagesFIFOQueue(t *testing.T) {
	n := startNode(t, nodeOpts{})
	ctx, c := tctx(t), n.Client
	if _, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "b.fifo", Attributes: &qv1.QueueAttributes{Fifo: true}}); err != nil {
		t.Fatal(err)
	}
	for i, g := range []string{"g1", "g1", "g2"} {
		if _, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "b.fifo", Body: fmt.Sprint("f", i), GroupId: g, DeduplicationId: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := c.PeekMessages(ctx, &qv1.PeekMessagesRequest{Queue: "b.fifo"})
	if err != nil || len(p.GetMessages()) != 3 {
		t.Fatalf("peek: %v %v", p, err)
	}
	for i, m := range p.GetMessages() {
		if m.GetSequence() != uint64(i+1) || m.GetGroupId() != []string{"g1", "g1", "g2"}[i] {
			t.Errorf("message %d: %v", i, m)
		}
	}
	rr, err := c.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "b.fifo", MaxMessages: 10})
	if err != nil || len(rr.GetMessages()) != 3 {
		t.Fatalf("receive after peek: %v %v", rr, err)
	}
}

// TestPeekMessagesPartitionedQueue: pages walk partition 0 then 1 in seq
// order, the token carries where to resume, every message is seen once,
// and GetMessage finds a message on whichever partition holds it.
func TestPeekMessagesPartitionedQueue(t *testing.T) {
	n := startSharded(t)
	ctx, c := tctx(t), n.Client
	createPartitioned(t, c, "pbrowse", 2, nil)
	ids := map[string]bool{}
	for i := range 7 {
		r, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "pbrowse", Body: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		ids[r.GetMessageId()] = true
	}
	seen := map[string]bool{}
	var order [][2]uint64
	tok, pages := "", 0
	for {
		p, err := c.PeekMessages(ctx, &qv1.PeekMessagesRequest{Queue: "pbrowse", PageSize: 3, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, m := range p.GetMessages() {
			if seen[m.GetMessageId()] {
				t.Fatalf("message %s seen twice", m.GetMessageId())
			}
			seen[m.GetMessageId()] = true
			order = append(order, [2]uint64{uint64(m.GetPartition()), m.GetSequence()})
		}
		if tok = p.GetNextPageToken(); tok == "" {
			break
		}
		if pages > 10 {
			t.Fatal("paging does not end")
		}
	}
	if len(seen) != 7 {
		t.Fatalf("peek saw %d of 7 messages", len(seen))
	}
	if !slices.IsSortedFunc(order, func(a, b [2]uint64) int {
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		return int(a[1]) - int(b[1])
	}) || order[0][0] != 0 || order[len(order)-1][0] != 1 {
		t.Fatalf("order %v: want partition 0 then 1, seq ascending", order)
	}
	for id := range ids {
		g, err := c.GetMessage(ctx, &qv1.GetMessageRequest{Queue: "pbrowse", MessageId: id})
		if err != nil || g.GetMessage().GetMessageId() != id {
			t.Fatalf("get %s: %v %v", id, g, err)
		}
	}
	_, err := c.PeekMessages(ctx, &qv1.PeekMessagesRequest{Queue: "pbrowse", PageToken: "garbage!"})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
}

// TestPeekMessagesScopes: peek and get need messages:peek or
// messages:receive; queues:admin or messages:send alone is refused.
func TestPeekMessagesScopes(t *testing.T) {
	n := startAuthNode(t)
	c := qv1.NewQueueServiceClient(n.Conn)
	admin := token(t, jwt.MapClaims{"tenant": "acme", "scope": allScopes})
	if _, err := c.CreateQueue(as(t, admin), &qv1.CreateQueueRequest{Name: "sq"}); err != nil {
		t.Fatal(err)
	}
	r, err := c.SendMessage(as(t, admin), &qv1.SendMessageRequest{Queue: "sq", Body: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	for _, scope := range []string{"queues:admin", "messages:send"} {
		tok := token(t, jwt.MapClaims{"tenant": "acme", "scope": scope})
		_, err := c.PeekMessages(as(t, tok), &qv1.PeekMessagesRequest{Queue: "sq"})
		wantReason(t, err, codes.PermissionDenied, server.ReasonPermissionDenied)
		_, err = c.GetMessage(as(t, tok), &qv1.GetMessageRequest{Queue: "sq", MessageId: r.GetMessageId()})
		wantReason(t, err, codes.PermissionDenied, server.ReasonPermissionDenied)
		if status, body := n.REST(t, tok, "GET", "/v1/queues/sq/messages", ""); status != http.StatusForbidden {
			t.Errorf("REST peek with %s: HTTP %d %s", scope, status, body)
		}
	}
	for _, scope := range []string{"messages:peek", "messages:receive"} {
		tok := token(t, jwt.MapClaims{"tenant": "acme", "scope": scope})
		p, err := c.PeekMessages(as(t, tok), &qv1.PeekMessagesRequest{Queue: "sq"})
		if err != nil || len(p.GetMessages()) != 1 {
			t.Errorf("peek with %s: %v %v", scope, p, err)
		}
		if _, err := c.GetMessage(as(t, tok), &qv1.GetMessageRequest{Queue: "sq", MessageId: r.GetMessageId()}); err != nil {
			t.Errorf("get with %s: %v", scope, err)
		}
	}
	// Another tenant does not see the message.
	other := token(t, jwt.MapClaims{"tenant": "other", "scope": "messages:peek"})
	_, err = c.GetMessage(as(t, other), &qv1.GetMessageRequest{Queue: "sq", MessageId: r.GetMessageId()})
	wantReason(t, err, codes.NotFound, server.ReasonQueueNotFound)
	// Nor in its own queue of the same name.
	otherAdmin := token(t, jwt.MapClaims{"tenant": "other", "scope": allScopes})
	if _, err := c.CreateQueue(as(t, otherAdmin), &qv1.CreateQueueRequest{Name: "sq"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetMessage(as(t, other), &qv1.GetMessageRequest{Queue: "sq", MessageId: r.GetMessageId()})
	wantReason(t, err, codes.NotFound, server.ReasonMessageNotFound)
	if p, err := c.PeekMessages(as(t, other), &qv1.PeekMessagesRequest{Queue: "sq"}); err != nil || len(p.GetMessages()) != 0 {
		t.Fatalf("other tenant's peek: %v %v", p, err)
	}
}

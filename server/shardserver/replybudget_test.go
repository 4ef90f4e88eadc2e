package shardserver_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// got is one received message as the test tracks it.
type got struct {
	body      string
	partition uint16
	seq       uint64
}

// receiveREST receives over REST (the gateway's gRPC client of its node).
func receiveREST(t *testing.T, n *testNode, queue string, max int) []got {
	t.Helper()
	code, _, raw, err := restReceive(n.Base, queue, fmt.Sprintf(`{"maxMessages":%d,"visibilityTimeout":"600s"}`, max))
	if err != nil || code != http.StatusOK {
		t.Fatalf("REST receive: HTTP %d %v: %.300s", code, err, raw)
	}
	var out struct {
		Messages []struct {
			Body          string `json:"body"`
			Sequence      string `json:"sequence"`
			ReceiptHandle string `json:"receiptHandle"`
		} `json:"messages"`
	}
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatal(err)
	}
	var msgs []got
	for _, m := range out.Messages {
		seq, err := strconv.ParseUint(m.Sequence, 10, 64)
		if err != nil {
			t.Fatalf("sequence %q: %v", m.Sequence, err)
		}
		msgs = append(msgs, got{m.Body[:3], handlePartition(t, m.ReceiptHandle), seq})
	}
	return msgs
}

// receiveGRPC receives with a gRPC client at its default limits (4 MiB).
func receiveGRPC(t *testing.T, n *testNode, queue string, max int) []got {
	t.Helper()
	r, err := n.Client.ReceiveMessages(tctx(t), &qv1.ReceiveMessagesRequest{Queue: queue, MaxMessages: int32(max), VisibilityTimeout: durationpb.New(10 * time.Minute)})
	if err != nil {
		t.Fatalf("gRPC receive: %v", err)
	}
	var msgs []got
	for _, m := range r.GetMessages() {
		msgs = append(msgs, got{m.GetBody()[:3], handlePartition(t, m.GetReceiptHandle()), m.GetSequence()})
	}
	return msgs
}

// Issue 15.6: a receive's reply fits the transport limits (the REST
// gateway's client, a default gRPC client): 20 messages of 1 MiB received
// 10 at a time over REST and gRPC in turn arrive exactly once each, in
// order, and no message is ever leased without being returned.
func TestReceiveRepliesFitTheTransport(t *testing.T) {
	n := startSharded(t)
	createPartitioned(t, n.Client, "big", 1, nil)
	createPartitioned(t, n.Client, "bigparts", 2, nil)
	pad := strings.Repeat("x", 1<<20-3)
	for _, q := range []string{"big", "bigparts"} {
		for i := range 20 {
			if _, err := n.Client.SendMessage(tctx(t), &qv1.SendMessageRequest{Queue: q, Body: fmt.Sprintf("%03d", i) + pad}); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
	}
	for _, q := range []string{"big", "bigparts"} {
		seen := map[string]bool{}
		last := map[uint16]uint64{} // per partition: the last sequence received
		var order []string
		for step := 0; len(seen) < 20; step++ {
			if step == 20 {
				t.Fatalf("%s: 20 receives got only %d messages", q, len(seen))
			}
			var msgs []got
			if step%2 == 0 {
				msgs = receiveREST(t, n, q, 10)
			} else {
				msgs = receiveGRPC(t, n, q, 10)
			}
			if len(msgs) == 0 {
				t.Fatalf("%s: receive %d got nothing with %d messages visible", q, step, 20-len(seen))
			}
			for _, m := range msgs {
				if seen[m.body] {
					t.Fatalf("%s: message %s received twice", q, m.body)
				}
				if m.seq <= last[m.partition] {
					t.Fatalf("%s: partition %d returned seq %d after %d", q, m.partition, m.seq, last[m.partition])
				}
				seen[m.body], last[m.partition] = true, m.seq
				order = append(order, m.body)
			}
			st, err := n.Client.GetQueue(tctx(t), &qv1.GetQueueRequest{Name: q})
			if err != nil {
				t.Fatal(err)
			}
			if s := st.GetQueue().GetStats(); s.GetInFlight() != int64(len(seen)) || s.GetVisible() != int64(20-len(seen)) {
				t.Fatalf("%s: after receive %d: %d seen, but %d in flight and %d visible", q, step, len(seen), s.GetInFlight(), s.GetVisible())
			}
		}
		if q == "big" {
			for i, b := range order {
				if b != fmt.Sprintf("%03d", i) {
					t.Fatalf("%s: received in order %v, want send order", q, order)
				}
			}
		}
	}
}

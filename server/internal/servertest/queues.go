package servertest

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/store"
)

// CreateQueue creates queue name on n or fails the test.
func CreateQueue(t *testing.T, n *Node, name string, attrs *qv1.QueueAttributes) {
	t.Helper()
	if _, err := n.Client.CreateQueue(Ctx(t), &qv1.CreateQueueRequest{Name: name, Attributes: attrs}); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
}

// Send sends one message to queue q on n or fails the test.
func Send(t *testing.T, n *Node, q, body string) *qv1.SendMessageResponse {
	t.Helper()
	r, err := n.Client.SendMessage(Ctx(t), &qv1.SendMessageRequest{Queue: q, Body: body})
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	return r
}

// Receive receives from n or fails the test.
func Receive(t *testing.T, n *Node, req *qv1.ReceiveMessagesRequest) []*qv1.ReceivedMessage {
	t.Helper()
	r, err := n.Client.ReceiveMessages(Ctx(t), req)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return r.GetMessages()
}

// FIFOReceive receives without waiting (unless req says so) or fails the test.
func FIFOReceive(t *testing.T, c qv1.QueueServiceClient, req *qv1.ReceiveMessagesRequest) []*qv1.ReceivedMessage {
	t.Helper()
	if req.WaitTime == nil {
		req.WaitTime = durationpb.New(0)
	}
	r, err := c.ReceiveMessages(Ctx(t), req)
	if err != nil {
		t.Fatalf("receive from %s: %v", req.GetQueue(), err)
	}
	return r.GetMessages()
}

// Bodies joins the bodies of msgs with spaces.
func Bodies(msgs []*qv1.ReceivedMessage) string {
	var b []string
	for _, m := range msgs {
		b = append(b, m.GetBody())
	}
	return strings.Join(b, " ")
}

// WantField fails the test unless err is INVALID_ARGUMENT naming field.
func WantField(t *testing.T, err error, field string) {
	t.Helper()
	c, r, meta := ReasonOf(err)
	if c != codes.InvalidArgument || r != server.ReasonInvalidArgument || meta["field"] != field {
		t.Fatalf("got %v (code %v reason %q meta %v), want INVALID_ARGUMENT on field %q", err, c, r, meta, field)
	}
}

// One node hosting 5 shards (metadata + 4 data shards) runs the whole
// router: partitions on different shards, gathering receives, handles
// routed back to their partition.
const PartShards = 5

// StartSharded starts one node hosting PartShards shards.
func StartSharded(t *testing.T) *Node { return StartNode(t, NodeOpts{Shards: PartShards}) }

// PartitionDepth is what the shard holding partition i stores.
func PartitionDepth(t *testing.T, n *Node, queue string, i int) int64 {
	t.Helper()
	sh := router.ShardOf(PartShards, server.DevTenant, queue, i)
	info, err := n.ShardStore(sh).GetQueue(server.DevTenant, store.PartitionName(queue, i), time.Now().UnixMilli())
	if err != nil {
		t.Fatalf("partition %d on shard %d: %v", i, sh, err)
	}
	return info.Stats.Visible + info.Stats.InFlight + info.Stats.Delayed
}

// HandlePartition is the partition a receipt handle names.
func HandlePartition(t *testing.T, h string) uint16 { return ParseHandle(t, h).Partition }

// ParseHandle decodes a receipt handle as the API returns it.
func ParseHandle(t *testing.T, h string) store.Handle {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	ph, err := store.ParseHandle(b)
	if err != nil {
		t.Fatal(err)
	}
	return ph
}

// CreatePartitioned creates queue name with parts partitions or fails the test.
func CreatePartitioned(t *testing.T, c qv1.QueueServiceClient, name string, parts int32, attrs *qv1.QueueAttributes) {
	t.Helper()
	if attrs == nil {
		attrs = &qv1.QueueAttributes{}
	}
	attrs.Partitions = parts
	if _, err := c.CreateQueue(Ctx(t), &qv1.CreateQueueRequest{Name: name, Attributes: attrs}); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
}

// KeyForPartition is a partition key that the router sends to partition i
// of a queue of parts partitions.
func KeyForPartition(parts, i int) string {
	for k := 0; ; k++ {
		if key := fmt.Sprint("key-", k); router.PartitionOfKey(key, parts) == i {
			return key
		}
	}
}

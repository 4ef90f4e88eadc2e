package server

import (
	"context"
	"strconv"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/quorumq/quorumq/store"
)

// The peer service carries what nodes ask of each other beyond Raft: outbox
// deliveries to another shard's leader, and the shard view API-tier nodes
// route by. It is registered on the peer listener only and takes no client
// token: like the Raft transport beside it, it is protected by the peer
// listener's mutual TLS (PeerAuthInterceptors: DeliverOutbox needs a
// storage node's certificate, Cluster any peer's). Messages are existing
// protobuf types, so the service needs no generated code.
const (
	PeerService       = "quorumq.internal.v1.Peer"
	PeerDeliverMethod = "/" + PeerService + "/DeliverOutbox"
	PeerClusterMethod = "/" + PeerService + "/Cluster"
)

// isPeerMethod reports whether a full method name is of the peer service.
func isPeerMethod(m string) bool { return strings.HasPrefix(m, "/"+PeerService+"/") }

// InternalHeaders are the routing headers only routers may set.
var InternalHeaders = []string{ShardHeader, PartitionHeader, IncarnationHeader, RecordHeader, ForwardedHeader, WaitOnlyHeader, MaxBytesHeader}

// Headers of a call the router sends to one shard's leader. A call that
// carries shardHeader is served by that shard of the receiving node and
// never routed again (the receiver answers NOT_LEADER if it does not lead).
const (
	ShardHeader       = "x-quorumq-shard"
	PartitionHeader   = "x-quorumq-partition"
	IncarnationHeader = "x-quorumq-incarnation"
	// RecordHeader asks a routed GetQueue for the record only (no stats:
	// they cost a scan, and the router's cache refresh needs none).
	RecordHeader = "x-quorumq-record-only"
	// WaitOnlyHeader makes a routed ReceiveMessages only wait, proposing
	// nothing, until a matching message is visible (it then answers empty
	// before its wait ends) or the wait ends: the router long-polls several
	// partitions this way, since cancelling a wait loses no lease.
	WaitOnlyHeader = "x-quorumq-wait-only"
	// MaxBytesHeader lowers the byte budget of a routed ReceiveMessages'
	// reply below receiveBudget: a sweep over partitions shares one reply.
	MaxBytesHeader = "x-quorumq-max-bytes"
)

// HeaderInt reads an integer header of a routed call.
func HeaderInt(ctx context.Context, key string) (int64, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(key)
	if len(v) == 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[0], 10, 64)
	return n, err == nil
}

// ForwardedHeader marks a call forwarded by another node: the receiver
// serves it or answers NOT_LEADER, but never forwards it again, so a stale
// leader view cannot bounce a call around the cluster.
const ForwardedHeader = "x-quorumq-forwarded-by"

// MaxReplyBytes is the largest reply every hop of a client call takes: a
// node forwarding to a shard leader, and the REST gateway's client of its
// own node. Dial options of those clients use it (server/node's
// self-client should too).
const MaxReplyBytes = 8 << 20

// ClientReplyBytes is the reply limit of a gRPC client left at its
// defaults (4 MiB in grpc-go and grpc-java). Receives fit their replies
// under it, so no client, REST or gRPC, gets a reply it refuses while the
// messages in it stay leased.
const ClientReplyBytes = 4 << 20

const (
	// ReceiveBudget is the byte budget of a receive's reply:
	// ClientReplyBytes less room for the response's own framing.
	ReceiveBudget = min(ClientReplyBytes, MaxReplyBytes) - 64<<10
	// MaxMessageReply bounds one message's share of a reply
	// (store.ReplySize of the largest message with the longest names).
	MaxMessageReply = store.MaxMessageSize + 1<<10 + store.ReplyOverhead
	// ReplyFraming is the tag and length of a message within the reply.
	ReplyFraming = 8
)

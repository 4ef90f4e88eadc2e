package router

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/quorumq/quorumq/server"
)

// Forwarder sends a call that reached a follower to the shard's leader. It
// is the only place that forwards. Calls travel to the leader's peer
// address, where the same QueueService is registered; the caller's metadata
// (its token) goes along, so the leader authenticates it again.
type Forwarder struct {
	self  uint64
	peers map[uint64]string
	opts  []grpc.DialOption
	// optsFor adds per-node dial options (TLS pinned to the node's identity).
	optsFor func(id uint64) []grpc.DialOption

	mu    sync.Mutex
	conns map[uint64]*grpc.ClientConn
}

// NewForwarder returns a forwarder for node self. peers maps node ids to
// peer addresses; opts are the dial options (TLS), default insecure.
func NewForwarder(self uint64, peers map[uint64]string, opts ...grpc.DialOption) *Forwarder {
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(server.MaxReplyBytes), grpc.MaxCallSendMsgSize(server.MaxReplyBytes)))
	return &Forwarder{self: self, peers: peers, opts: opts, conns: map[uint64]*grpc.ClientConn{}}
}

// SetDialOptionsFor adds dial options per node, after the common ones
// (peer TLS that checks the node's certificate names it). Call it before
// the first call.
func (f *Forwarder) SetDialOptionsFor(fn func(id uint64) []grpc.DialOption) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.optsFor = fn
}

// Close closes the connections to the other nodes.
func (f *Forwarder) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, c := range f.conns {
		_ = c.Close()
		delete(f.conns, id)
	}
}

func (f *Forwarder) conn(id uint64) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[id]; ok {
		return c, nil
	}
	addr, ok := f.peers[id]
	if !ok {
		return nil, fmt.Errorf("no address for node %d", id)
	}
	opts := f.opts
	if f.optsFor != nil {
		opts = append(slices.Clip(opts), f.optsFor(id)...)
	}
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial node %d at %s: %w", id, addr, err)
	}
	f.conns[id] = c
	return c, nil
}

// forward invokes method on node `to` with the caller's metadata plus the
// given header pairs.
func (f *Forwarder) forward(ctx context.Context, to uint64, method string, req any, headers ...string) (any, error) {
	reply, err := newReply(method)
	if err != nil {
		return nil, err
	}
	if err := f.invoke(ctx, to, method, req, reply, headers...); err != nil {
		return nil, err
	}
	return reply, nil
}

// invoke calls method on node `to` into reply.
func (f *Forwarder) invoke(ctx context.Context, to uint64, method string, req, reply any, headers ...string) error {
	c, err := f.conn(to)
	if err != nil {
		return err
	}
	md, _ := metadata.FromIncomingContext(ctx)
	md = md.Copy()
	for _, k := range []string{":authority", "content-type", "user-agent", "grpc-accept-encoding", "grpc-timeout", "te", server.MaxBytesHeader} {
		delete(md, k)
	}
	md.Set(server.ForwardedHeader, fmt.Sprint(f.self))
	for i := 0; i+1 < len(headers); i += 2 {
		md.Set(headers[i], headers[i+1])
	}
	// A status from the leader, or a transport failure.
	return c.Invoke(metadata.NewOutgoingContext(ctx, md), method, req, reply)
}

// newReply makes an empty response message of a gRPC method, looked up in
// the registry of generated types.
func newReply(fullMethod string) (proto.Message, error) {
	if mt, ok := replyTypes.Load(fullMethod); ok {
		return mt.(protoreflect.MessageType).New().Interface(), nil
	}
	mt, err := replyType(fullMethod)
	if err != nil {
		return nil, err
	}
	replyTypes.Store(fullMethod, mt)
	return mt.New().Interface(), nil
}

// replyTypes caches replyType per method: forwarding is on the path of most
// calls in a cluster, the registry walk need not be.
var replyTypes sync.Map // full method -> protoreflect.MessageType

func replyType(fullMethod string) (protoreflect.MessageType, error) {
	svc, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return nil, fmt.Errorf("bad method name %q", fullMethod)
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, fmt.Errorf("unknown service %q: %w", svc, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%q is not a service", svc)
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		return nil, fmt.Errorf("unknown method %q", fullMethod)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return nil, fmt.Errorf("reply type of %q: %w", fullMethod, err)
	}
	return mt, nil
}

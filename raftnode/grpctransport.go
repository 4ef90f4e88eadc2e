package raftnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	transportpb "github.com/quorumq/quorumq/raftnode/transportpb/v1"
)

// TransportConfig configures a GRPCTransport.
type TransportConfig struct {
	NodeID uint64
	// Peers maps every other node's raft id to its peer gRPC address
	// (host:port). An entry for NodeID itself is ignored.
	Peers map[uint64]string
	// DialOptions are appended to the defaults (insecure credentials, fast
	// reconnect backoff), so they may override them (TLS).
	DialOptions []grpc.DialOption
	// PeerDialOptions, if set, are appended per peer (TLS that checks the
	// peer's certificate names that node).
	PeerDialOptions func(id uint64) []grpc.DialOption
	Logger          *slog.Logger // default slog.Default()
	// Faults, if set, cuts chosen peers off (fault tests only; see faults.go).
	Faults *FaultFilter
	// PeerID, if set, returns the node id the peer of an inbound stream
	// proved (its mutual-TLS certificate). A stream or snapshot whose
	// FromNode differs is refused; nil trusts FromNode (no peer auth).
	PeerID func(ctx context.Context) (uint64, error)
}

// PeerState is what a GRPCTransport knows of a peer.
type PeerState struct {
	Addr        string
	Connected   bool      // the outbound stream is up
	LastContact time.Time // last successful send to, or message from, the peer
}

// GRPCTransport carries raft messages between nodes over gRPC: one
// long-lived client stream per peer carries every group's messages in
// batches (transportpb.v1 RaftTransportService.Stream), and snapshots go
// out of band over their own stream (Snapshot). Send never blocks: each peer
// has a bounded queue, drained by one goroutine per peer that (re)connects
// with exponential backoff and jitter; on overflow messages are dropped and
// on a failed stream the host is told the peer is unreachable (raft
// retries). Close stops every goroutine the transport owns.
type GRPCTransport struct {
	transportpb.UnimplementedRaftTransportServiceServer

	cfg    TransportConfig
	log    *slog.Logger
	opts   []grpc.DialOption // the defaults plus cfg.DialOptions
	ctx    context.Context   // ends at Close
	cancel context.CancelFunc

	peersMu sync.RWMutex
	peers   map[uint64]*peer // grows with SetPeer; an address change replaces the entry
	inc     atomic.Uint64    // the attached host's incarnation, sent with every batch

	mu     sync.Mutex
	host   *Host
	closed bool
	wg     sync.WaitGroup // Add only under mu while !closed

	rejected atomic.Uint64 // inbound messages dropped: wrong sender or not a member

	sentMsgs, sentBatches atomic.Uint64 // raft messages sent, and the stream messages (batches) they went in
}

var (
	_ SnapshotTransport                      = (*GRPCTransport)(nil)
	_ transportpb.RaftTransportServiceServer = (*GRPCTransport)(nil)
)

const (
	maxPeerQueue    = 4096    // messages queued per peer; beyond: dropped
	maxBatchBytes   = 1 << 20 // marshalled bytes per StreamRequest (one message may exceed it)
	minRetryBackoff = 50 * time.Millisecond
	maxRetryBackoff = 2 * time.Second
	maxMsgSize      = 64 << 20 // client-side send limit; a batch or chunk stays far below
)

// peer is one remote node: its connection and outbound queue.
type peer struct {
	id     uint64
	addr   string
	conn   *grpc.ClientConn // nil if the address did not parse
	client transportpb.RaftTransportServiceClient
	wake   chan struct{}   // cap 1
	ctx    context.Context // ends at Close or when SetPeer replaces the peer
	cancel context.CancelFunc
	// reported is the reachability last logged (runPeer's goroutine
	// only): 0 none yet, 1 reachable, -1 unreachable.
	reported     int8
	fencedLogged bool // runPeer only: the peer's fencing was logged

	mu          sync.Mutex
	queue       []Envelope
	connected   bool
	lastContact time.Time
	dropped     uint64
}

// NewGRPCTransport returns a transport for cfg.NodeID; it starts one sender
// goroutine per peer. Connections are made lazily.
func NewGRPCTransport(cfg TransportConfig) *GRPCTransport {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &GRPCTransport{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeID), peers: make(map[uint64]*peer)}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(maxMsgSize)),
	}, cfg.DialOptions...)
	for id, addr := range cfg.Peers {
		t.SetPeer(id, addr)
	}
	return t
}

// SetPeer adds node id at addr, or moves it there (nodes learn new members'
// addresses from the membership records). Messages already queued for the
// old address are dropped (raft resends). No-op for this node itself, an
// unchanged address, or a closed transport.
func (t *GRPCTransport) SetPeer(id uint64, addr string) {
	if id == t.cfg.NodeID {
		return
	}
	t.peersMu.Lock()
	defer t.peersMu.Unlock()
	old := t.peers[id]
	if old != nil && old.addr == addr {
		return
	}
	if !t.track() {
		return
	}
	p := &peer{id: id, addr: addr, wake: make(chan struct{}, 1)}
	popts := t.opts
	if t.cfg.PeerDialOptions != nil {
		popts = append(slices.Clip(t.opts), t.cfg.PeerDialOptions(id)...)
	}
	conn, err := grpc.NewClient(addr, popts...)
	if err != nil {
		t.log.Error("raft peer address unusable; messages to it are dropped", "peer", id, "addr", addr, "err", err)
	} else {
		p.conn, p.client = conn, transportpb.NewRaftTransportServiceClient(conn)
	}
	p.ctx, p.cancel = context.WithCancel(t.ctx)
	t.peers[id] = p
	if old != nil {
		old.cancel() // its goroutine closes its connection
	}
	if p.client == nil {
		t.wg.Done()
		return
	}
	go t.runPeer(p)
}

// peer returns node id's peer, nil if unknown.
func (t *GRPCTransport) peer(id uint64) *peer {
	t.peersMu.RLock()
	defer t.peersMu.RUnlock()
	return t.peers[id]
}

// Attach sets the host that inbound messages and snapshots go to, and that
// hears about unreachable peers. Until then inbound messages are dropped.
func (t *GRPCTransport) Attach(h *Host) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.host = h
	t.inc.Store(h.Incarnation())
}

func (t *GRPCTransport) attached() *Host {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.host
}

// Register registers the peer service on s (the node's peer gRPC server).
// Recommended server option: grpc.MaxRecvMsgSize(16 << 20) (batches and
// chunks are about 1 MiB, a single large entry may exceed 4 MiB).
func (t *GRPCTransport) Register(s *grpc.Server) {
	transportpb.RegisterRaftTransportServiceServer(s, t)
}

// PeerStatus returns the state of every peer, by id.
func (t *GRPCTransport) PeerStatus() map[uint64]PeerState {
	t.peersMu.RLock()
	defer t.peersMu.RUnlock()
	out := make(map[uint64]PeerState, len(t.peers))
	for id, p := range t.peers {
		p.mu.Lock()
		out[id] = PeerState{Addr: p.addr, Connected: p.connected, LastContact: p.lastContact}
		p.mu.Unlock()
	}
	return out
}

// Close stops every goroutine the transport owns (senders, snapshot
// streams, inbound stream readers) and closes the connections. Inbound
// handlers return; later calls fail. It is idempotent.
func (t *GRPCTransport) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait() // every runPeer closed its connection
}

// track counts a goroutine or handler in t.wg unless the transport is
// closed.
func (t *GRPCTransport) track() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

// Send implements Transport: it queues each message for its peer and never
// blocks. Messages to unknown peers, or beyond a peer's queue bound, are
// dropped. A peer's messages are queued together before its sender wakes,
// so a round's messages to one peer leave in one batch (one write) rather
// than as many as the sender's wakeups split them into.
func (t *GRPCTransport) Send(msgs []Envelope) {
	var tos []uint64 // the peers addressed, in order (a few)
	for _, e := range msgs {
		if to := e.Msg.GetTo(); !slices.Contains(tos, to) {
			tos = append(tos, to)
		}
	}
	for _, to := range tos {
		p := t.peer(to)
		if p == nil || p.client == nil || t.cfg.Faults.Drop(p.id) {
			continue
		}
		p.mu.Lock()
		for _, e := range msgs {
			if e.Msg.GetTo() != to {
				continue
			}
			if len(p.queue) < maxPeerQueue {
				p.queue = append(p.queue, e)
			} else {
				p.dropped++
			}
		}
		p.mu.Unlock()
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

func (p *peer) setConnected(up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.connected = up
	if up {
		p.lastContact = time.Now()
	}
}

func (p *peer) touch() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastContact = time.Now()
}

// take removes up to maxBatchBytes of marshalled messages from the queue.
func (p *peer) take(from, inc uint64) (*transportpb.StreamRequest, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	size, n := 0, 0
	for _, e := range p.queue {
		if n > 0 && size >= maxBatchBytes {
			break
		}
		size += proto.Size(e.Msg)
		n++
	}
	// One buffer for the batch's messages (not one allocation each); it
	// is not reused: gRPC may read a sent message lazily.
	buf := make([]byte, 0, size)
	req := &transportpb.StreamRequest{FromNode: from, FromIncarnation: inc, Messages: make([]*transportpb.RaftMessage, n)}
	for i, e := range p.queue[:n] {
		start := len(buf)
		var err error
		if buf, err = (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend(buf, e.Msg); err != nil {
			return nil, fmt.Errorf("marshal raft message: %w", err)
		}
		req.Messages[i] = &transportpb.RaftMessage{Group: e.Group, Message: buf[start:len(buf):len(buf)]}
	}
	clear(p.queue[:n])
	p.queue = p.queue[n:]
	return req, nil
}

func (p *peer) pending() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue) > 0
}

func (p *peer) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.queue)
	p.queue = p.queue[:0]
}

// reportReachable logs p going unreachable or coming back, once per
// transition (a peer down for an hour fails a stream every few seconds).
func (t *GRPCTransport) reportReachable(p *peer, up bool, err error) {
	switch {
	case up && p.reported != 1:
		p.reported = 1
		t.log.Info("raft peer reachable", "peer", p.id, "addr", p.addr)
	case !up && p.reported != -1:
		p.reported = -1
		t.log.Info("raft peer unreachable", "peer", p.id, "addr", p.addr, "err", err)
	}
}

// runPeer drains p's queue into a stream, reconnecting with exponential
// backoff and jitter after failures.
func (t *GRPCTransport) runPeer(p *peer) {
	defer t.wg.Done()
	defer p.conn.Close()
	delay := minRetryBackoff
	for {
		sent, err := t.stream(p)
		if p.ctx.Err() != nil {
			p.setConnected(false)
			return
		}
		p.setConnected(false)
		t.reportReachable(p, false, err)
		if status.Code(err) == codes.FailedPrecondition && !p.fencedLogged {
			p.fencedLogged = true
			t.log.Error("a peer refuses this node's raft messages: this data directory is not the incarnation the cluster knows (was it wiped?); "+
				"this node can never vote again under its id: restart it with an empty data directory and --join", "peer", p.id, "err", err)
		}
		// What was queued for a dead stream is stale; raft resends.
		p.flush()
		if h := t.attached(); h != nil {
			h.ReportUnreachable(p.id)
		}
		if sent {
			delay = minRetryBackoff
		}
		t.log.Debug("raft peer stream failed", "peer", p.id, "addr", p.addr, "err", err, "retry_in", delay)
		jittered := delay/2 + rand.N(delay/2+1)
		timer := time.NewTimer(jittered)
		select {
		case <-p.ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		delay = min(2*delay, maxRetryBackoff)
	}
}

// stream opens one Stream to p and sends batches until an error or Close.
// sent reports whether any batch went out.
func (t *GRPCTransport) stream(p *peer) (sent bool, err error) {
	// Wait for work first, so an idle peer costs no connection attempts.
	for !p.pending() {
		select {
		case <-p.ctx.Done():
			return false, p.ctx.Err()
		case <-p.wake:
		}
	}
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	s, err := p.client.Stream(ctx)
	if err != nil {
		return false, err
	}
	for {
		for p.pending() {
			req, err := p.take(t.cfg.NodeID, t.inc.Load())
			if err != nil {
				return sent, err
			}
			if err := s.Send(req); err != nil {
				if errors.Is(err, io.EOF) { // the real error comes from the receive side
					_, err = s.CloseAndRecv()
				}
				return sent, err
			}
			t.sentBatches.Add(1)
			t.sentMsgs.Add(uint64(len(req.Messages)))
			if !sent {
				sent = true
				p.setConnected(true)
				t.reportReachable(p, true, nil)
			} else {
				p.touch()
			}
		}
		select {
		case <-ctx.Done():
			return sent, ctx.Err()
		case <-p.wake:
		}
	}
}

// SendSnapshot implements SnapshotTransport over the Snapshot RPC: a
// header with the MsgSnap, then one message per data chunk.
func (t *GRPCTransport) SendSnapshot(ctx context.Context, env Envelope, data SnapshotData) error {
	p := t.peer(env.Msg.GetTo())
	if p == nil || p.client == nil {
		return fmt.Errorf("raftnode: no address for node %d", env.Msg.GetTo())
	}
	if t.cfg.Faults.Drop(p.id) {
		return fmt.Errorf("raftnode: node %d is cut off by fault injection", p.id)
	}
	if !t.track() {
		return errors.New("raftnode: transport closed")
	}
	defer t.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(t.ctx, cancel)()
	msg, err := proto.Marshal(env.Msg)
	if err != nil {
		return err
	}
	s, err := p.client.Snapshot(ctx)
	if err != nil {
		return err
	}
	hdr := &transportpb.SnapshotHeader{FromNode: t.cfg.NodeID, FromIncarnation: t.inc.Load(), Group: env.Group, Message: msg}
	if err := s.Send(&transportpb.SnapshotRequest{Kind: &transportpb.SnapshotRequest_Header{Header: hdr}}); err != nil {
		_, rerr := s.CloseAndRecv()
		return errors.Join(err, rerr)
	}
	for {
		chunk, err := data.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err // cancel ends the stream
		}
		req := &transportpb.SnapshotRequest{Kind: &transportpb.SnapshotRequest_Chunk{Chunk: &transportpb.SnapshotChunk{Data: chunk}}}
		if err := s.Send(req); err != nil {
			_, rerr := s.CloseAndRecv()
			return errors.Join(err, rerr)
		}
	}
	if _, err := s.CloseAndRecv(); err != nil {
		return err
	}
	p.touch()
	return nil
}

// recvResult is one Recv outcome of an inbound stream.
type recvResult[T any] struct {
	msg *T
	err error
}

// recvLoop reads an inbound stream on a goroutine the transport owns, so
// handlers can also wait for Close. It ends when the stream does (the
// handler returning ends it).
func recvLoop[T any](t *GRPCTransport, ctx context.Context, recv func() (*T, error)) (<-chan recvResult[T], bool) {
	if !t.track() {
		return nil, false
	}
	ch := make(chan recvResult[T])
	go func() {
		defer t.wg.Done()
		for {
			m, err := recv()
			select {
			case ch <- recvResult[T]{m, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ch, true
}

// Stream implements the server side of RaftTransportService.Stream: every
// message is stepped into the attached host. The stream's sender must be
// the node its certificate names (cfg.PeerID), and each message must come
// from that node, to this node, in a group the sender is a member of;
// others are dropped and counted (Rejected), so a peer cannot speak for
// another or for a group it is not in.
func (t *GRPCTransport) Stream(s grpc.ClientStreamingServer[transportpb.StreamRequest, transportpb.StreamResponse]) error {
	ctx := s.Context()
	authID, err := t.peerID(ctx)
	if err != nil {
		return err
	}
	ch, ok := recvLoop(t, ctx, s.Recv)
	if !ok {
		return status.Error(codes.Unavailable, "raft transport closed")
	}
	for {
		var r recvResult[transportpb.StreamRequest]
		select {
		case <-t.ctx.Done():
			return status.Error(codes.Unavailable, "raft transport closed")
		case <-ctx.Done():
			return ctx.Err()
		case r = <-ch:
		}
		if errors.Is(r.err, io.EOF) {
			return s.SendAndClose(&transportpb.StreamResponse{})
		}
		if r.err != nil {
			return r.err
		}
		from := r.msg.GetFromNode()
		if authID != 0 && from != authID {
			t.reject(len(r.msg.GetMessages()), "raft batch from another node than its certificate", "claims", from, "certificate", authID)
			return status.Errorf(codes.PermissionDenied, "raft batch claims node %d; the certificate is node %d", from, authID)
		}
		if t.cfg.Faults.Drop(from) {
			continue
		}
		h := t.attached()
		if h == nil {
			continue
		}
		if err := h.AdmitPeer(from, r.msg.GetFromIncarnation()); err != nil {
			t.rejected.Add(uint64(len(r.msg.GetMessages()))) // AdmitPeer logs (rate-limited)
			return status.Errorf(codes.FailedPrecondition, "raft transport: %v", err)
		}
		if p := t.peer(from); p != nil {
			p.touch()
		}
		members := map[uint64]bool{} // group -> sender is a member, this batch
		for _, rm := range r.msg.GetMessages() {
			m := &pb.Message{}
			if err := proto.Unmarshal(rm.GetMessage(), m); err != nil {
				return status.Errorf(codes.InvalidArgument, "raft message: %v", err)
			}
			if !t.acceptable(h, rm.GetGroup(), from, m, members) {
				continue
			}
			_ = h.Step(ctx, rm.GetGroup(), m) // unknown group or stopped host: dropped
		}
	}
}

// peerID is the node id an inbound stream's certificate proves, or 0 when
// the transport has no peer authentication.
func (t *GRPCTransport) peerID(ctx context.Context) (uint64, error) {
	if t.cfg.PeerID == nil {
		return 0, nil
	}
	id, err := t.cfg.PeerID(ctx)
	if err != nil {
		t.reject(0, "raft stream without a node identity", "err", err)
		return 0, status.Errorf(codes.PermissionDenied, "raft transport: %v", err)
	}
	return id, nil
}

// acceptable reports whether message m of group, in a batch from node
// `from`, may be stepped: it must name the batch's sender and this node,
// and the sender must be a member of the group. members caches the
// membership answer per group for one batch.
func (t *GRPCTransport) acceptable(h *Host, group, from uint64, m *pb.Message, members map[uint64]bool) bool {
	if m.GetFrom() != from || m.GetTo() != t.cfg.NodeID {
		t.reject(1, "raft message with another sender or recipient than its batch", "group", group, "from", m.GetFrom(), "batch_from", from, "to", m.GetTo())
		return false
	}
	ok, seen := members[group]
	if !seen {
		st, err := h.Status(group)
		if err != nil && !errors.Is(err, ErrHalted) {
			return false // unknown group or stopped host: Step would drop it too
		}
		// A replica that joins has no members until the leader's first
		// append or snapshot tells it its configuration: it hears from
		// whoever leads the group (the peer is authenticated already). A
		// replica added back after it left has a stale configuration: it
		// hears from the members the cluster's records name.
		ok = len(st.Members) == 0 || slices.Contains(st.Members, from) || h.recordedMember(group, from)
		members[group] = ok
	}
	if !ok {
		t.reject(1, "raft message from a node that is not a member of the group", "group", group, "from", from)
	}
	return ok
}

// reject counts n dropped inbound messages and logs why (rare: a
// misconfigured or hostile peer).
func (t *GRPCTransport) reject(n int, why string, attrs ...any) {
	t.rejected.Add(uint64(n))
	t.log.Warn("raft transport: "+why+"; dropped", attrs...)
}

// Rejected counts the inbound raft messages dropped because their sender
// was not the authenticated node or not a member of the group.
func (t *GRPCTransport) Rejected() uint64 { return t.rejected.Load() }

// Sent reports the raft messages sent to peers so far, and the batches
// (stream messages) they went in: messages per batch is how well a
// round's messages to one peer share a write.
func (t *GRPCTransport) Sent() (messages, batches uint64) {
	return t.sentMsgs.Load(), t.sentBatches.Load()
}

// Snapshot implements the server side of RaftTransportService.Snapshot: the
// header's MsgSnap and the chunks go to the host's ReceiveSnapshot.
func (t *GRPCTransport) Snapshot(s grpc.ClientStreamingServer[transportpb.SnapshotRequest, transportpb.SnapshotResponse]) error {
	ctx, cancel := context.WithCancel(s.Context())
	defer cancel()
	defer context.AfterFunc(t.ctx, cancel)()
	authID, err := t.peerID(ctx)
	if err != nil {
		return err
	}
	ch, ok := recvLoop(t, ctx, s.Recv)
	if !ok {
		return status.Error(codes.Unavailable, "raft transport closed")
	}
	next := func() (*transportpb.SnapshotRequest, error) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case r := <-ch:
			return r.msg, r.err
		}
	}
	first, err := next()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return status.Error(codes.InvalidArgument, "snapshot stream must start with a header")
	}
	from := hdr.GetFromNode()
	if authID != 0 && from != authID {
		t.reject(1, "snapshot from another node than its certificate", "claims", from, "certificate", authID)
		return status.Errorf(codes.PermissionDenied, "snapshot claims node %d; the certificate is node %d", from, authID)
	}
	if t.cfg.Faults.Drop(from) {
		return status.Error(codes.Unavailable, "peer cut off by fault injection")
	}
	h := t.attached()
	if h == nil {
		return status.Error(codes.Unavailable, "raft host not attached")
	}
	if err := h.AdmitPeer(from, hdr.GetFromIncarnation()); err != nil {
		t.rejected.Add(1)
		return status.Errorf(codes.FailedPrecondition, "raft transport: %v", err)
	}
	m := &pb.Message{}
	if err := proto.Unmarshal(hdr.GetMessage(), m); err != nil {
		return status.Errorf(codes.InvalidArgument, "snapshot message: %v", err)
	}
	if !t.acceptable(h, hdr.GetGroup(), from, m, map[uint64]bool{}) {
		return status.Errorf(codes.PermissionDenied, "snapshot of group %d from node %d refused (not a member, or not addressed to this node)", hdr.GetGroup(), from)
	}
	if p := t.peer(from); p != nil {
		p.touch()
	}
	data := grpcChunks{next: next}
	if err := h.ReceiveSnapshot(ctx, hdr.GetGroup(), m, data); err != nil {
		return status.Errorf(codes.Aborted, "receive snapshot: %v", err)
	}
	return s.SendAndClose(&transportpb.SnapshotResponse{})
}

// grpcChunks adapts an inbound snapshot stream to SnapshotData.
type grpcChunks struct {
	next func() (*transportpb.SnapshotRequest, error)
}

func (c grpcChunks) Next() ([]byte, error) {
	r, err := c.next()
	if err != nil {
		return nil, err // io.EOF at the end of the stream
	}
	ch := r.GetChunk()
	if ch == nil {
		return nil, errors.New("snapshot stream: expected a chunk")
	}
	return ch.GetData(), nil
}

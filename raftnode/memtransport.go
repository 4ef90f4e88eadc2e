package raftnode

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// MemNetwork is an in-process network of hosts for tests: messages are
// cloned (as a wire would) and delivered synchronously into the receiver's
// Step, which only queues (or after a per-message delay). Snapshots are
// streamed chunk by chunk into the receiver's ReceiveSnapshot. It can
// partition nodes, drop messages by a filter, delay them, and observe
// deliveries and snapshot chunks.
type MemNetwork struct {
	mu        sync.RWMutex
	nodes     map[uint64]Stepper
	side      map[uint64]int // partition side per node; absent = side 0
	nextSide  int
	drop      func(Envelope) bool
	delay     func(Envelope) time.Duration
	onDeliver func(Envelope)
	onChunk   func(env Envelope, chunk int)
	sent      atomic.Uint64
	dropped   atomic.Uint64
	snaps     atomic.Uint64
	chunks    atomic.Uint64
}

// ErrUnreachable is returned by MemNetwork snapshot sends to a node that is
// detached or on the other side of a partition.
var ErrUnreachable = errors.New("raftnode: memnetwork: node unreachable")

// Stepper receives messages; *Host implements it.
type Stepper interface {
	Step(ctx context.Context, group uint64, m *pb.Message) error
}

var _ Stepper = (*Host)(nil)

// admitter is a receiver that fences peers by incarnation (*Host).
type admitter interface {
	AdmitPeer(from, incarnation uint64) error
}

// incarnationer is a sender with an incarnation (*Host).
type incarnationer interface {
	Incarnation() uint64
}

// admits reports whether dst takes messages from node `from`, as a wire
// would carry the sender's incarnation; n.mu is read-locked.
func (n *MemNetwork) admits(from uint64, dst Stepper) bool {
	a, ok := dst.(admitter)
	if !ok {
		return true
	}
	var inc uint64
	if src, ok := n.nodes[from].(incarnationer); ok {
		inc = src.Incarnation()
	}
	return a.AdmitPeer(from, inc) == nil
}

// NewMemNetwork returns an empty network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{nodes: make(map[uint64]Stepper), side: make(map[uint64]int)}
}

// Transport returns the Transport node id sends through.
func (n *MemNetwork) Transport(id uint64) Transport { return memTransport{net: n, from: id} }

// Attach connects node id's receiver (replacing a previous one, as after a
// restart).
func (n *MemNetwork) Attach(id uint64, s Stepper) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nodes[id] = s
}

// Detach disconnects node id: messages to it are dropped.
func (n *MemNetwork) Detach(id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.nodes, id)
}

// Partition cuts the listed nodes off from all others (they can still talk
// among themselves). Calls accumulate: each call makes a new side.
func (n *MemNetwork) Partition(ids ...uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nextSide++
	for _, id := range ids {
		n.side[id] = n.nextSide
	}
}

// Heal removes all partitions, the drop filter and the delay.
func (n *MemNetwork) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.side = make(map[uint64]int)
	n.drop = nil
	n.delay = nil
}

// Delay sets a per-message delay: a message for which f returns d > 0 is
// delivered d later (from a timer goroutine; order is not kept). nil
// removes it. Snapshots are not delayed.
func (n *MemNetwork) Delay(f func(Envelope) time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.delay = f
}

// OnSnapshotChunk sets a hook called from the sending host's snapshot
// goroutine before chunk number chunk (1-based) of a snapshot is delivered.
// It may block (to hold a transfer mid-way); the transfer waits.
func (n *MemNetwork) OnSnapshotChunk(f func(env Envelope, chunk int)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.onChunk = f
}

// SnapshotCounts returns the snapshots delivered (accepted by the receiver)
// and the snapshot chunks delivered so far.
func (n *MemNetwork) SnapshotCounts() (snapshots, chunks uint64) {
	return n.snaps.Load(), n.chunks.Load()
}

// Drop sets a filter: messages for which it returns true are dropped. nil
// removes it.
func (n *MemNetwork) Drop(f func(Envelope) bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.drop = f
}

// OnDeliver sets a hook called (synchronously, from the sender's loop) after
// each delivered message. It must not block.
func (n *MemNetwork) OnDeliver(f func(Envelope)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.onDeliver = f
}

// Counts returns the messages delivered and dropped so far.
func (n *MemNetwork) Counts() (delivered, dropped uint64) {
	return n.sent.Load(), n.dropped.Load()
}

type memTransport struct {
	net  *MemNetwork
	from uint64
}

var _ SnapshotTransport = memTransport{}

func (t memTransport) Send(msgs []Envelope) {
	n := t.net
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, e := range msgs {
		to := e.Msg.GetTo()
		dst := n.nodes[to]
		if dst == nil || n.side[t.from] != n.side[to] || (n.drop != nil && n.drop(e)) || !n.admits(t.from, dst) {
			n.dropped.Add(1)
			continue
		}
		c := Envelope{Group: e.Group, Msg: proto.CloneOf(e.Msg)}
		if n.delay != nil {
			if d := n.delay(e); d > 0 {
				time.AfterFunc(d, func() { n.deliverLate(t.from, c) })
				continue
			}
		}
		n.deliver(dst, c)
	}
}

// deliver steps c into dst; n.mu is read-locked.
func (n *MemNetwork) deliver(dst Stepper, c Envelope) {
	if err := dst.Step(context.Background(), c.Group, c.Msg); err != nil {
		n.dropped.Add(1)
		return
	}
	n.sent.Add(1)
	if n.onDeliver != nil {
		n.onDeliver(c)
	}
}

// deliverLate delivers a delayed message if its path still exists.
func (n *MemNetwork) deliverLate(from uint64, c Envelope) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	to := c.Msg.GetTo()
	if dst := n.nodes[to]; dst != nil && n.side[from] == n.side[to] && n.admits(from, dst) {
		n.deliver(dst, c)
		return
	}
	n.dropped.Add(1)
}

// reachable returns the receiver of a snapshot from -> to, or an error.
func (n *MemNetwork) reachable(from, to uint64) (SnapshotReceiver, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	dst := n.nodes[to]
	if dst == nil || n.side[from] != n.side[to] {
		return nil, fmt.Errorf("%w: %d -> %d", ErrUnreachable, from, to)
	}
	if !n.admits(from, dst) {
		return nil, fmt.Errorf("%w: %d -> %d", ErrFenced, from, to)
	}
	r, ok := dst.(SnapshotReceiver)
	if !ok {
		return nil, fmt.Errorf("raftnode: memnetwork: node %d cannot receive snapshots", to)
	}
	return r, nil
}

// SendSnapshot streams the snapshot into the receiver's ReceiveSnapshot,
// cloning every chunk; a partition or detach mid-way fails the transfer.
func (t memTransport) SendSnapshot(ctx context.Context, env Envelope, data SnapshotData) error {
	n, to := t.net, env.Msg.GetTo()
	dst, err := n.reachable(t.from, to)
	if err != nil {
		return err
	}
	c := &memChunks{net: n, from: t.from, env: env, data: data}
	if err := dst.ReceiveSnapshot(ctx, env.Group, proto.CloneOf(env.Msg), c); err != nil {
		return err
	}
	n.snaps.Add(1)
	return nil
}

type memChunks struct {
	net  *MemNetwork
	from uint64
	env  Envelope
	data SnapshotData
	n    int
}

func (c *memChunks) Next() ([]byte, error) {
	b, err := c.data.Next()
	if err != nil {
		return nil, err
	}
	c.n++
	c.net.mu.RLock()
	hook := c.net.onChunk
	c.net.mu.RUnlock()
	if hook != nil {
		hook(c.env, c.n)
	}
	if _, err := c.net.reachable(c.from, c.env.Msg.GetTo()); err != nil {
		return nil, err
	}
	c.net.chunks.Add(1)
	return append([]byte(nil), b...), nil
}

package raftnode

import (
	"context"
	"sync"
	"sync/atomic"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// MemNetwork is an in-process network of hosts for tests: messages are
// cloned (as a wire would) and delivered synchronously into the receiver's
// Step, which only queues. It can partition nodes, drop messages by a
// filter, and observe deliveries.
type MemNetwork struct {
	mu        sync.RWMutex
	nodes     map[uint64]Stepper
	side      map[uint64]int // partition side per node; absent = side 0
	nextSide  int
	drop      func(Envelope) bool
	onDeliver func(Envelope)
	sent      atomic.Uint64
	dropped   atomic.Uint64
}

// Stepper receives messages; *Host implements it.
type Stepper interface {
	Step(ctx context.Context, group uint64, m *pb.Message) error
}

var _ Stepper = (*Host)(nil)

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

// Heal removes all partitions and the drop filter.
func (n *MemNetwork) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.side = make(map[uint64]int)
	n.drop = nil
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

func (t memTransport) Send(msgs []Envelope) {
	n := t.net
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, e := range msgs {
		to := e.Msg.GetTo()
		dst := n.nodes[to]
		if dst == nil || n.side[t.from] != n.side[to] || (n.drop != nil && n.drop(e)) {
			n.dropped.Add(1)
			continue
		}
		c := Envelope{Group: e.Group, Msg: proto.CloneOf(e.Msg)}
		if err := dst.Step(context.Background(), c.Group, c.Msg); err != nil {
			n.dropped.Add(1)
			continue
		}
		n.sent.Add(1)
		if n.onDeliver != nil {
			n.onDeliver(c)
		}
	}
}

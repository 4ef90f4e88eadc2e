package raftnode

import (
	"slices"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func TestFaultFilterDropsMessagesToBlockedPeers(t *testing.T) {
	f := NewFaultFilter()
	tr := NewGRPCTransport(TransportConfig{NodeID: 1, Peers: map[uint64]string{1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"},
		Logger: testLogger(t), Faults: f})
	defer tr.Close()
	queued := func(id uint64) int {
		p := tr.peers[id]
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.queue)
	}
	msg := func(to uint64) Envelope {
		return Envelope{Group: 7, Msg: &pb.Message{Type: pb.MessageType_MsgHeartbeat.Enum(), From: proto.Uint64(1), To: proto.Uint64(to)}}
	}
	f.Set([]uint64{2})
	if got := f.Blocked(); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("Blocked() = %v, want [2]", got)
	}
	tr.Send([]Envelope{msg(2), msg(3)})
	if queued(2) != 0 || f.Dropped() != 1 {
		t.Fatalf("blocked peer: queued %d, dropped %d; want 0 and 1", queued(2), f.Dropped())
	}
	f.Set(nil)
	tr.Send([]Envelope{msg(2)})
	if f.Dropped() != 1 || len(f.Blocked()) != 0 {
		t.Fatalf("healed filter: dropped %d, blocked %v", f.Dropped(), f.Blocked())
	}
	var none *FaultFilter // a transport without a filter
	if none.Drop(2) || none.Blocked() != nil || none.Dropped() != 0 {
		t.Fatal("a nil filter must block nothing")
	}
}

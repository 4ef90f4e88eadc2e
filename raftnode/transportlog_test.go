package raftnode

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/testports"
)

// logBuf collects log output from several goroutines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// count returns how many records have message msg.
func (l *logBuf) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), `"msg":"`+msg+`"`)
}

// TestGRPCTransportLogsReachability: a peer going unreachable and coming
// back is logged at info once per transition, however many stream
// attempts fail meanwhile.
func TestGRPCTransportLogsReachability(t *testing.T) {
	// Nothing listens at addr2 until the peer "comes back". It comes from
	// below the ephemeral range, where no outgoing connection can take it
	// meanwhile.
	addr2, err := testports.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	peers := map[uint64]string{1: "127.0.0.1:1", 2: addr2}
	var logs logBuf
	tr := NewGRPCTransport(TransportConfig{NodeID: 1, Peers: peers,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	defer tr.Close()
	send := func() {
		tr.Send([]Envelope{{Group: 1, Msg: &pb.Message{Type: pb.MessageType_MsgHeartbeat.Enum(), From: proto.Uint64(1), To: proto.Uint64(2)}}})
	}
	// waitLog keeps traffic flowing until cond holds.
	waitLog := func(what string, cond func() bool) {
		t.Helper()
		checkFor(t, 20*time.Second, func() error {
			send()
			if !cond() {
				return fmt.Errorf("%s: unreachable %d, reachable %d, stream failures %d", what,
					logs.count("raft peer unreachable"), logs.count("raft peer reachable"), logs.count("raft peer stream failed"))
			}
			return nil
		})
	}
	waitLog("down", func() bool { return logs.count("raft peer stream failed") >= 3 })
	if n := logs.count("raft peer unreachable"); n != 1 {
		t.Fatalf("%d stream failures logged %d unreachable records, want 1", logs.count("raft peer stream failed"), n)
	}

	l, err := net.Listen("tcp", addr2)
	if err != nil {
		t.Fatal(err)
	}
	tr2 := NewGRPCTransport(TransportConfig{NodeID: 2, Peers: peers, Logger: testLogger(t)})
	defer tr2.Close()
	srv := grpc.NewServer()
	tr2.Register(srv)
	var serve sync.WaitGroup
	serve.Go(func() { _ = srv.Serve(l) })
	waitLog("back", func() bool { return logs.count("raft peer reachable") == 1 })

	srv.Stop()
	serve.Wait()
	waitLog("down again", func() bool { return logs.count("raft peer unreachable") == 2 })
	if n := logs.count("raft peer reachable"); n != 1 {
		t.Errorf("reachable logged %d times, want 1", n)
	}
}

package shardserver_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server/node"
)

// cpuTime is the process's user + system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSendMessageConcurrent sends 1 KiB messages with SendMessage
// (one message per call) from many goroutines at once to one queue of a
// single-node cluster over loopback gRPC, as producers with many
// unconfirmed sends do. Besides ns/op it reports the process's CPU time
// per message (client and server share the process) and Raft proposals
// per message.
//
//	go test -run '^$' -bench BenchmarkSendMessageConcurrent -benchtime 20000x ./server/shardserver/
func BenchmarkSendMessageConcurrent(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n, err := node.Start(ctx, node.Config{
		DataDir: b.TempDir(), HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = n.Stop(context.Background()) }()
	if err := n.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := qv1.NewQueueServiceClient(conn)
	if _, err := client.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "bench"}); err != nil {
		b.Fatal(err)
	}
	body := strings.Repeat("x", 1024)
	b.SetParallelism(128) // 128 × GOMAXPROCS sends in flight
	props0, cpu0 := n.Host().Proposals(), cpuTime(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "bench", Body: body}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	cpu, props := cpuTime(b)-cpu0, n.Host().Proposals()-props0
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
	b.ReportMetric(float64(props)/float64(b.N), "proposals/msg")
}

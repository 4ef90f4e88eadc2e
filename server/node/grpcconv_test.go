package node_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/node"
)

// denyAll rejects every caller: what health and reflection must not need.
type denyAll struct{}

func (denyAll) Authenticate(context.Context) (*server.Principal, error) {
	return nil, status.Error(codes.Unauthenticated, "no token")
}

// TestGRPCReflectionAndHealth: on a ready node with auth on, a reflection
// client lists the services (v1alpha too, for older tools) and resolves the google.rpc
// error details by symbol, and Health answers SERVING overall and per
// service, all without a token; the queue API still wants one.
func TestGRPCReflectionAndHealth(t *testing.T) {
	n := startNode(t, node.Config{Authenticator: denyAll{}})
	ctx := testCtx(t)
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, n.GRPCAddr())

	rs, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *rpb.ServerReflectionRequest) *rpb.ServerReflectionResponse {
		t.Helper()
		if err := rs.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := rs.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	list := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}})
	var names []string
	for _, s := range list.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"quorumq.v1.QueueService", "quorumq.v1.ClusterService", "grpc.health.v1.Health",
		"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	for _, sym := range []string{"google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RetryInfo", "quorumq.v1.SendMessageRequest"} {
		resp := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: sym}})
		if e := resp.GetErrorResponse(); e != nil || len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
			t.Errorf("reflection cannot resolve %s: %v", sym, e)
		}
	}
	_ = rs.CloseSend()

	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", "quorumq.v1.QueueService", "quorumq.v1.ClusterService"} {
		waitFor(t, func() error {
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil {
				return err
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return errors.New(resp.GetStatus().String())
			}
			return nil
		})
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "quorumq.v1.Nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("Check of an unknown service: %v, want NotFound", err)
	}
	if _, err := qv1.NewQueueServiceClient(conn).ListQueues(ctx, &qv1.ListQueuesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListQueues without a token: %v, want Unauthenticated", err)
	}
}

// TestGRPCHealthNotReady: a node of a 3-node cluster started alone has no
// leader, so Health answers NOT_SERVING (as /readyz answers 503).
func TestGRPCHealthNotReady(t *testing.T) {
	mem := raftnode.NewMemNetwork()
	peers := map[uint64]string{1: freeAddr(t), 2: freeAddr(t), 3: freeAddr(t)}
	n := startNode(t, node.Config{NodeID: 1, Peers: peers, RaftAddr: peers[1], Authenticator: denyAll{},
		RaftTransport: mem.Transport(1), AttachHost: func(h *raftnode.Host) { mem.Attach(1, h) }})
	ctx := testCtx(t)
	hc := healthpb.NewHealthClient(dial(t, n.GRPCAddr()))
	for _, svc := range []string{"", "quorumq.v1.QueueService", "quorumq.v1.ClusterService"} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("Check(%q) = %v, %v; want NOT_SERVING", svc, resp, err)
		}
	}
}

// TestGRPCHealthWatchEndsOnStop: an open Watch sees NOT_SERVING when the
// node stops and then ends, and does not hold Stop until its deadline.
func TestGRPCHealthWatchEndsOnStop(t *testing.T) {
	n := startNode(t, node.Config{})
	ctx := testCtx(t)
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := healthpb.NewHealthClient(dial(t, n.GRPCAddr())).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
	}
	const stopBudget = 20 * time.Second
	sctx, cancel := context.WithTimeout(context.Background(), stopBudget)
	defer cancel()
	start := time.Now()
	if err := n.Stop(sctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > stopBudget/2 {
		t.Errorf("Stop took %v with a Watch open: the stream held the graceful stop", d)
	}
	sawNotServing := false
	for {
		resp, err := w.Recv()
		if err != nil {
			break
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			sawNotServing = true
		}
	}
	if !sawNotServing {
		t.Error("Watch ended without reporting NOT_SERVING")
	}
}

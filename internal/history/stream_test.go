package history

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

// fakeStream replays reads and swallows answers.
type fakeStream struct {
	grpc.ServerStream
	ctx   context.Context
	reads []any
}

func (s *fakeStream) Context() context.Context { return s.ctx }
func (s *fakeStream) SendMsg(any) error        { return nil }
func (s *fakeStream) RecvMsg(m any) error {
	proto.Merge(m.(proto.Message), s.reads[0].(proto.Message))
	s.reads = s.reads[1:]
	return nil
}

func TestStreamInterceptorCountsAnswers(t *testing.T) {
	r := New(0)
	icpt := StreamInterceptor(r, func() time.Time { return t0 })
	ctx := withPrincipal(server.ScopeMessagesSend)
	send := &fakeStream{ctx: ctx, reads: []any{
		&qv1.SendStreamRequest{Queue: "a", Entries: []*qv1.SendMessageBatchEntry{{Id: "1"}, {Id: "2"}}},
		&qv1.SendStreamRequest{Queue: "b", Entries: []*qv1.SendMessageBatchEntry{{Id: "3"}}},
	}}
	_ = icpt(nil, send, &grpc.StreamServerInfo{FullMethod: "/quorumq.v1.QueueService/SendStream"}, func(_ any, ss grpc.ServerStream) error {
		for range 2 {
			if err := ss.RecvMsg(&qv1.SendStreamRequest{}); err != nil {
				return err
			}
		}
		return ss.SendMsg(&qv1.SendStreamResponse{Successful: []*qv1.SendMessageBatchResult{{Id: "1"}, {Id: "3"}}, Failed: []*qv1.BatchResultError{{Id: "2"}}})
	})
	cons := &fakeStream{ctx: ctx, reads: []any{
		&qv1.ConsumeRequest{Queue: "a", Credit: 5},
		&qv1.ConsumeRequest{Acks: []*qv1.DeleteMessageBatchEntry{{Id: "x"}, {Id: "y"}},
			VisibilityChanges: []*qv1.ChangeMessageVisibilityBatchEntry{{Id: "z"}}},
	}}
	_ = icpt(nil, cons, &grpc.StreamServerInfo{FullMethod: "/quorumq.v1.QueueService/Consume"}, func(_ any, ss grpc.ServerStream) error {
		if err := ss.RecvMsg(&qv1.ConsumeRequest{}); err != nil {
			return err
		}
		if err := ss.SendMsg(&qv1.ConsumeResponse{Messages: make([]*qv1.ReceivedMessage, 3)}); err != nil {
			return err
		}
		if err := ss.RecvMsg(&qv1.ConsumeRequest{}); err != nil {
			return err
		}
		return ss.SendMsg(&qv1.ConsumeResponse{Successful: []*qv1.BatchResultOk{{Id: "x"}, {Id: "z"}}, Failed: []*qv1.BatchResultError{{Id: "y"}}})
	})
	for q, want := range map[string][kinds]int64{"a": {1, 3, 1}, "b": {1, 0, 0}} {
		total, _ := r.Query(t0, "acme", q, 1, false)
		if c := total[0].Counts; c != want {
			t.Errorf("%s: counts %v, want %v (sent, received, deleted)", q, c, want)
		}
	}
}

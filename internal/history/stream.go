package history

import (
	"sync"
	"time"

	"google.golang.org/grpc"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

// StreamInterceptor counts what QueueService's streams did, by their
// answers, as Interceptor does for calls: entries a SendStream stored (by
// the queue their write named), messages a Consume stream pushed, and its
// acks answered as done. It must run inside the authenticating stream
// interceptor, on the client listener only.
func StreamInterceptor(r *Ring, now func() time.Time) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		p := server.PrincipalFrom(ss.Context())
		if p == nil || (info.FullMethod != "/quorumq.v1.QueueService/SendStream" && info.FullMethod != "/quorumq.v1.QueueService/Consume") {
			return handler(srv, ss)
		}
		return handler(srv, &countingStream{ServerStream: ss, r: r, now: now, tenant: p.Tenant,
			queues: map[string]string{}, acks: map[string]bool{}})
	}
}

// countingStream watches a stream's writes and answers. Its maps hold
// the ids of entries and acks read and not yet answered, which the
// stream's own window bounds.
type countingStream struct {
	grpc.ServerStream
	r      *Ring
	now    func() time.Time
	tenant string

	mu     sync.Mutex
	queues map[string]string // SendStream: entry id -> queue
	queue  string            // Consume: the queue
	acks   map[string]bool   // Consume: ack ids (not visibility changes)
}

func (s *countingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch rq := m.(type) {
	case *qv1.SendStreamRequest:
		for _, e := range rq.GetEntries() {
			s.queues[e.GetId()] = rq.GetQueue()
		}
	case *qv1.ConsumeRequest:
		if s.queue == "" {
			s.queue = rq.GetQueue()
		}
		for _, a := range rq.GetAcks() {
			s.acks[a.GetId()] = true
		}
	}
	return nil
}

func (s *countingStream) SendMsg(m any) error {
	s.mu.Lock()
	switch rs := m.(type) {
	case *qv1.SendStreamResponse:
		sent := map[string]int{}
		for _, ok := range rs.GetSuccessful() {
			if q, found := s.queues[ok.GetId()]; found {
				sent[q]++
				delete(s.queues, ok.GetId())
			}
		}
		for _, f := range rs.GetFailed() {
			delete(s.queues, f.GetId())
		}
		for q, n := range sent {
			s.r.Add(s.now(), s.tenant, q, Sent, n)
		}
	case *qv1.ConsumeResponse:
		if n := len(rs.GetMessages()); n > 0 {
			s.r.Add(s.now(), s.tenant, s.queue, Received, n)
		}
		deleted := 0
		for _, ok := range rs.GetSuccessful() {
			if s.acks[ok.GetId()] {
				deleted++
				delete(s.acks, ok.GetId())
			}
		}
		for _, f := range rs.GetFailed() {
			delete(s.acks, f.GetId())
		}
		if deleted > 0 {
			s.r.Add(s.now(), s.tenant, s.queue, Deleted, deleted)
		}
	}
	s.mu.Unlock()
	return s.ServerStream.SendMsg(m)
}

package quorumq

import (
	"cmp"
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// streamRetryAfter is how long a Producer or Consumer that could not
// keep a stream open waits before it opens another (meanwhile a Producer
// sends with unary calls).
const streamRetryAfter = time.Second

// sendStream is one SendStream of a Producer. Batches written to it are
// answered by entry id (a counter of the stream); when the stream breaks,
// its unanswered entries are sent again with unary calls, under their
// idempotency keys, so none is lost or stored twice.
type sendStream struct {
	p      *Producer
	ep     uint64 // endpoint index
	stream qv1.QueueService_SendStreamClient
	cancel context.CancelFunc
	done   chan struct{} // closed when the reader has ended

	wmu     sync.Mutex // serialises writes, in batch order
	mu      sync.Mutex
	pending map[string]*published
	next    uint64
	broken  bool // the reader ended: write no more
	closing bool // half-closed: write no more
	rotate  atomic.Bool
}

// openSendStream opens a stream to the queue's home endpoint (the one
// that last served it without forwarding).
func (p *Producer) openSendStream() (*sendStream, error) {
	c := p.q.c
	start := routeHome(p.q.rt)
	if start == 0 {
		start = c.next.Add(1)
	}
	ep, k := c.pick(start-1, 1)
	ctx, cancel := context.WithCancel(p.ctx)
	actx, err := c.authorize(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	st, err := ep.api.SendStream(actx)
	if err != nil {
		cancel()
		return nil, asError(err)
	}
	s := &sendStream{p: p, ep: k, stream: st, cancel: cancel, done: make(chan struct{}), pending: map[string]*published{}}
	p.streams.Add(1)
	go s.read()
	return s, nil
}

// write sends a batch on the stream; false when the stream takes no more
// writes (the caller then sends the batch some other way).
func (s *sendStream) write(batch []*published) bool {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	if s.broken || s.closing {
		s.mu.Unlock()
		return false
	}
	req := &qv1.SendStreamRequest{Queue: s.p.q.name, Entries: make([]*qv1.SendMessageBatchEntry, len(batch))}
	for i, m := range batch {
		s.next++
		id := strconv.FormatUint(s.next, 10)
		m.entry.Id = id
		s.pending[id] = m
		req.Entries[i] = m.entry
	}
	s.mu.Unlock()
	// A failed write breaks the stream: the reader then sees the failure
	// and sends every unanswered entry, this batch's too, again.
	_ = s.stream.Send(req)
	return true
}

// closeSend half-closes the stream: the server answers what it has and
// ends it.
func (s *sendStream) closeSend() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	was := s.closing || s.broken
	s.closing = true
	s.mu.Unlock()
	if !was {
		_ = s.stream.CloseSend()
	}
}

// read answers entries until the stream ends.
func (s *sendStream) read() {
	defer s.p.streams.Done()
	defer close(s.done)
	defer s.cancel()
	first := true
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			s.fail(err)
			return
		}
		if first {
			first = false
			if md, err := s.stream.Header(); err == nil && len(md.Get(forwardedToHeader)) > 0 {
				s.p.forwarded(s)
			}
		}
		var again []*published
		for _, ok := range resp.GetSuccessful() {
			if m := s.take(ok.GetId()); m != nil {
				s.p.finish(m, SendResult{MessageID: ok.GetMessageId(), Sequence: ok.GetSequence()}, nil)
			}
		}
		for _, f := range resp.GetFailed() {
			m := s.take(f.GetId())
			if m == nil {
				continue
			}
			e := batchEntryError(f)
			if ok, _ := retryable(e, false); ok {
				again = append(again, m) // the unary path retries it under the policy
				continue
			}
			s.p.finish(m, SendResult{}, e)
		}
		if len(again) > 0 {
			s.p.sendUnary(again)
		}
	}
}

func (s *sendStream) take(id string) *published {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.pending[id]
	delete(s.pending, id)
	return m
}

// fail ends the stream: its unanswered entries go again by unary calls.
// A server without SendStream makes the producer use unary calls only.
func (s *sendStream) fail(err error) {
	s.cancel() // a write in progress returns; then none starts
	s.wmu.Lock()
	s.mu.Lock()
	s.broken = true
	left := make([]*published, 0, len(s.pending))
	for _, m := range s.pending {
		left = append(left, m)
	}
	s.pending = nil
	s.mu.Unlock()
	s.wmu.Unlock()
	slices.SortFunc(left, func(a, b *published) int { // in the order written (FIFO order)
		x, _ := strconv.ParseUint(a.entry.GetId(), 10, 64)
		y, _ := strconv.ParseUint(b.entry.GetId(), 10, 64)
		return cmp.Compare(x, y)
	})
	if !errors.Is(err, io.EOF) {
		var e *Error
		if errors.As(asError(err), &e) && e.Code == codes.Unimplemented {
			s.p.noStream.Store(true)
		}
		// The node may be gone: the next stream tries the next one.
		n := uint64(len(s.p.q.c.eps))
		s.p.q.rt.home.CompareAndSwap(s.ep+1, (s.ep+1)%n+1)
		s.p.streamFailed()
	}
	if len(left) > 0 {
		s.p.sendUnary(left)
	}
}

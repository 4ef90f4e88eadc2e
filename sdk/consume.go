package quorumq

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// errNoConsume: the server has no Consume stream; receive with calls.
var errNoConsume = errors.New("quorumq: server has no Consume stream")

const (
	// creditLinger is how long a grant of a little credit waits for more
	// (handlers finishing one by one would otherwise write once each).
	creditLinger = 2 * time.Millisecond
	// consumeCloseWait bounds the wait for the server to end a
	// half-closed stream (it finishes a receive of up to 2s first).
	consumeCloseWait = 10 * time.Second
)

// consumeLoop receives with Consume streams until ctx is done or the
// stream fails with an error that retrying cannot fix; it reopens broken
// streams after a backoff. errNoConsume: the server has none.
func (r *run) consumeLoop(ctx context.Context) error {
	failures, rotations, pushed := 0, 0, false
	for ctx.Err() == nil {
		s, ep, err := r.openConsume(ctx)
		if err == nil {
			err = s.serve(ctx, &rotations)
			pushed = pushed || s.pushedAny
		}
		if ctx.Err() != nil {
			return nil
		}
		if err == nil { // moved to another endpoint, or the server ended it
			failures = 0
			select {
			case <-s.rotate:
			default: // not asked to: do not spin on a server that ends streams
				if sleepCtx(ctx, streamRetryAfter/4) != nil {
					return nil
				}
			}
			continue
		}
		var e *Error
		isErr := errors.As(err, &e)
		if isErr && e.Code == codes.Unimplemented && !pushed {
			return errNoConsume
		}
		// A stream that served a while ends when its token expires: a new
		// one takes a fresh token from the token source.
		expired := isErr && e.Code == codes.Unauthenticated && s != nil && s.pushedAny
		if !retryableWrapped(err) && !expired && !(isErr && e.Code == codes.Canceled) {
			return fmt.Errorf("quorumq: consumer of %s: %w", r.c.q.name, err)
		}
		failures++
		r.report(nil, fmt.Errorf("consume stream: %w", err))
		// The node may be gone: the next stream goes to the next one
		// (any node serves; forwarding moves it on from there).
		eps := r.c.q.c.eps
		if transportFailure(err) && len(eps) > 1 {
			eps[ep].downUntil.Store(time.Now().Add(downFor).UnixNano())
		}
		r.c.q.rt.home.Store((ep+1)%uint64(len(eps)) + 1)
		if sleepCtx(ctx, max(r.c.q.c.retry.backoff(failures), streamRetryAfter/4)) != nil {
			return nil
		}
	}
	return nil
}

// consumeStream is one Consume stream of a Run.
type consumeStream struct {
	r      *run
	ep     uint64
	stream qv1.QueueService_ConsumeClient
	cancel context.CancelFunc
	done   chan struct{} // closed when the reader has ended
	rotate chan struct{} // closed when the stream should move endpoint
	err    error         // why the reader ended (nil: the server ended it)

	wmu       sync.Mutex
	mu        sync.Mutex
	granted   int
	pushed    int
	pushedAny bool
	next      uint64
	waits     map[string]ackSlot
	broken    bool // the reader ended
	closed    bool // half-closed: acks go by calls
}

// ackSlot is an ack (or change) waiting for its answer: entry i of w.
type ackSlot struct {
	w *ackWait
	i int
}

// ackWait collects the answers of one batch of acks.
type ackWait struct {
	errs     []error
	answered []bool
	left     int
	done     chan struct{}
}

// openConsume opens a stream to the queue's home endpoint and names the
// queue.
func (r *run) openConsume(ctx context.Context) (*consumeStream, uint64, error) {
	c := r.c.q.c
	start := routeHome(r.c.q.rt)
	if start == 0 {
		start = c.next.Add(1)
	}
	ep, k := c.pick(start-1, 1)
	// The stream outlives ctx a little: after Run's ctx ends, the server
	// still pushes what its receives in progress leased (given back).
	sctx, cancel := context.WithCancel(r.bg)
	actx, err := c.authorize(sctx)
	if err != nil {
		cancel()
		return nil, k, err
	}
	st, err := ep.api.Consume(actx)
	if err != nil {
		cancel()
		return nil, k, asError(err)
	}
	first := &qv1.ConsumeRequest{Queue: r.c.q.name, VisibilityTimeout: durationpb.New(r.vis)}
	if f := r.c.o.Filter; f != nil {
		first.TagFilter = &qv1.TagFilter{All: f.All, Any: f.Any, None: f.None}
	}
	if err := st.Send(first); err != nil {
		_, rerr := st.Recv() // the status that ended the stream
		cancel()
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return nil, k, asError(rerr)
		}
		return nil, k, asError(err)
	}
	return &consumeStream{r: r, ep: k, stream: st, cancel: cancel, done: make(chan struct{}),
		rotate: make(chan struct{}), waits: map[string]ackSlot{}}, k, nil
}

// serve grants credit as slots free up while the reader pushes messages
// to handlers, until ctx is done, the stream breaks or it should move
// endpoint; then it half-closes the stream, waits for the server to end
// it and frees the slots of credit granted and not used. nil: ctx done or
// moved; else why the stream broke.
func (s *consumeStream) serve(ctx context.Context, rotations *int) error {
	r := s.r
	go s.read(ctx, rotations)
	r.stream.Store(s)
	prefetch := r.c.o.Prefetch
	for {
		select {
		case r.slots <- struct{}{}:
		case <-ctx.Done():
			return s.end()
		case <-s.done:
			return s.end()
		case <-s.rotate:
			return s.end()
		}
		n := 1
		linger := time.NewTimer(creditLinger)
	gather:
		for n < prefetch {
			select {
			case r.slots <- struct{}{}:
				n++
			default:
				if n >= prefetch/4 {
					break gather
				}
				select {
				case r.slots <- struct{}{}:
					n++
				case <-linger.C:
					break gather
				}
			}
		}
		linger.Stop()
		s.mu.Lock()
		s.granted += n
		s.mu.Unlock()
		s.wmu.Lock()
		err := s.stream.Send(&qv1.ConsumeRequest{Credit: int32(n)})
		s.wmu.Unlock()
		if err != nil { // the reader sees why
			return s.end()
		}
	}
}

// end half-closes the stream, waits for the reader and frees the credit
// the server did not use.
func (s *consumeStream) end() error {
	s.r.stream.CompareAndSwap(s, nil)
	s.wmu.Lock()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	_ = s.stream.CloseSend()
	s.wmu.Unlock()
	t := time.NewTimer(consumeCloseWait)
	select {
	case <-s.done:
	case <-t.C:
		s.cancel()
		<-s.done
	}
	t.Stop()
	s.cancel()
	s.mu.Lock()
	unused := s.granted - s.pushed
	s.mu.Unlock()
	s.r.freeSlots(unused)
	return s.err
}

// read pushes messages to handlers and answers acks until the stream
// ends. Messages pushed once Run's ctx is done are given back.
func (s *consumeStream) read(ctx context.Context, rotations *int) {
	defer close(s.done)
	r := s.r
	first := true
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.err = asError(err)
			}
			s.fail()
			return
		}
		if msgs := resp.GetMessages(); len(msgs) > 0 {
			if first {
				first = false
				s.checkForwarded(rotations)
			}
			out := make([]*Message, len(msgs))
			for i, m := range msgs {
				out[i] = r.c.q.message(m)
			}
			s.mu.Lock()
			s.pushed += len(out)
			s.pushedAny = true
			s.mu.Unlock()
			if ctx.Err() != nil {
				r.release(out)
				r.freeSlots(len(out))
			} else {
				r.c.received.Add(int64(len(out)))
				r.dispatch(out)
			}
		}
		for _, ok := range resp.GetSuccessful() {
			s.answer(ok.GetId(), nil)
		}
		for _, f := range resp.GetFailed() {
			s.answer(f.GetId(), batchEntryError(f))
		}
	}
}

// checkForwarded moves the next stream to the next endpoint when this
// one's first receive was forwarded (a partitioned queue is led from
// several nodes: at most once per endpoint).
func (s *consumeStream) checkForwarded(rotations *int) {
	md, err := s.stream.Header()
	if err != nil || len(md.Get(forwardedToHeader)) == 0 || *rotations >= len(s.r.c.q.c.eps)-1 {
		return
	}
	*rotations++
	s.r.c.q.rt.home.Store((s.ep+1)%uint64(len(s.r.c.q.c.eps)) + 1)
	close(s.rotate)
}

func (s *consumeStream) answer(id string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.waits[id]
	if !ok {
		return
	}
	delete(s.waits, id)
	a.w.errs[a.i], a.w.answered[a.i] = err, true
	if a.w.left--; a.w.left == 0 {
		close(a.w.done)
	}
}

// fail wakes every ack still waiting: unanswered, they go by calls.
func (s *consumeStream) fail() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.broken = true
	for id, a := range s.waits {
		delete(s.waits, id)
		if a.w.left--; a.w.left == 0 {
			close(a.w.done)
		}
	}
}

// ack deletes messages over the stream. It returns each one's error and
// whether the stream answered it (else the caller deletes it by call).
func (s *consumeStream) ack(batch []*Message) ([]error, []bool) {
	w := &ackWait{errs: make([]error, len(batch)), answered: make([]bool, len(batch)), left: len(batch), done: make(chan struct{})}
	req := &qv1.ConsumeRequest{Acks: make([]*qv1.DeleteMessageBatchEntry, len(batch))}
	// Under wmu throughout: end() half-closes under it, so a write never
	// follows the half-close (that would fail and cancel the stream).
	s.wmu.Lock()
	s.mu.Lock()
	if s.broken || s.closed {
		s.mu.Unlock()
		s.wmu.Unlock()
		return w.errs, w.answered
	}
	for i, m := range batch {
		s.next++
		id := strconv.FormatUint(s.next, 10)
		s.waits[id] = ackSlot{w, i}
		req.Acks[i] = &qv1.DeleteMessageBatchEntry{Id: id, ReceiptHandle: m.ReceiptHandle}
	}
	s.mu.Unlock()
	err := s.stream.Send(req)
	s.wmu.Unlock()
	if err != nil {
		s.cancel() // the reader ends and fails the waits
	}
	<-w.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return w.errs, w.answered
}

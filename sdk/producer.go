package quorumq

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// ProducerOptions tune a Producer. Zero fields take the defaults.
type ProducerOptions struct {
	// BatchSize is the most messages per SendMessageBatch (1 – 100;
	// default 100). A batch is also cut at 4 MiB.
	BatchSize int
	// Linger is how long the first message of a batch waits for more
	// before the batch is sent (default 5ms; 1ms on a stream, where a
	// small batch costs no call).
	Linger time.Duration
	// BufferSize bounds the messages published and not yet answered
	// (default 10 × BatchSize). Publish blocks while it is full.
	BufferSize int
	// Concurrency is the number of batches in flight at once (default 1;
	// more gives throughput on standard queues). Publish order is kept on
	// FIFO queues, and on standard queues only with Unary and Concurrency
	// 1: a stream commits up to four of a standard queue's batches at once.
	Concurrency int
	// OnResult, when set, is called once per message with its outcome,
	// from the producer's goroutines (it must not block for long).
	OnResult func(m *OutgoingMessage, r SendResult, err error)
	// Unary sends every batch with a SendMessageBatch call. By default
	// batches go on one SendStream, where the server coalesces them (and
	// other producers' entries are not mixed in); the producer falls back
	// to calls while a stream cannot be kept open, and for good when the
	// server has no SendStream.
	Unary bool
}

// Producer sends messages in batches: Publish buffers a message and
// returns a Future; a batch goes out when it is full or its first message
// has waited Linger. Failed calls are retried under the client's
// RetryPolicy with each message's idempotency key. It is safe for
// concurrent use. Close flushes it.
type Producer struct {
	q    *Queue
	o    ProducerOptions
	ctx  context.Context // of the sends; cancelled when Close gives up
	stop context.CancelFunc

	slots   chan struct{}   // one per message published and not yet answered
	in      chan *published // to the batcher; closed by Close
	flushes chan struct{}
	batches chan []*published
	done    chan struct{} // closed when the senders have exited

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	pending int
	idle    chan struct{} // closed (and replaced) when pending reaches 0

	// The send stream (sendstream.go).
	noStream  atomic.Bool    // unary calls only
	streams   sync.WaitGroup // stream readers and their unary resends
	smu       sync.Mutex
	cur       *sendStream
	rotations int       // streams reopened on another endpoint
	retryAt   time.Time // no new stream before
}

type published struct {
	m     OutgoingMessage
	entry *qv1.SendMessageBatchEntry
	size  int
	f     *Future
}

// Future is the outcome of a published message.
type Future struct {
	done chan struct{}
	res  SendResult
	err  error
}

// Done is closed when the outcome is known.
func (f *Future) Done() <-chan struct{} { return f.done }

// Result returns the outcome; call it after Done is closed (before, it
// returns an empty result and nil).
func (f *Future) Result() (SendResult, error) {
	select {
	case <-f.done:
		return f.res, f.err
	default:
		return SendResult{}, nil
	}
}

// Wait waits for the outcome or ctx.
func (f *Future) Wait(ctx context.Context) (SendResult, error) {
	select {
	case <-f.done:
		return f.res, f.err
	case <-ctx.Done():
		return SendResult{}, ctx.Err()
	}
}

// NewProducer starts a producer for the queue.
func (q *Queue) NewProducer(o ProducerOptions) *Producer {
	if o.BatchSize <= 0 || o.BatchSize > maxBatchEntries {
		o.BatchSize = maxBatchEntries
	}
	if o.Linger <= 0 {
		o.Linger = 5 * time.Millisecond
		if !o.Unary {
			o.Linger = time.Millisecond
		}
	}
	if o.BufferSize <= 0 {
		o.BufferSize = 10 * o.BatchSize
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	ctx, stop := context.WithCancel(context.Background())
	p := &Producer{
		q: q, o: o, ctx: ctx, stop: stop,
		slots: make(chan struct{}, o.BufferSize), in: make(chan *published, o.BufferSize),
		flushes: make(chan struct{}, 1), batches: make(chan []*published), done: make(chan struct{}),
		closing: make(chan struct{}), idle: make(chan struct{}),
	}
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Go(p.sender)
	}
	p.noStream.Store(o.Unary)
	go p.batcher()
	go func() {
		wg.Wait()
		p.smu.Lock()
		if p.cur != nil {
			p.cur.closeSend()
		}
		p.smu.Unlock()
		p.streams.Wait()
		close(p.done)
	}()
	return p
}

// Publish queues m for sending and returns its Future. It blocks while
// the buffer is full, until ctx is done (ctx bounds only the wait to
// enqueue, not the send). After Close it returns ErrClosed.
func (p *Producer) Publish(ctx context.Context, m OutgoingMessage) (*Future, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.closing:
		return nil, ErrClosed
	}
	e := m.entry("")
	pm := &published{m: m, entry: e, size: entrySize(e), f: &Future{done: make(chan struct{})}}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		<-p.slots
		return nil, ErrClosed
	}
	p.pending++
	p.in <- pm // never blocks: in holds at most one entry per slot
	return pm.f, nil
}

// Flush sends what is buffered now and waits until every published
// message has its outcome (with concurrent publishers, theirs too).
func (p *Producer) Flush(ctx context.Context) error {
	select {
	case p.flushes <- struct{}{}:
	default: // a flush is already requested
	}
	p.mu.Lock()
	if p.pending == 0 {
		p.mu.Unlock()
		return nil
	}
	idle := p.idle
	p.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops taking messages, sends the buffered ones and waits for
// their outcomes. When ctx ends first, the sends still in progress are
// abandoned (their futures fail) and Close returns ctx's error.
func (p *Producer) Close(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.closing)
		close(p.in)
	}
	p.mu.Unlock()
	select {
	case <-p.done:
		p.stop()
		return nil
	case <-ctx.Done():
		p.stop()
		<-p.done
		return ctx.Err()
	}
}

// batcher cuts the stream of published messages into batches.
func (p *Producer) batcher() {
	defer close(p.batches)
	var (
		batch []*published
		size  int
		carry *published // did not fit the batch by bytes
		ready bool
		timer = time.NewTimer(time.Hour)
		in    = p.in
	)
	timer.Stop()
	defer timer.Stop()
	add := func(m *published) {
		if len(batch) == 0 {
			timer.Reset(p.o.Linger)
		}
		batch = append(batch, m)
		size += m.size
		if len(batch) >= p.o.BatchSize {
			ready = true
		}
	}
	for {
		if in == nil && len(batch) == 0 && carry == nil {
			return
		}
		var out chan []*published
		if (ready || in == nil) && len(batch) > 0 {
			out = p.batches
		}
		take := in
		if carry != nil || len(batch) >= p.o.BatchSize {
			take = nil
		}
		select {
		case m, ok := <-take:
			if !ok {
				in = nil
				continue
			}
			if len(batch) > 0 && size+m.size > maxBatchBytes {
				carry, ready = m, true
				continue
			}
			add(m)
		case <-timer.C:
			ready = true
		case <-p.flushes:
			ready = true
		case out <- batch:
			batch, size, ready = nil, 0, false
			timer.Stop()
			if carry != nil {
				add(carry)
				carry = nil
			}
		}
	}
}

// sender sends batches, on the send stream when there is one (the
// stream's reader then answers the futures), else with a call.
func (p *Producer) sender() {
	for batch := range p.batches {
		if s := p.stream(); s != nil {
			// Entries a stream cannot carry fail alone (a string that is
			// not UTF-8 would fail the whole write).
			ok := batch[:0:0]
			for _, m := range batch {
				if err := checkEntry(m.entry); err != nil {
					p.finish(m, SendResult{}, err)
					continue
				}
				ok = append(ok, m)
			}
			if len(ok) == 0 || s.write(ok) {
				continue
			}
			batch = ok
		}
		p.sendBatch(batch)
	}
}

// sendBatch sends a batch with calls and answers its futures.
func (p *Producer) sendBatch(batch []*published) {
	entries := make([]*qv1.SendMessageBatchEntry, len(batch))
	for i, m := range batch {
		m.entry.Id = strconv.Itoa(i)
		entries[i] = m.entry
	}
	results := make([]SendResult, len(batch))
	errs := p.q.sendEntries(p.ctx, entries, results)
	for i, m := range batch {
		p.finish(m, results[i], errs[i])
	}
}

// sendUnary sends with calls, in order, what a stream did not answer (or
// answered with a retryable failure), on a goroutine of its own.
func (p *Producer) sendUnary(ms []*published) {
	p.streams.Go(func() {
		for len(ms) > 0 {
			n := min(len(ms), p.o.BatchSize)
			p.sendBatch(ms[:n])
			ms = ms[n:]
		}
	})
}

// finish answers a message's future and frees its slot.
func (p *Producer) finish(m *published, r SendResult, err error) {
	m.f.res, m.f.err = r, err
	close(m.f.done)
	if p.o.OnResult != nil {
		p.o.OnResult(&m.m, r, err)
	}
	<-p.slots
	p.mu.Lock()
	p.pending--
	if p.pending == 0 {
		close(p.idle)
		p.idle = make(chan struct{})
	}
	p.mu.Unlock()
}

// stream returns the send stream, opening one when there is none (or
// the last should be left); nil: send with calls.
func (p *Producer) stream() *sendStream {
	if p.noStream.Load() {
		return nil
	}
	p.smu.Lock()
	defer p.smu.Unlock()
	s := p.cur
	if s != nil && !s.rotate.Load() {
		s.mu.Lock()
		usable := !s.broken && !s.closing
		s.mu.Unlock()
		if usable {
			return s
		}
	}
	if time.Now().Before(p.retryAt) {
		return nil
	}
	if s != nil {
		s.closeSend() // its reader answers what it has written
	}
	s, err := p.openSendStream()
	if err != nil {
		p.retryAt = time.Now().Add(streamRetryAfter)
		p.cur = nil
		return nil
	}
	p.cur = s
	return s
}

// forwarded moves the producer's next stream to the next endpoint: the
// one s is on forwarded the first batch (it does not lead the queue).
// A partitioned queue is led from several nodes: it moves at most once
// per endpoint.
func (p *Producer) forwarded(s *sendStream) {
	p.smu.Lock()
	defer p.smu.Unlock()
	if p.rotations >= len(p.q.c.eps)-1 {
		return
	}
	p.rotations++
	p.q.rt.home.Store((s.ep+1)%uint64(len(p.q.c.eps)) + 1)
	s.rotate.Store(true)
}

// streamFailed holds off the next stream a while (calls meanwhile).
func (p *Producer) streamFailed() {
	p.smu.Lock()
	p.retryAt = time.Now().Add(streamRetryAfter)
	p.smu.Unlock()
}

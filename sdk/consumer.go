package quorumq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// Handler processes one message. Returning nil deletes the message;
// an error (or a panic) gives it back to the queue after a backoff. ctx
// is cancelled when the consumer's drain timeout ends during shutdown,
// and when a heartbeat finds the message's lease lost (another receive
// owns the message now; what the handler returns then is ignored).
type Handler func(ctx context.Context, m *Message) error

// ConsumerOptions tune a Consumer. Zero fields take the defaults.
type ConsumerOptions struct {
	// Concurrency is the number of handlers running at once (default 10).
	// On a FIFO queue the messages of one group run one after another, in
	// order.
	Concurrency int
	// Prefetch bounds the messages held at once: received and not yet
	// done, whether their handler runs or they wait for one (default 50 ×
	// Concurrency, at most 500, at least Concurrency). Their leases are
	// kept alive while they wait. A receive asks for at most the free
	// room, so the consumer never holds more than Prefetch. Each receive
	// and each delete is a replicated round on the shard, so a consumer
	// needs more messages in flight than a broker that pushes from memory
	// to keep up with producers: with 200, four consumers fell behind four
	// producers in `quorumq bench` and the backlog (and the LSM work it
	// costs) grew for as long as they sent. With slow handlers, set it to
	// Concurrency: messages then wait in the queue, where other consumers
	// can take them. With large messages, lower it: the consumer may hold
	// Prefetch × the message size in memory.
	Prefetch int
	// MaxMessages caps one receive (1 – 100; default Prefetch / 4).
	MaxMessages int
	// Receives is how many receives are in flight at once (default
	// Prefetch / MaxMessages, 1 – 8), so that a consumer does not wait a
	// round trip between receives.
	Receives int
	// WaitTime is the long-poll wait of a receive (default 20s).
	WaitTime time.Duration
	// VisibilityTimeout is the lease of received messages (default: the
	// queue's, read once when Run starts; 30s if the queue's is 0).
	VisibilityTimeout time.Duration
	// HeartbeatInterval is how often a held message's lease is extended
	// by VisibilityTimeout (default VisibilityTimeout / 3). The messages
	// due together are extended by one ChangeMessageVisibilityBatch call.
	HeartbeatInterval time.Duration
	// NackBackoff is how long a message whose handler failed stays
	// invisible before it is delivered again (default 1s doubled per
	// receive, at most 5 minutes). ServerBackoff leaves it to the queue's
	// retry policy: the message is nacked as failed. Use ServerBackoff on
	// a queue with a retry policy: otherwise the message, visible again
	// after this backoff with its lease still open, counts as a lease that
	// ran out and waits the policy's backoff as well.
	NackBackoff func(m *Message, err error) time.Duration
	// DrainTimeout bounds the wait for running handlers at shutdown
	// (default 30s). Past it their contexts are cancelled and their
	// messages given back to the queue.
	DrainTimeout time.Duration
	// DeleteLinger is how long a delete waits for others to share its
	// batch (default 5ms). A batch also goes out when it holds 100
	// deletes; up to 4 batches are in flight at once.
	DeleteLinger time.Duration
	// Filter receives only messages whose tags match.
	Filter *TagFilter
	// OnError, when set, is told of handler errors and of failures to
	// delete, extend or release a message (default: the client's logger).
	OnError func(m *Message, err error)
	// Unary receives with ReceiveMessages calls (MaxMessages, Receives
	// and WaitTime tune them) and deletes with DeleteMessageBatch calls.
	// By default the consumer holds a Consume stream: the server pushes
	// messages as Prefetch room frees up, and deletes go on the stream
	// (by call while it is down). It falls back to calls for good when the
	// server has no Consume.
	Unary bool
}

// ServerBackoff is a NackBackoff that nacks a failed message as failed
// without a time: the queue's retry policy says when it comes back.
func ServerBackoff(*Message, error) time.Duration { return -1 }

// DefaultNackBackoff is 1s doubled per receive of the message, at most 5
// minutes.
func DefaultNackBackoff(m *Message, _ error) time.Duration {
	d := time.Second
	for i := 1; i < m.ReceiveCount && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

// Consumer runs a Handler over a queue's messages. See Run.
type Consumer struct {
	q *Queue
	o ConsumerOptions

	received, handled, failed, deleted, deleteErrors atomic.Int64
}

// ConsumerStats count what a Consumer did over all its Runs.
type ConsumerStats struct {
	Received     int64 // messages received
	Handled      int64 // handlers that returned nil
	Failed       int64 // handlers that returned an error (or panicked)
	Deleted      int64 // messages the server confirmed deleted
	DeleteErrors int64 // deletes that failed (each also reported to OnError)
}

// Stats returns the consumer's counters so far.
func (c *Consumer) Stats() ConsumerStats {
	return ConsumerStats{Received: c.received.Load(), Handled: c.handled.Load(), Failed: c.failed.Load(),
		Deleted: c.deleted.Load(), DeleteErrors: c.deleteErrors.Load()}
}

// deletesInFlight bounds the delete batches a consumer has in flight.
const deletesInFlight = 4

// NewConsumer returns a consumer of the queue; Run starts it.
func (q *Queue) NewConsumer(o ConsumerOptions) *Consumer {
	if o.Concurrency <= 0 {
		o.Concurrency = 10
	}
	if o.Prefetch <= 0 {
		o.Prefetch = min(50*o.Concurrency, 500)
	}
	o.Prefetch = max(o.Prefetch, o.Concurrency)
	if o.MaxMessages <= 0 {
		o.MaxMessages = max(o.Prefetch/4, 1)
	}
	o.MaxMessages = min(o.MaxMessages, o.Prefetch, maxBatchEntries)
	if o.Receives <= 0 {
		o.Receives = min(max(o.Prefetch/o.MaxMessages, 1), 8)
	}
	if o.WaitTime <= 0 {
		o.WaitTime = maxWaitTime
	}
	if o.NackBackoff == nil {
		o.NackBackoff = DefaultNackBackoff
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 30 * time.Second
	}
	if o.DeleteLinger <= 0 {
		o.DeleteLinger = 5 * time.Millisecond
	}
	return &Consumer{q: q, o: o}
}

// run is the state of one Run.
type run struct {
	c        *Consumer
	h        Handler
	vis      time.Duration
	beat     time.Duration
	bg       context.Context // outlives Run's ctx: acks, releases, heartbeats
	work     context.Context // handlers' parent; cancelled at the drain timeout
	stopping context.Context // Run's ctx: once done, no further message of a group starts
	slots    chan struct{}   // one per message held, from its receive until it is done
	handlers chan struct{}   // one per running handler
	acks     *acker
	beats    *beats
	stream   atomic.Pointer[consumeStream] // the Consume stream serving, if any
	wg       sync.WaitGroup                // handler goroutines
	post     sync.WaitGroup                // handlers past their handler, acking or nacking; guarded by mu for Add
	mu       sync.Mutex
	running  map[*running]struct{}
}

// running is a received message, from its receive until it is deleted,
// nacked or given back: its handler runs, or (FIFO) it waits for the
// earlier messages of its group.
type running struct {
	m         *Message
	ctx       context.Context // the handler's; cancelled at the drain timeout or when the lease is lost
	cancel    context.CancelFunc
	lost      atomic.Bool // a heartbeat found the lease lost
	stopBeat  func()      // stops the heartbeat and waits for it
	abandoned bool        // released at the drain timeout; guarded by run.mu
}

// Run receives messages and runs handler on each, Concurrency at once,
// until ctx is done or a receive fails with an error that retrying cannot
// fix (ErrQueueNotFound, ErrPermissionDenied, …), which it returns.
//
// While a message is held, its lease is extended every HeartbeatInterval,
// so a slow handler is not raced by a redelivery; when an extension finds
// the lease lost, the handler's context is cancelled. When the handler
// returns nil the message is deleted (deletes are batched); on an error it
// is made visible again after NackBackoff.
//
// FIFO queues: the messages of one group from one receive are handled one
// after another, in order (other groups run in parallel). When a handler
// fails (or its lease is lost), the group's later messages of that receive
// are given back unhandled (visibility 0), so nothing is handled or
// deleted ahead of an earlier message of its group; the server delivers
// the group again from its head once the failed message is visible.
//
// A receive that fails with a retryable error is replayed after a backoff
// with the same receive_attempt_id, so messages that a lost answer leased
// come back with the replay instead of staying in flight.
//
// Shutdown (ctx done): Run stops receiving, gives back (visibility 0) any
// message received but not yet handed to a handler — including what an
// interrupted receive may have leased — and waits up to DrainTimeout for
// running handlers; past it, it cancels them and gives their messages
// back. FIFO messages waiting behind a running handler of their group are
// given back when it returns (or at the drain timeout). Run returns after the last delete is sent, with nil, so that no
// message stays invisible longer than its processing.
func (c *Consumer) Run(ctx context.Context, handler Handler) error {
	vis := c.o.VisibilityTimeout
	if vis <= 0 {
		info, err := c.q.c.GetQueue(ctx, c.q.name)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("quorumq: consumer of %s: %w", c.q.name, err)
		}
		if vis = info.Attributes.VisibilityTimeout; vis <= 0 {
			vis = 30 * time.Second
		}
	}
	beat := c.o.HeartbeatInterval
	if beat <= 0 || beat >= vis {
		beat = vis / 3
	}
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	work, stopWork := context.WithCancel(bg)
	defer stopWork()
	r := &run{
		c: c, h: handler, vis: vis, beat: beat, bg: bg, work: work, stopping: ctx,
		slots: make(chan struct{}, c.o.Prefetch), handlers: make(chan struct{}, c.o.Concurrency),
		running: map[*running]struct{}{},
	}
	r.acks = newAcker(r)
	r.beats = newBeats(r)
	var err error
	if !c.o.Unary {
		err = r.consumeLoop(ctx)
	}
	if c.o.Unary || errors.Is(err, errNoConsume) {
		err = r.receiveLoops(ctx)
	}
	r.drain(stopWork)
	r.acks.close()
	r.beats.close()
	return err
}

// receiveLoops runs Receives receive loops until ctx is done or one of
// them fails for good; it returns that failure.
func (r *run) receiveLoops(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range r.c.o.Receives {
		wg.Go(func() {
			if err := r.receiveLoop(ctx); err != nil {
				once.Do(func() { first = err })
				stop()
			}
		})
	}
	wg.Wait()
	return first
}

// receiveLoop receives while ctx lasts and dispatches the messages.
func (r *run) receiveLoop(ctx context.Context) error {
	failures := 0
	// again is a receive that failed retryably: it is replayed with the
	// same attempt id and keeps its slots until then.
	var again *qv1.ReceiveMessagesRequest
	for {
		req := again
		if req == nil {
			select {
			case r.slots <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			n := 1
		reserve:
			for n < r.c.o.MaxMessages {
				select {
				case r.slots <- struct{}{}:
					n++
				default:
					break reserve
				}
			}
			req = r.request(n)
		}
		n := int(req.GetMaxMessages())
		msgs, err := r.receive(ctx, req)
		if err != nil && ctx.Err() == nil && retryableWrapped(err) {
			failures++
			r.report(nil, fmt.Errorf("receive: %w", err))
			again = req
			if sleepCtx(ctx, r.c.q.c.retry.backoff(failures)) != nil {
				// The failed attempt may have leased messages whose
				// answer was lost: replay it once more to give them back.
				r.giveBackAttempt(req)
				r.freeSlots(n)
				return nil
			}
			continue
		}
		again = nil
		r.freeSlots(n - len(msgs))
		if ctx.Err() != nil { // received but not started: give back
			r.release(msgs)
			r.freeSlots(len(msgs))
			return nil
		}
		if err != nil {
			return fmt.Errorf("quorumq: consumer of %s: %w", r.c.q.name, err)
		}
		failures = 0
		r.c.received.Add(int64(len(msgs)))
		r.dispatch(msgs)
	}
}

func (r *run) freeSlots(n int) {
	for range n {
		<-r.slots
	}
}

// retryableWrapped tells whether err (as returned by call after its
// retries) ended on a retryable condition.
func retryableWrapped(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		ok, _ := retryable(e, false)
		return ok || e.Code == codes.DeadlineExceeded
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// request is a fresh receive of up to n messages.
func (r *run) request(n int) *qv1.ReceiveMessagesRequest {
	req := &qv1.ReceiveMessagesRequest{
		Queue: r.c.q.name, MaxMessages: int32(n), ReceiveAttemptId: newKey(),
		VisibilityTimeout: durationpb.New(r.vis), WaitTime: durationpb.New(r.c.o.WaitTime),
	}
	if f := r.c.o.Filter; f != nil {
		req.TagFilter = &qv1.TagFilter{All: f.All, Any: f.Any, None: f.None}
	}
	return req
}

// receive leases up to req.MaxMessages messages. If ctx ends while the
// call is in progress, the server may have leased messages whose answer
// never arrived: the attempt is replayed and whatever it returns is given
// back.
func (r *run) receive(ctx context.Context, req *qv1.ReceiveMessagesRequest) ([]*Message, error) {
	msgs, err := r.c.q.receive(ctx, req)
	if err == nil || ctx.Err() == nil {
		return msgs, err
	}
	r.giveBackAttempt(req)
	return nil, ctx.Err()
}

// giveBackAttempt replays a receive whose answer was lost (same
// receive_attempt_id, no wait, no lease) and releases what it returns.
func (r *run) giveBackAttempt(req *qv1.ReceiveMessagesRequest) {
	replay := proto.Clone(req).(*qv1.ReceiveMessagesRequest)
	replay.WaitTime = durationpb.New(0)
	replay.VisibilityTimeout = durationpb.New(0)
	rctx, cancel := context.WithTimeout(r.bg, 10*time.Second)
	defer cancel()
	if lost, err := r.c.q.receive(rctx, replay); err != nil {
		r.report(nil, fmt.Errorf("replay interrupted receive: %w", err))
	} else {
		r.release(lost)
	}
}

// dispatch starts the handling of received messages, each holding a slot:
// a goroutine per message without a group, one per FIFO group that
// handles the group's messages in the order received.
func (r *run) dispatch(msgs []*Message) {
	var groups [][]*running
	at := map[string]int{}
	r.mu.Lock()
	for _, m := range msgs {
		rm := r.hold(m)
		if m.GroupID == "" {
			groups = append(groups, []*running{rm})
			continue
		}
		i, ok := at[m.GroupID]
		if !ok {
			i = len(groups)
			at[m.GroupID] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], rm)
	}
	r.mu.Unlock()
	for _, g := range groups {
		r.wg.Go(func() { r.runGroup(g) })
	}
}

// hold registers m as held and starts its heartbeat; r.mu is held.
func (r *run) hold(m *Message) *running {
	rm := &running{m: m}
	rm.ctx, rm.cancel = context.WithCancel(r.work)
	rm.stopBeat = r.beats.add(rm)
	r.running[rm] = struct{}{}
	return rm
}

// runGroup handles rms one after another, each once a handler is free;
// after the first that is not handled successfully (or once the consumer
// stops), it gives back the rest unhandled.
func (r *run) runGroup(rms []*running) {
	for i, rm := range rms {
		if !r.acquireHandler() {
			r.giveBack(rms[i:])
			return
		}
		ok := r.handle(rm)
		<-r.handlers
		if !ok {
			r.giveBack(rms[i+1:])
			return
		}
	}
}

// acquireHandler waits for a free handler; false once the consumer stops
// (a message that has not started then is given back).
func (r *run) acquireHandler() bool {
	select {
	case r.handlers <- struct{}{}:
	case <-r.stopping.Done():
		return false
	}
	if r.stopping.Err() != nil {
		<-r.handlers
		return false
	}
	return true
}

// handle runs the handler of rm unless its lease is already lost or the
// drain released it, then deletes it (handler returned nil) or nacks it.
// It reports whether the message was handled successfully.
func (r *run) handle(rm *running) bool {
	defer func() { <-r.slots }()
	m := rm.m
	var err error
	r.mu.Lock()
	skip := rm.abandoned
	r.mu.Unlock()
	if !skip && !rm.lost.Load() {
		err = r.call(rm)
	}
	rm.stopBeat()
	rm.cancel()
	r.mu.Lock()
	abandoned := rm.abandoned
	delete(r.running, rm)
	if !abandoned {
		r.post.Add(1)
	}
	r.mu.Unlock()
	if abandoned { // released at the drain timeout; another consumer may have it
		return false
	}
	defer r.post.Done()
	if rm.lost.Load() { // the heartbeat reported it; the new owner handles it
		return false
	}
	if err == nil {
		r.c.handled.Add(1)
		r.acks.add(m)
		return true
	}
	r.c.failed.Add(1)
	r.report(m, err)
	ctx, cancel := context.WithTimeout(r.bg, r.c.q.c.retry.AttemptTimeout)
	defer cancel()
	if d := r.c.o.NackBackoff(m, err); d < 0 {
		if _, err := m.Nack(ctx, NackFailed, 0); err != nil {
			r.report(m, fmt.Errorf("nack: %w", err))
		}
	} else if err := m.ChangeVisibility(ctx, d); err != nil {
		r.report(m, fmt.Errorf("nack: %w", err))
	}
	return false
}

// giveBack releases held messages unhandled, in order, and frees their
// slots. Those the drain has released already, or whose lease is lost,
// are only dropped.
func (r *run) giveBack(rms []*running) {
	if len(rms) == 0 {
		return
	}
	var msgs []*Message
	r.mu.Lock()
	for _, rm := range rms {
		if rm.abandoned {
			continue
		}
		delete(r.running, rm)
		if !rm.lost.Load() {
			msgs = append(msgs, rm.m)
		}
	}
	if len(msgs) > 0 {
		r.post.Add(1)
	}
	r.mu.Unlock()
	for _, rm := range rms {
		rm.stopBeat()
		rm.cancel()
	}
	if len(msgs) > 0 {
		r.release(msgs)
		r.post.Done()
	}
	r.freeSlots(len(rms))
}

// call runs the handler, turning a panic into an error.
func (r *run) call(rm *running) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("quorumq: handler panic: %v", p)
		}
	}()
	return r.h(rm.ctx, rm.m)
}

// drain waits for running handlers up to the drain timeout; then it
// cancels them and gives their messages back.
func (r *run) drain(stopWork context.CancelFunc) {
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(r.c.o.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	r.mu.Lock()
	var left []*running
	for rm := range r.running {
		rm.abandoned = true
		left = append(left, rm)
	}
	r.mu.Unlock()
	stopWork()
	r.post.Wait() // handlers that finished just in time still ack
	msgs := make([]*Message, len(left))
	for i, rm := range left {
		rm.stopBeat()
		msgs[i] = rm.m
	}
	r.release(msgs)
}

// release makes messages visible again at once, nacked as released: they
// were not processed, so the delivery counts neither as failed (no retry
// backoff) nor toward the dead-letter policy.
func (r *run) release(msgs []*Message) {
	if len(msgs) == 0 {
		return
	}
	nacks := make([]Nack, len(msgs))
	for i, m := range msgs {
		nacks[i] = Nack{ReceiptHandle: m.ReceiptHandle, Kind: NackReleased}
	}
	ctx, cancel := context.WithTimeout(r.bg, 10*time.Second)
	defer cancel()
	if err := r.c.q.NackBatch(ctx, nacks); err != nil {
		r.report(nil, fmt.Errorf("release %d messages: %w", len(msgs), err))
	}
}

func (r *run) report(m *Message, err error) {
	if r.c.o.OnError != nil {
		r.c.o.OnError(m, err)
		return
	}
	id := ""
	if m != nil {
		id = m.ID
	}
	r.c.q.c.log.Warn("quorumq: consumer", "queue", r.c.q.name, "message", id, "err", err)
}

// acker batches the deletes of handled messages: a batch goes out when
// it is full or its first delete has waited DeleteLinger, with up to
// deletesInFlight batches in flight.
type acker struct {
	r        *run
	ch       chan *Message
	done     chan struct{}
	inflight chan struct{} // one per batch in flight
	wg       sync.WaitGroup
}

func newAcker(r *run) *acker {
	a := &acker{r: r, ch: make(chan *Message, r.c.o.Concurrency), done: make(chan struct{}),
		inflight: make(chan struct{}, deletesInFlight)}
	go a.loop()
	return a
}

func (a *acker) add(m *Message) { a.ch <- m }

// close sends the last deletes and waits for them.
func (a *acker) close() {
	close(a.ch)
	<-a.done
}

func (a *acker) loop() {
	defer close(a.done)
	defer a.wg.Wait()
	var batch []*Message
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	flush := func() {
		if len(batch) == 0 {
			return
		}
		t.Stop()
		a.inflight <- struct{}{}
		b := batch
		batch = nil
		a.wg.Go(func() {
			defer func() { <-a.inflight }()
			a.send(b)
		})
	}
	for {
		select {
		case m, ok := <-a.ch:
			if !ok {
				flush()
				return
			}
			if len(batch) == 0 {
				t.Reset(a.r.c.o.DeleteLinger)
			}
			batch = append(batch, m)
			if len(batch) >= maxBatchEntries {
				flush()
			}
		case <-t.C:
			flush()
		}
	}
}

// send deletes a batch and reports every delete that failed: on the
// Consume stream when there is one, and by call what the stream did not
// answer or answered with a retryable failure.
func (a *acker) send(batch []*Message) {
	if s := a.r.stream.Load(); s != nil {
		errs, answered := s.ack(batch)
		var rest []*Message
		for i, m := range batch {
			ok, _ := retryable(errs[i], false)
			switch {
			case !answered[i] || ok:
				rest = append(rest, m)
			case errs[i] != nil:
				a.r.c.deleteErrors.Add(1)
				a.r.report(m, fmt.Errorf("delete: %w", errs[i]))
			default:
				a.r.c.deleted.Add(1)
			}
		}
		if len(rest) == 0 {
			return
		}
		batch = rest
	}
	handles := make([]string, len(batch))
	for i, m := range batch {
		handles[i] = m.ReceiptHandle
	}
	ctx, cancel := context.WithTimeout(a.r.bg, 30*time.Second)
	err := a.r.c.q.DeleteBatch(ctx, handles)
	cancel()
	c := a.r.c
	var be *BatchError
	switch {
	case errors.As(err, &be):
		failed := 0
		for i, e := range be.Errors {
			if e != nil {
				failed++
				a.r.report(batch[i], fmt.Errorf("delete: %w", e))
			}
		}
		c.deleteErrors.Add(int64(failed))
		c.deleted.Add(int64(len(batch) - failed))
	case err != nil:
		c.deleteErrors.Add(int64(len(batch)))
		a.r.report(nil, fmt.Errorf("delete %d messages: %w", len(batch), err))
	default:
		c.deleted.Add(int64(len(batch)))
	}
}

package quorumq

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// beats extends the leases of the messages a Run holds, every beat after
// the last extension. One goroutine serves the whole Run, and the
// messages due together are extended by one ChangeMessageVisibilityBatch
// call (100 entries a call): a goroutine and a ticker per held message
// cost the client more than the rest of the message's handling (a
// prefetch of 500 is 500 of each), and a call per message per beat cost
// the server a replicated command each.
//
// All messages share one beat, so the list of those waiting is in the
// order they come due: each joins at the back with its next extension
// stamped under the lock.
type beats struct {
	r     *run
	mu    sync.Mutex
	due   list.List     // *beat waiting for its next extension, earliest first
	wake  chan struct{} // the list went from empty to not
	stop  chan struct{}
	done  chan struct{}
	calls sync.WaitGroup // extension calls in flight
}

// beat is one held message's heartbeat.
type beat struct {
	rm      *running
	next    time.Time
	el      *list.Element // in due; nil while extended or once stopped
	call    chan struct{} // closed when the extension in flight returns; nil if none; guarded by mu
	stopped bool
}

func newBeats(r *run) *beats {
	b := &beats{r: r, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	return b
}

// add starts the heartbeat of rm; the function returned stops it and
// waits for an extension of it in flight, so that no extension lands
// after a later delete or release and rm.lost is final. It may be called more
// than once.
func (b *beats) add(rm *running) func() {
	e := &beat{rm: rm}
	b.mu.Lock()
	b.queue(e)
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		e.stopped = true
		if e.el != nil {
			b.due.Remove(e.el)
			e.el = nil
		}
		call := e.call
		b.mu.Unlock()
		if call != nil {
			<-call
		}
	}
}

// queue puts e at the back of due, next extension one beat from now;
// b.mu is held.
func (b *beats) queue(e *beat) {
	e.next = time.Now().Add(b.r.beat)
	e.el = b.due.PushBack(e)
	if b.due.Len() == 1 {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
}

// close stops the loop and waits for the extensions in flight. The Run's
// messages are all done by then (their stop functions returned).
func (b *beats) close() {
	close(b.stop)
	<-b.done
	b.calls.Wait()
}

func (b *beats) loop() {
	defer close(b.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		wait := time.Duration(-1)
		var batch []*beat
		var call chan struct{}
		b.mu.Lock()
		// Those due a little later come along: messages received
		// together come due microseconds apart, and one call for
		// them all is the point.
		now := time.Now()
		horizon := now.Add(b.r.beat / 8)
		for el := b.due.Front(); el != nil; el = b.due.Front() {
			e := el.Value.(*beat)
			if e.next.After(horizon) {
				wait = e.next.Sub(now)
				break
			}
			if call == nil {
				call = make(chan struct{})
			}
			b.due.Remove(el)
			e.el, e.call = nil, call
			batch = append(batch, e)
		}
		b.mu.Unlock()
		if len(batch) > 0 {
			// Off the loop: a slow call must not delay the others' beats.
			b.calls.Go(func() { b.extend(batch, call) })
		}
		var timer <-chan time.Time
		if wait >= 0 {
			t.Reset(wait)
			timer = t.C
		}
		select {
		case <-b.stop:
			return
		case <-b.wake:
		case <-timer:
		}
		t.Stop()
	}
}

// extend renews the leases of batch. An entry whose lease is lost (another
// receive owns the message now) marks its message lost and cancels its
// handler, and beats no more; any other failure is reported and the
// message beats again a beat later.
func (b *beats) extend(batch []*beat, call chan struct{}) {
	r := b.r
	changes := make([]VisibilityChange, len(batch))
	for i, e := range batch {
		changes[i] = VisibilityChange{ReceiptHandle: e.rm.m.ReceiptHandle, Timeout: r.vis}
	}
	ctx, cancel := context.WithTimeout(r.bg, r.vis-r.beat)
	err := r.c.q.ChangeVisibilityBatch(ctx, changes)
	cancel()
	var be *BatchError
	if err != nil && !errors.As(err, &be) {
		be = &BatchError{Errors: make([]error, len(batch))}
		for i := range be.Errors {
			be.Errors[i] = err
		}
	}
	lost := make([]bool, len(batch))
	if be != nil {
		for i, err := range be.Errors {
			if err == nil {
				continue
			}
			e := batch[i]
			r.report(e.rm.m, fmt.Errorf("extend lease: %w", err))
			if leaseLost(err) {
				lost[i] = true
				e.rm.lost.Store(true)
				e.rm.cancel()
			}
		}
	}
	b.mu.Lock()
	for i, e := range batch {
		e.call = nil
		if !e.stopped && !lost[i] {
			b.queue(e)
		}
	}
	b.mu.Unlock()
	close(call)
}

// leaseLost tells whether an extension's failure means another receive
// owns the message now (or it is gone).
func leaseLost(err error) bool {
	return errors.Is(err, ErrStaleReceipt) || errors.Is(err, ErrMessageNotFound) || errors.Is(err, ErrInvalidReceipt) || errors.Is(err, ErrQueueNotFound)
}

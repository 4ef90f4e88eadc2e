package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
)

// Bounds of one Consume stream.
const (
	// maxConsumeCredit bounds the credit a client may hold.
	maxConsumeCredit = 1000
	// consumeReceives bounds the receives in flight; one only while the
	// last came back empty (the queue is drained: one long poll waits).
	consumeReceives = 4
	// consumeMinBatch is the least credit a further receive in flight
	// asks for, so that credit coming back one message at a time does
	// not turn into receives of one message.
	consumeMinBatch = 32
	// consumeWait is the long-poll wait of each receive. The wait ends
	// early when a message becomes visible (the poll registry wakes it),
	// so it costs no latency; kept short so that a half-closed stream
	// ends soon without cancelling a receive (which could strand a lease).
	consumeWait = 2 * time.Second
	// consumeAcks bounds the acks and changes read and not yet answered,
	// and consumeAckBatches their batches in flight.
	consumeAcks       = 1000
	consumeAckBatches = 4
	// consumeBackoff is the first pause after a receive failed
	// retryably (doubling to consumeMaxBackoff).
	consumeBackoff    = 50 * time.Millisecond
	consumeMaxBackoff = 2 * time.Second
)

// Consume implements QueueService: it leases messages with this router's
// ReceiveMessages against the credit the client grants and pushes them,
// and turns acks and visibility changes into DeleteMessageBatch and
// ChangeMessageVisibilityBatch calls, so each follows the rules (and
// routing, forwarding, metrics) of the call it reuses.
func (r *Router) Consume(stream qv1.QueueService_ConsumeServer) error {
	if _, err := server.Require(stream.Context(), server.ScopeMessagesReceive); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	if err := checkName("queue", first.GetQueue()); err != nil {
		return err
	}
	if _, err := shardserver.DurationMs("visibility_timeout", first.GetVisibilityTimeout(), -1, shardserver.MaxVisibility); err != nil {
		return err
	}
	if err := shardserver.ValidateFilter(first.GetTagFilter()); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	c := &consumer{r: r, stream: stream, ctx: ctx, first: first,
		received: make(chan consumeReceived, consumeReceives), answered: make(chan *qv1.ConsumeResponse, consumeAckBatches)}
	defer c.wg.Wait() // receives and batches in flight, cancelled first
	defer cancel()
	if err := c.accept(first); err != nil {
		return err
	}
	return c.run()
}

// consumer is the state of one Consume stream, owned by its handler's
// goroutine (run); receives and ack batches run on their own goroutines.
type consumer struct {
	r      *Router
	stream qv1.QueueService_ConsumeServer
	ctx    context.Context
	first  *qv1.ConsumeRequest
	wg     sync.WaitGroup

	credit    int // granted and not asked for by a receive
	reserved  int // asked for by receives in flight
	receives  int
	lastEmpty bool
	failures  int // receives failed retryably in a row
	pause     *time.Timer
	received  chan consumeReceived

	acks, changes []consumeAck
	batches       int
	answered      chan *qv1.ConsumeResponse
}

type consumeAck struct {
	id     string
	handle string
	vis    *durationpb.Duration
}

type consumeReceived struct {
	asked int
	msgs  []*qv1.ReceivedMessage
	err   error
}

func (c *consumer) run() error {
	reqs, readErr := readStream(c.ctx, c.stream.Recv)
	eof := false
	for {
		if !eof {
			if err := c.startReceives(); err != nil {
				return err
			}
		}
		c.startBatches()
		if eof && c.receives == 0 && c.batches == 0 && len(c.acks)+len(c.changes) == 0 {
			return nil
		}
		in := reqs
		if eof || len(c.acks)+len(c.changes) >= consumeAcks {
			in = nil
		}
		var resume <-chan time.Time
		if c.pause != nil {
			resume = c.pause.C
		}
		select {
		case req := <-in:
			if err := c.accept(req); err != nil {
				return err
			}
		case got := <-c.received:
			if err := c.handleReceived(got); err != nil {
				return err
			}
		case resp := <-c.answered:
			c.batches--
			if err := c.stream.Send(resp); err != nil {
				return err
			}
		case err := <-readErr:
			if !errors.Is(err, io.EOF) {
				return err
			}
			eof = true
		case <-resume:
			c.pause = nil
		case <-c.ctx.Done():
			return c.ctx.Err()
		}
	}
}

// accept takes a client's write: credit, acks and changes.
func (c *consumer) accept(req *qv1.ConsumeRequest) error {
	if err := server.Reauthenticate(c.ctx); err != nil {
		return err
	}
	if n := req.GetCredit(); n < 0 || c.credit+c.reserved+int(n) > maxConsumeCredit {
		return server.FieldError("credit", fmt.Sprintf("outstanding credit must stay within 0 to %d", maxConsumeCredit))
	}
	acks, changes := req.GetAcks(), req.GetVisibilityChanges()
	if len(acks) > 0 {
		if err := shardserver.ValidateBatch(len(acks), func(i int) string { return acks[i].GetId() }); err != nil {
			return fmt.Errorf("acks: %w", err)
		}
	}
	if len(changes) > 0 {
		if err := shardserver.ValidateBatch(len(changes), func(i int) string { return changes[i].GetId() }); err != nil {
			return fmt.Errorf("visibility_changes: %w", err)
		}
	}
	c.credit += int(req.GetCredit())
	for _, a := range acks {
		c.acks = append(c.acks, consumeAck{id: a.GetId(), handle: a.GetReceiptHandle()})
	}
	for _, ch := range changes {
		c.changes = append(c.changes, consumeAck{id: ch.GetId(), handle: ch.GetReceiptHandle(), vis: ch.GetVisibilityTimeout()})
	}
	return nil
}

// startReceives starts receives while credit allows: one whenever none
// is in flight, more (up to consumeReceives) while messages keep coming
// and enough credit is left to make them worth it.
func (c *consumer) startReceives() error {
	for c.credit > 0 && c.pause == nil && c.receives < consumeReceives {
		if c.receives > 0 && (c.lastEmpty || c.credit < consumeMinBatch) {
			return nil
		}
		// A client that only reads must not outlive its token either.
		if err := server.Reauthenticate(c.ctx); err != nil {
			return err
		}
		n := min(c.credit, shardserver.MaxReceiveMessages)
		c.credit -= n
		c.reserved += n
		c.receives++
		req := &qv1.ReceiveMessagesRequest{Queue: c.first.GetQueue(), MaxMessages: int32(n),
			VisibilityTimeout: c.first.GetVisibilityTimeout(), WaitTime: durationpb.New(consumeWait), TagFilter: c.first.GetTagFilter()}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			resp, err := c.r.ReceiveMessages(c.ctx, req)
			select {
			case c.received <- consumeReceived{asked: n, msgs: resp.GetMessages(), err: err}:
			case <-c.ctx.Done():
			}
		}()
	}
	return nil
}

// handleReceived pushes what a receive leased and gives back the credit
// it did not use. A receive that failed retryably (no leader for now, an
// overloaded shard) is tried again after a backoff; any other failure
// (the queue is gone, a bad argument) ends the stream.
func (c *consumer) handleReceived(got consumeReceived) error {
	c.receives--
	c.reserved -= got.asked
	c.credit += got.asked - len(got.msgs)
	if got.err != nil {
		if !retryableReceive(got.err) {
			return got.err
		}
		c.failures++
		d := consumeBackoff << min(c.failures-1, 6)
		c.pause = time.NewTimer(min(d, consumeMaxBackoff))
		return nil
	}
	c.failures = 0
	c.lastEmpty = len(got.msgs) == 0
	if len(got.msgs) == 0 {
		return nil
	}
	return c.stream.Send(&qv1.ConsumeResponse{Messages: got.msgs})
}

// retryableReceive tells whether a receive that failed may succeed later
// unchanged.
func retryableReceive(err error) bool {
	switch status.Code(server.ToStatus(err)) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

// startBatches sends the acks, then the changes, waiting, in batches of
// up to maxBatchEntries while fewer than consumeAckBatches are in flight.
func (c *consumer) startBatches() {
	for c.batches < consumeAckBatches && len(c.acks)+len(c.changes) > 0 {
		isAck := len(c.acks) > 0
		list := &c.changes
		if isAck {
			list = &c.acks
		}
		n := min(len(*list), shardserver.MaxBatchEntries)
		batch := (*list)[:n:n]
		*list = (*list)[n:]
		if len(*list) == 0 {
			*list = nil
		}
		c.batches++
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			resp := c.batch(isAck, batch)
			select {
			case c.answered <- resp:
			case <-c.ctx.Done():
			}
		}()
	}
}

// batch deletes (isAck) or changes the leases of a batch, under ids of its
// own, and answers with the client's ids.
func (c *consumer) batch(isAck bool, batch []consumeAck) *qv1.ConsumeResponse {
	var ok []*qv1.BatchResultOk
	var failed []*qv1.BatchResultError
	var err error
	queue := c.first.GetQueue()
	if isAck {
		req := &qv1.DeleteMessageBatchRequest{Queue: queue, Entries: make([]*qv1.DeleteMessageBatchEntry, len(batch))}
		for i, a := range batch {
			req.Entries[i] = &qv1.DeleteMessageBatchEntry{Id: strconv.Itoa(i), ReceiptHandle: a.handle}
		}
		var resp *qv1.DeleteMessageBatchResponse
		if resp, err = c.r.DeleteMessageBatch(c.ctx, req); err == nil {
			ok, failed = resp.GetSuccessful(), resp.GetFailed()
		}
	} else {
		req := &qv1.ChangeMessageVisibilityBatchRequest{Queue: queue, Entries: make([]*qv1.ChangeMessageVisibilityBatchEntry, len(batch))}
		for i, a := range batch {
			req.Entries[i] = &qv1.ChangeMessageVisibilityBatchEntry{Id: strconv.Itoa(i), ReceiptHandle: a.handle, VisibilityTimeout: a.vis}
		}
		var resp *qv1.ChangeMessageVisibilityBatchResponse
		if resp, err = c.r.ChangeMessageVisibilityBatch(c.ctx, req); err == nil {
			ok, failed = resp.GetSuccessful(), resp.GetFailed()
		}
	}
	out := &qv1.ConsumeResponse{}
	if err != nil {
		for _, a := range batch {
			out.Failed = append(out.Failed, shardserver.FailedEntry(a.id, err))
		}
		return out
	}
	back := func(id string) string {
		if i, err := strconv.Atoi(id); err == nil && i >= 0 && i < len(batch) {
			return batch[i].id
		}
		return id
	}
	for _, o := range ok {
		o.Id = back(o.GetId())
		out.Successful = append(out.Successful, o)
	}
	for _, f := range failed {
		f.Id = back(f.GetId())
		out.Failed = append(out.Failed, f)
	}
	return out
}

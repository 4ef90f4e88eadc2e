package router

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
)

// Bounds of one SendStream.
const (
	// sendStreamWindow and sendStreamWindowBytes bound a stream's entries
	// read and not yet answered: past either, the stream reads no further
	// (gRPC flow control then holds the client back).
	sendStreamWindow      = 1000
	sendStreamWindowBytes = 16 << 20
	// sendStreamBatches bounds a stream's SendMessageBatch calls in
	// flight, and sendStreamQueueBatches those of one standard queue (a
	// FIFO queue has one at a time, so its entries are stored in the order
	// written).
	sendStreamBatches      = 8
	sendStreamQueueBatches = 4
)

// fifoQueueSuffix ends the name of a FIFO queue (store validates it).
const fifoQueueSuffix = ".fifo"

// SendStream implements QueueService: a SendMessageBatch that does not
// end. Entries are coalesced per queue into SendMessageBatch calls of this
// router, so every rule of a batch (validation, quota, idempotency,
// placement, forwarding to the leader) applies as it does to a call; a
// batch goes out as soon as the queue has fewer than its limit of batches
// in flight, so entries gather while earlier batches commit.
func (r *Router) SendStream(stream qv1.QueueService_SendStreamServer) error {
	if _, err := server.Require(stream.Context(), server.ScopeMessagesSend); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	s := &sendStream{r: r, stream: stream, ctx: ctx, queues: map[string]*sendQueue{},
		results: make(chan sendBatchResult, sendStreamBatches)}
	defer s.wg.Wait() // the batches in flight, cancelled first
	defer cancel()
	return s.run()
}

// sendStream is the state of one SendStream, owned by its handler's
// goroutine (run); batches run on their own goroutines and report to it.
type sendStream struct {
	r      *Router
	stream qv1.QueueService_SendStreamServer
	ctx    context.Context
	wg     sync.WaitGroup

	queues   map[string]*sendQueue
	order    []string // queues with entries waiting, oldest first
	entries  int      // read and not answered
	bytes    int
	inflight int
	results  chan sendBatchResult
}

// sendQueue holds one queue's entries waiting for a batch.
type sendQueue struct {
	waiting  []*qv1.SendMessageBatchEntry
	sizes    []int // proto.Size of each waiting entry
	inflight int
}

type sendBatchResult struct {
	queue string
	n     int
	bytes int
	resp  *qv1.SendStreamResponse
}

func (s *sendStream) run() error {
	reqs, readErr := readStream(s.ctx, s.stream.Recv)
	eof := false
	for {
		s.dispatch()
		if eof && s.entries == 0 {
			return nil
		}
		in := reqs
		if eof || s.entries >= sendStreamWindow || s.bytes >= sendStreamWindowBytes {
			in = nil
		}
		select {
		case req := <-in:
			if err := s.accept(req); err != nil {
				return err
			}
		case res := <-s.results:
			s.inflight--
			q := s.queues[res.queue]
			q.inflight--
			if q.inflight == 0 && len(q.waiting) == 0 {
				delete(s.queues, res.queue) // a stream may name any number of queues over time
			}
			s.entries -= res.n
			s.bytes -= res.bytes
			if err := s.stream.Send(res.resp); err != nil {
				return err
			}
		case err := <-readErr:
			if !errors.Is(err, io.EOF) {
				return err
			}
			eof = true
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
	}
}

// readStream reads a stream's requests on a goroutine until Recv fails
// (at the latest when the handler returns, which ends the stream); the
// error, io.EOF after a half-close, arrives on the second channel.
func readStream[Req any](ctx context.Context, recv func() (Req, error)) (<-chan Req, <-chan error) {
	reqs := make(chan Req)
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	return reqs, errc
}

// accept checks a write and queues its entries; a write whose entry ids
// do not hold ends the stream (its answers could not be told apart).
func (s *sendStream) accept(req *qv1.SendStreamRequest) error {
	if err := server.Reauthenticate(s.ctx); err != nil {
		return err
	}
	entries := req.GetEntries()
	if err := shardserver.ValidateBatch(len(entries), func(i int) string { return entries[i].GetId() }); err != nil {
		return err
	}
	name := req.GetQueue()
	q := s.queues[name]
	if q == nil {
		q = &sendQueue{}
		s.queues[name] = q
	}
	if len(q.waiting) == 0 {
		s.order = append(s.order, name)
	}
	q.waiting = append(q.waiting, entries...)
	for _, e := range entries {
		n := proto.Size(e)
		q.sizes = append(q.sizes, n)
		s.bytes += n
	}
	s.entries += len(entries)
	return nil
}

// dispatch starts a batch for each queue with entries waiting, oldest
// queue first, while the limits allow.
func (s *sendStream) dispatch() {
	for i := 0; i < len(s.order) && s.inflight < sendStreamBatches; {
		name := s.order[i]
		q := s.queues[name]
		limit := sendStreamQueueBatches
		if strings.HasSuffix(name, fifoQueueSuffix) {
			limit = 1
		}
		if q.inflight >= limit {
			i++
			continue
		}
		n, size := 0, 0
		for n < len(q.waiting) && n < shardserver.MaxBatchEntries {
			es := q.sizes[n]
			if n > 0 && size+es > shardserver.MaxBatchBytes {
				break
			}
			size += es
			n++
		}
		batch := q.waiting[:n:n]
		q.waiting, q.sizes = q.waiting[n:], q.sizes[n:]
		q.inflight++
		s.inflight++
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			res := sendBatchResult{queue: name, n: n, bytes: size, resp: s.send(name, batch)}
			select {
			case s.results <- res:
			case <-s.ctx.Done():
			}
		}()
		if len(q.waiting) == 0 {
			q.waiting, q.sizes = nil, nil
			s.order = append(s.order[:i], s.order[i+1:]...)
		}
	}
}

// send runs one batch through SendMessageBatch, under ids of its own (the
// client's need only be unique among its unanswered entries), and answers
// with the client's ids.
func (s *sendStream) send(queue string, batch []*qv1.SendMessageBatchEntry) *qv1.SendStreamResponse {
	ids := make([]string, len(batch))
	for i, e := range batch {
		ids[i] = e.GetId()
		e.Id = strconv.Itoa(i)
	}
	out := &qv1.SendStreamResponse{}
	resp, err := s.r.SendMessageBatch(s.ctx, &qv1.SendMessageBatchRequest{Queue: queue, Entries: batch})
	if err != nil {
		for _, id := range ids {
			out.Failed = append(out.Failed, shardserver.FailedEntry(id, err))
		}
		return out
	}
	back := func(id string) string {
		if i, err := strconv.Atoi(id); err == nil && i >= 0 && i < len(ids) {
			return ids[i]
		}
		return id
	}
	for _, ok := range resp.GetSuccessful() {
		ok.Id = back(ok.GetId())
		out.Successful = append(out.Successful, ok)
	}
	for _, f := range resp.GetFailed() {
		f.Id = back(f.GetId())
		out.Failed = append(out.Failed, f)
	}
	return out
}

package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

const (
	callTimeout  = 3 * time.Second // per attempt: longer than a failover
	drainLease   = 60 * time.Second
	maxSendTries = 8
)

// classify maps a call's error to its outcome: a definite refusal, or
// unknown (the call may have been applied) — with the ErrorInfo reason.
func classify(err error) (outcome, string) {
	if err == nil {
		return ok, ""
	}
	st, _ := status.FromError(err)
	reason := st.Code().String()
	for _, d := range st.Details() {
		if info, isInfo := d.(*errdetails.ErrorInfo); isInfo {
			reason = info.GetReason()
		}
	}
	if refused(st.Message()) {
		reason = "CONNECTION_REFUSED"
	}
	return classifyCode(st.Code(), st.Message()), reason
}

// refused reports whether an UNAVAILABLE error says the connection could
// not be made (the node is down): the request never left the client.
func refused(msg string) bool {
	return strings.Contains(msg, "connection refused") || strings.Contains(msg, "Error while dialing")
}

func classifyCode(c codes.Code, msg string) outcome {
	switch c {
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.AlreadyExists,
		codes.PermissionDenied, codes.Unauthenticated, codes.ResourceExhausted, codes.OutOfRange, codes.Unimplemented:
		return failed
	case codes.Unavailable:
		// The connection could not be made: the request never left.
		if refused(msg) {
			return failed
		}
	}
	return unknown
}

func codeOf(name string) codes.Code {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if strings.EqualFold(strings.ReplaceAll(c.String(), "_", ""), strings.ReplaceAll(name, "_", "")) {
			return c
		}
	}
	return codes.Unknown
}

// workload is the producers, consumers and superseder of one schedule.
type workload struct {
	c         *cluster
	h         *history
	seed      uint64
	mainQ     string
	deadQ     string // "" without a dead-letter queue
	slowQ     string
	maxRecv   int32
	queueVis  time.Duration
	maxVis    time.Duration // consumers' leases are drawn in [1s, maxVis]
	stopCh    chan struct{}
	wg        sync.WaitGroup
	lastOK    sync.Map // "send"/"receive" -> time.Time of the last success
	stopOnce  sync.Once
	producers int
	consumers int
	tw        *topicWork // nil: no topic
}

func (w *workload) stopped() bool {
	select {
	case <-w.stopCh:
		return true
	default:
		return false
	}
}

// sleep waits d or until the workload stops; it reports whether it slept
// the whole time.
func (w *workload) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.stopCh:
		return false
	case <-t.C:
		return true
	}
}

// pick chooses a node to call: any that is not known to be down (a client
// does not know which nodes are paused or partitioned).
func (w *workload) pick(rng *rand.Rand) uint64 {
	var ids []uint64
	for _, id := range w.c.ids {
		if w.c.stateOf(id) != down {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return w.c.ids[rng.IntN(len(w.c.ids))]
	}
	return ids[rng.IntN(len(ids))]
}

func (w *workload) api(rng *rand.Rand) (context.Context, context.CancelFunc, qv1.QueueServiceClient) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	return ctx, cancel, w.c.api(w.pick(rng))
}

// start runs the workload's goroutines until stop.
func (w *workload) start() {
	w.stopCh = make(chan struct{})
	for p := range w.producers {
		w.wg.Add(1)
		go w.producer(p)
	}
	for k := range w.consumers {
		w.wg.Add(1)
		go w.consumer(k)
	}
	w.wg.Add(1)
	go w.superseder()
	if w.tw != nil {
		w.startTopic()
	}
}

// stop ends the workload and waits for its goroutines (each call is
// bounded by callTimeout and each retry loop by its attempts).
func (w *workload) stop() {
	w.stopOnce.Do(func() { close(w.stopCh) })
	w.wg.Wait()
}

func (w *workload) producer(p int) {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(w.seed, uint64(100+p)))
	for n := 0; !w.stopped(); n++ {
		var es []*qv1.SendMessageBatchEntry
		for k := range 1 + rng.IntN(3) {
			body := fmt.Sprintf("s%d-p%d-%d-%d", w.seed, p, n, k)
			e := &qv1.SendMessageBatchEntry{Id: fmt.Sprint(k), Body: body, IdempotencyKey: body}
			if rng.IntN(5) == 0 {
				e.Delay = durationpb.New(time.Duration(200+rng.IntN(1800)) * time.Millisecond)
			}
			if rng.IntN(3) == 0 {
				p := int32(rng.IntN(10)) // issue 18: priorities ride through faults
				e.Priority = &p
			}
			es = append(es, e)
		}
		w.send(rng, w.mainQ, es)
		w.sleep(time.Duration(50+rng.IntN(200)) * time.Millisecond)
	}
}

// send sends es, retrying entries whose outcome is unknown with the same
// idempotency keys (a retry answers the first message's id).
func (w *workload) send(rng *rand.Rand, queue string, es []*qv1.SendMessageBatchEntry) []string {
	ids := make([]string, len(es))
	for _, e := range es {
		w.h.invokeSend(e.Body, queue, e.GetDelay().AsDuration().Milliseconds())
	}
	pending := es
	for try := 0; try < maxSendTries && len(pending) > 0; try++ {
		if try > 0 {
			time.Sleep(time.Duration(50*try+rng.IntN(100)) * time.Millisecond)
		}
		ctx, cancel, api := w.api(rng)
		r, err := api.SendMessageBatch(ctx, &qv1.SendMessageBatchRequest{Queue: queue, Entries: pending})
		cancel()
		if err != nil {
			o, _ := classify(err)
			for _, e := range pending {
				w.h.sendDone(e.Body, o, "")
			}
			if o == failed && !refused(err.Error()) {
				return ids
			}
			continue
		}
		byID := map[string]*qv1.SendMessageBatchEntry{}
		for _, e := range pending {
			byID[e.Id] = e
		}
		var again []*qv1.SendMessageBatchEntry
		for _, s := range r.GetSuccessful() {
			e := byID[s.GetId()]
			w.h.sendDone(e.Body, ok, s.GetMessageId())
			k := 0
			fmt.Sscan(e.Id, &k)
			ids[k] = s.GetMessageId()
		}
		for _, f := range r.GetFailed() {
			e := byID[f.GetId()]
			o := classifyCode(codeOf(f.GetCode()), f.GetMessage())
			w.h.sendDone(e.Body, o, "")
			if o == unknown {
				again = append(again, e)
			}
		}
		if len(r.GetSuccessful()) > 0 {
			w.lastOK.Store("send", time.Now())
		}
		pending = again
	}
	return ids
}

// receive leases up to max messages of queue for vis, retrying an unknown
// outcome with the same receive_attempt_id.
func (w *workload) receive(rng *rand.Rand, queue string, max int32, vis, wait time.Duration, drain bool) []recvEvent {
	attempt := fmt.Sprintf("r%d-%x", w.seed, rng.Uint64())
	invoked := time.Now()
	for try := 0; try < 3; try++ {
		ctx, cancel, api := w.api(rng)
		req := &qv1.ReceiveMessagesRequest{Queue: queue, MaxMessages: max, VisibilityTimeout: durationpb.New(vis),
			WaitTime: durationpb.New(wait), ReceiveAttemptId: attempt}
		r, err := api.ReceiveMessages(ctx, req)
		cancel()
		o, _ := classify(err)
		w.h.count("receive", o)
		if o == failed {
			return nil
		}
		if o == unknown {
			if w.stopped() && !drain {
				return nil
			}
			continue
		}
		done := time.Now()
		var evs []recvEvent
		for _, m := range r.GetMessages() {
			evs = append(evs, recvEvent{id: m.GetMessageId(), body: m.GetBody(), queue: queue, dlSource: m.GetDeadLetterSource(),
				count: m.GetReceiveCount(), visMs: vis.Milliseconds(), sentAt: m.GetSentAt().AsTime(),
				firstReceivedAt: m.GetFirstReceivedAt().AsTime(), handle: m.GetReceiptHandle(), invoked: invoked, done: done, drain: drain})
		}
		w.h.addRecvs(evs)
		w.lastOK.Store("receive", done)
		return evs
	}
	return nil
}

// settle deletes (or changes the visibility of, or nacks) one received
// message, retrying an unknown outcome.
func (w *workload) settle(rng *rand.Rand, e recvEvent, change bool, vis time.Duration) outcome {
	o := unknown
	for try := 0; try < 3 && o == unknown; try++ {
		invoked := time.Now()
		ctx, cancel, api := w.api(rng)
		var err error
		switch {
		case change && vis == 0 && rng.IntN(2) == 0:
			// A failed nack is a visibility change to 0 for every rule
			// the checker holds (the queue has no retry policy): the
			// message is visible at once and the receive counts.
			_, err = api.NackMessage(ctx, &qv1.NackMessageRequest{Queue: e.queue, ReceiptHandle: e.handle, Kind: qv1.NackKind_NACK_KIND_FAILED})
		case change:
			_, err = api.ChangeMessageVisibility(ctx, &qv1.ChangeMessageVisibilityRequest{Queue: e.queue, ReceiptHandle: e.handle, VisibilityTimeout: durationpb.New(vis)})
		default:
			_, err = api.DeleteMessage(ctx, &qv1.DeleteMessageRequest{Queue: e.queue, ReceiptHandle: e.handle})
		}
		cancel()
		var reason string
		o, reason = classify(err)
		w.h.addSettle(settleEvent{id: e.id, queue: e.queue, count: e.count, change: change, visMs: vis.Milliseconds(),
			outcome: o, reason: reason, invoked: invoked, done: time.Now()})
		if reason == "CONNECTION_REFUSED" {
			o = unknown // not sent: try another node
		}
	}
	return o
}

func (w *workload) consumer(k int) {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(w.seed, uint64(200+k)))
	for !w.stopped() {
		queue := w.mainQ
		if w.deadQ != "" && rng.IntN(5) == 0 {
			queue = w.deadQ
		}
		vis := time.Second + time.Duration(rng.Int64N(int64(w.maxVis-time.Second)+1)).Truncate(time.Millisecond)
		var wait time.Duration
		if rng.IntN(2) == 0 {
			wait = time.Duration(200+rng.IntN(800)) * time.Millisecond
		}
		evs := w.receive(rng, queue, int32(1+rng.IntN(6)), vis, wait, false)
		if len(evs) == 0 {
			w.sleep(time.Duration(10+rng.IntN(40)) * time.Millisecond)
			continue
		}
		switch n := rng.IntN(20); {
		case n < 12: // process and delete
			w.sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
			for _, e := range evs {
				w.settle(rng, e, false, 0)
			}
		case n < 14: // nack: back to the queue at once
			for _, e := range evs {
				w.settle(rng, e, true, 0)
			}
		case n < 15: // extend the lease, then delete
			for _, e := range evs {
				if w.settle(rng, e, true, vis) == ok {
					w.settle(rng, e, false, 0)
				}
			}
		case n < 17: // slow consumer: the lease ends before the delete
			if !w.sleep(vis + time.Duration(200+rng.IntN(800))*time.Millisecond) {
				continue
			}
			for _, e := range evs {
				w.settle(rng, e, false, 0)
			}
		default: // crashed consumer: the lease runs out
		}
	}
}

// superseder makes superseded handles on a queue of its own: it sends one
// message, receives it with a 1 s lease, lets the lease run out, receives it
// again, deletes with the old handle (STALE while the message exists), then
// changes the visibility and deletes with the new handle.
func (w *workload) superseder() {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(w.seed, 400))
	for n := 0; !w.stopped(); n++ {
		body := fmt.Sprintf("s%d-x-%d", w.seed, n)
		w.send(rng, w.slowQ, []*qv1.SendMessageBatchEntry{{Id: "0", Body: body, IdempotencyKey: body}})
		first := w.receive(rng, w.slowQ, 1, time.Second, 0, false)
		if !w.sleep(1300 * time.Millisecond) {
			return
		}
		again := w.receive(rng, w.slowQ, 1, 5*time.Second, 0, false)
		for _, e := range first {
			w.settle(rng, e, false, 0)
		}
		for _, e := range again {
			w.settle(rng, e, true, 5*time.Second)
			w.settle(rng, e, false, 0)
		}
	}
}

// queueDepth is the stored messages of queue (visible, in flight, delayed),
// read through node id.
func (w *workload) queueDepth(id uint64, queue string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	q, err := w.c.api(id).GetQueue(ctx, &qv1.GetQueueRequest{Name: queue})
	if err != nil {
		return 0, fmt.Errorf("GetQueue %s on node %d: %w", queue, id, err)
	}
	s := q.GetQueue().GetStats()
	return s.GetVisible() + s.GetInFlight() + s.GetDelayed(), nil
}

func (w *workload) queues() []string {
	qs := []string{w.mainQ, w.slowQ}
	if w.deadQ != "" {
		qs = append(qs, w.deadQ)
	}
	if w.tw != nil {
		for _, s := range w.tw.subs {
			qs = append(qs, s.queue)
		}
	}
	return qs
}

// drain receives everything left (long leases) and deletes it, until every
// queue reads empty through every node twice in a row.
func (w *workload) drain(limit time.Duration) error {
	rng := rand.New(rand.NewPCG(w.seed, 500))
	deadline := time.Now().Add(limit)
	quiet := 0
	for quiet < 2 {
		if time.Now().After(deadline) {
			return fmt.Errorf("drain: queues not empty after %v", limit)
		}
		got := 0
		for _, q := range w.queues() {
			evs := w.receive(rng, q, 10, drainLease, 0, true)
			got += len(evs)
			for _, e := range evs {
				if w.settle(rng, e, false, 0) != ok {
					return fmt.Errorf("drain: delete of %s failed", e.id)
				}
			}
		}
		if got > 0 {
			quiet = 0
			continue
		}
		var depth int64
		var errs []error
		for _, id := range w.c.ids {
			for _, q := range w.queues() {
				d, err := w.queueDepth(id, q)
				depth += d
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil || depth > 0 {
			quiet = 0
			time.Sleep(200 * time.Millisecond)
			continue
		}
		quiet++
	}
	return nil
}

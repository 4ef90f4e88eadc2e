package router

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/store"
)

// maxPartitionKey bounds SendMessageRequest.partition_key.
const maxPartitionKey = 128

// sendPartition chooses the partition of a send to queue q. On a FIFO
// queue the group decides (its messages must meet on one partition for
// order and deduplication), and a partition key other than the group is
// refused. Else the first key given decides (partition key, idempotency
// key — so a retried send lands where the first one did), else the
// queue's own round robin.
func (r *Router) sendPartition(field, tenant string, q *qv1.Queue, partitionKey, groupID, idempotencyKey string) (int, error) {
	n := partitions(q)
	if q.GetAttributes().GetFifo() {
		if partitionKey != "" && partitionKey != groupID {
			return 0, server.FieldError(field+"partition_key", "on a FIFO queue the group_id decides the partition: leave partition_key empty or equal to group_id")
		}
		partitionKey = groupID
	}
	if n <= 1 {
		return 0, nil
	}
	for _, k := range []string{partitionKey, idempotencyKey} {
		if k != "" {
			return PartitionOfKey(k, n), nil
		}
	}
	return int(r.counters(tenant, q.GetName()).send.Add(1) % uint64(n)), nil
}

// queueCounters rotate one queue's keyless sends and receive sweeps over
// its partitions. They are per queue, and sends and receives have one
// each: a counter shared by several queues (or by the sends and receives of
// one) advances in steps that skip partitions when calls alternate.
type queueCounters struct{ send, recv atomic.Uint64 }

// counters returns the round-robin counters of a queue, starting at a
// random point so API nodes do not all begin on partition 0.
func (r *Router) counters(tenant, name string) *queueCounters {
	k := cacheKey(tenant, name)
	if v, ok := r.rr.Load(k); ok {
		return v.(*queueCounters)
	}
	c := &queueCounters{}
	start := rand.Uint64()
	c.send.Store(start)
	c.recv.Store(start)
	v, _ := r.rr.LoadOrStore(k, c)
	return v.(*queueCounters)
}

// SendMessage implements QueueService.
func (r *Router) SendMessage(ctx context.Context, req *qv1.SendMessageRequest) (*qv1.SendMessageResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).SendMessage)
	}
	tenant, q, err := r.resolve(ctx, "queue", req.GetQueue(), server.ScopeMessagesSend)
	if err != nil {
		return nil, err
	}
	if len(req.GetPartitionKey()) > maxPartitionKey {
		return nil, server.FieldError("partition_key", fmt.Sprintf("must be at most %d bytes", maxPartitionKey))
	}
	i, err := r.sendPartition("", tenant, q, req.GetPartitionKey(), req.GetGroupId(), req.GetIdempotencyKey())
	if err != nil {
		return nil, err
	}
	// Tokens only for a send that is valid so far.
	if _, _, err := r.admitSend(ctx, tenant, 1); err != nil {
		return nil, err
	}
	req.Queue = store.PartitionName(q.GetName(), i)
	return withRoom(ctx, r, tenant, r.partitionShard(tenant, q, i), messageSize(req.GetBody(), req.GetAttributes(), req.GetTags()),
		func() (*qv1.SendMessageResponse, error) {
			return onPartition(ctx, r, tenant, q, i, "SendMessage", req, (*shardserver.Server).SendMessage)
		})
}

// SendMessageBatch implements QueueService: entries with a partition key
// (on a FIFO queue: a group) go to its partition, an entry whose key
// conflicts with its group fails alone; the others stay together (one
// command), on the partition of the first one's idempotency key — so a
// retried batch lands where it landed before and its keys deduplicate — or
// round robin when it has none. One call per partition, in parallel.
func (r *Router) SendMessageBatch(ctx context.Context, req *qv1.SendMessageBatchRequest) (*qv1.SendMessageBatchResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).SendMessageBatch)
	}
	tenant, err := server.Require(ctx, server.ScopeMessagesSend)
	if err != nil {
		return nil, err
	}
	if err := checkName("queue", req.GetQueue()); err != nil {
		return nil, err
	}
	entries := req.GetEntries()
	if err := shardserver.ValidateBatch(len(entries), func(i int) string { return entries[i].GetId() }); err != nil {
		return nil, err
	}
	for i, e := range entries {
		if len(e.GetPartitionKey()) > maxPartitionKey {
			return nil, server.FieldError(fmt.Sprintf("entries[%d].partition_key", i), fmt.Sprintf("must be at most %d bytes", maxPartitionKey))
		}
	}
	q, err := r.queue(ctx, tenant, req.GetQueue())
	if err != nil {
		return nil, err
	}
	// Place every entry first (an entry whose key conflicts with its group
	// fails alone, using no send tokens), then admit a prefix of the placed
	// entries under the tenant's send rate.
	rest := -1 // partition of the entries without a partition key or group
	var refused []*qv1.BatchResultError
	placed := make([]*qv1.SendMessageBatchEntry, 0, len(entries))
	at := make(map[*qv1.SendMessageBatchEntry]int, len(entries))
	for j, e := range entries {
		var i int
		if e.GetPartitionKey() != "" || (q.GetAttributes().GetFifo() && e.GetGroupId() != "") {
			i, err = r.sendPartition(fmt.Sprintf("entries[%d].", j), tenant, q, e.GetPartitionKey(), e.GetGroupId(), "")
			if err != nil {
				refused = append(refused, shardserver.FailedEntry(e.GetId(), err))
				continue
			}
		} else {
			if rest < 0 {
				rest, _ = r.sendPartition("", tenant, q, "", "", e.GetIdempotencyKey())
			}
			i = rest
		}
		placed = append(placed, e)
		at[e] = i
	}
	var admitted []*qv1.SendMessageBatchEntry
	var over []*qv1.BatchResultError
	if len(placed) > 0 {
		admitted, over, err = r.admitBatch(ctx, tenant, placed)
	}
	if err != nil {
		if len(refused) == 0 {
			return nil, err
		}
		for _, e := range placed {
			refused = append(refused, shardserver.FailedEntry(e.GetId(), err))
		}
		admitted = nil
	}
	refused = append(refused, over...)
	groups := map[int][]*qv1.SendMessageBatchEntry{}
	for _, e := range admitted {
		groups[at[e]] = append(groups[at[e]], e)
	}
	if len(groups) == 0 {
		return &qv1.SendMessageBatchResponse{Failed: refused}, nil
	}
	send := func(i int, part []*qv1.SendMessageBatchEntry) (*qv1.SendMessageBatchResponse, error) {
		return batchWithRoom(ctx, r, tenant, r.partitionShard(tenant, q, i), q.GetAttributes().GetFifo(), part,
			func(part []*qv1.SendMessageBatchEntry) (*qv1.SendMessageBatchResponse, error) {
				sub := &qv1.SendMessageBatchRequest{Queue: store.PartitionName(q.GetName(), i), Entries: part}
				return onPartition(ctx, r, tenant, q, i, "SendMessageBatch", sub, (*shardserver.Server).SendMessageBatch)
			})
	}
	if len(groups) == 1 {
		for i, part := range groups {
			return withRefused(refused)(send(i, part))
		}
	}
	return withRefused(refused)(mergeBatches(groups, send, func(out, part *qv1.SendMessageBatchResponse) {
		out.Successful = append(out.Successful, part.GetSuccessful()...)
		out.Failed = append(out.Failed, part.GetFailed()...)
	}, func(out *qv1.SendMessageBatchResponse, e *qv1.SendMessageBatchEntry, err error) {
		out.Failed = append(out.Failed, shardserver.FailedEntry(e.GetId(), err))
	}))
}

// mergeBatches runs one sub-batch per key in parallel and merges the
// answers; the entries of a sub-batch that failed as a whole are reported
// failed with its error, unless every sub-batch failed (then the call does).
func mergeBatches[K comparable, E any, Resp any](groups map[K][]E, run func(K, []E) (*Resp, error),
	merge func(out, part *Resp), fail func(out *Resp, e E, err error)) (*Resp, error) {
	type result struct {
		entries []E
		resp    *Resp
		err     error
	}
	results := make([]result, 0, len(groups))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for k, es := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := run(k, es)
			mu.Lock()
			results = append(results, result{es, resp, err})
			mu.Unlock()
		}()
	}
	wg.Wait()
	out := new(Resp)
	var firstErr error
	failed := 0
	for _, res := range results {
		if res.err != nil {
			failed++
			if firstErr == nil {
				firstErr = res.err
			}
			for _, e := range res.entries {
				fail(out, e, res.err)
			}
			continue
		}
		merge(out, res.resp)
	}
	if failed == len(results) {
		return nil, firstErr
	}
	return out, nil
}

// ReceiveMessages implements QueueService. A queue with one partition is
// one call (with its long poll). Otherwise the router sweeps the
// partitions from a start that rotates per queue (or that the receive
// attempt id gives), without waiting, until it has max_messages or the
// reply's byte budget is spent (full batches: a consumer's delete of a
// batch is one command per partition, and measured on three nodes this beat
// answering with the first partition that had messages by 1.3-1.6x); if all
// are empty and the
// caller asked for a long poll, it waits on every partition at once without
// leasing anything, and receives from the first that has a message ready
// (see pollPartitions).
func (r *Router) ReceiveMessages(ctx context.Context, req *qv1.ReceiveMessagesRequest) (*qv1.ReceiveMessagesResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).ReceiveMessages)
	}
	tenant, q, err := r.resolve(ctx, "queue", req.GetQueue(), server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	wait, err := shardserver.DurationMs("wait_time", req.GetWaitTime(), -1, shardserver.MaxWaitTime)
	if err != nil {
		return nil, err
	}
	if wait < 0 {
		wait = durationMsOf(q.GetAttributes().GetReceiveWait())
	}
	if _, ok := ctx.Deadline(); !ok {
		// A call without a deadline gets call()'s default timeout, which
		// bounds proposals: a long poll may first wait up to 20 s.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(wait)*time.Millisecond+r.cfg.Timeout)
		defer cancel()
	}
	n := partitions(q)
	recv := func(ctx context.Context, i int, max int32, wait *durationpb.Duration, waitOnly bool, maxBytes int64) (*qv1.ReceiveMessagesResponse, error) {
		sub := &qv1.ReceiveMessagesRequest{Queue: store.PartitionName(q.GetName(), i), MaxMessages: max,
			VisibilityTimeout: req.GetVisibilityTimeout(), WaitTime: wait, TagFilter: req.GetTagFilter(),
			ReceiveAttemptId: req.GetReceiveAttemptId()}
		t := r.partitionTarget(tenant, q, i)
		t.waitOnly, t.maxBytes = waitOnly, maxBytes
		return withPartition(ctx, r, tenant, q, i, func() (*qv1.ReceiveMessagesResponse, error) {
			return call(ctx, r, t, queueMethod+"ReceiveMessages", sub, (*shardserver.Server).ReceiveMessages)
		})
	}
	if n == 1 {
		return recv(ctx, 0, req.GetMaxMessages(), req.GetWaitTime(), false, 0)
	}
	max := req.GetMaxMessages()
	switch {
	case max < 0 || max > shardserver.MaxReceiveMessages:
		return nil, server.FieldError("max_messages", fmt.Sprintf("must be 1 to %d", shardserver.MaxReceiveMessages))
	case max == 0:
		max = 1
	}
	out := &qv1.ReceiveMessagesResponse{}
	// A retried receive attempt must sweep as the first try did, so that
	// each partition replays what it leased to it: its start is a function
	// of the attempt id. Other sweeps rotate per queue.
	var start int
	if id := req.GetReceiveAttemptId(); id != "" {
		start = PartitionOfKey(id, n)
	} else {
		start = int(r.counters(tenant, q.GetName()).recv.Add(1) % uint64(n))
	}
	var lastErr error
	served := 0
	// The reply's byte budget is shared: each partition leases within what
	// the earlier ones left, and the sweep ends when that could not carry
	// the largest message (a partition always leases a first one).
	budget := int64(server.ReceiveBudget)
	for j := range n {
		if budget < server.MaxMessageReply {
			break
		}
		i := (start + j) % n
		resp, err := recv(ctx, i, max-int32(len(out.Messages)), durationpb.New(0), false, budget)
		if err != nil {
			lastErr = err // one partition's shard down: the others still serve
			continue
		}
		served++
		for _, m := range resp.GetMessages() {
			budget -= int64(proto.Size(m)) + server.ReplyFraming
		}
		out.Messages = append(out.Messages, resp.GetMessages()...)
		if len(out.Messages) >= int(max) {
			return out, nil
		}
	}
	if served == 0 {
		return nil, lastErr
	}
	if len(out.Messages) > 0 || wait == 0 {
		return out, nil
	}
	return pollPartitions(ctx, n, max, wait, recv)
}

// receiveFunc runs a receive on partition i (wait-only: see waitOnlyHeader).
// maxBytes > 0 lowers the reply's byte budget (see maxBytesHeader).
type receiveFunc func(ctx context.Context, i int, max int32, wait *durationpb.Duration, waitOnly bool, maxBytes int64) (*qv1.ReceiveMessagesResponse, error)

// pollPartitions long-polls the n partitions of a queue for waitMs. A
// receive that leases must not be cancelled (a proposal already committing
// would keep its lease and count a receive nobody got), and leasing on
// several partitions at once takes more than max_messages. So it waits on
// every partition with wait-only calls, which propose nothing and are free
// to cancel, and when one reports a matching message visible it receives,
// without waiting, from that partition alone, on the caller's context. If
// another consumer took the message first, that receive finds nothing and
// the wait goes on until waitMs ends.
func pollPartitions(ctx context.Context, n int, max int32, waitMs int64, recv receiveFunc) (*qv1.ReceiveMessagesResponse, error) {
	deadline := time.Now().Add(time.Duration(waitMs) * time.Millisecond)
	for {
		i, err := waitPartitions(ctx, n, max, deadline, recv)
		if err != nil {
			if ctx.Err() != nil {
				return &qv1.ReceiveMessagesResponse{}, nil // the caller is gone
			}
			return nil, err
		}
		if i < 0 {
			return &qv1.ReceiveMessagesResponse{}, nil
		}
		resp, err := recv(ctx, i, max, durationpb.New(0), false, 0)
		if err != nil || len(resp.GetMessages()) > 0 {
			return resp, err
		}
		// Lost the race. A short pause bounds the receives proposed should
		// a partition keep reporting a message it then does not lease.
		select {
		case <-ctx.Done():
			return &qv1.ReceiveMessagesResponse{}, nil
		case <-time.After(min(20*time.Millisecond, time.Until(deadline))):
		}
	}
}

// waitPartitions runs a wait-only call on each of the n partitions until
// deadline. It returns the first partition whose call answered before the
// deadline (a message is ready there), or -1 when the wait ended with none;
// it fails only when every call failed.
func waitPartitions(ctx context.Context, n int, max int32, deadline time.Time, recv receiveFunc) (int, error) {
	remaining := time.Until(deadline)
	if remaining <= 0 {
		return -1, nil
	}
	// Rounded up to the millisecond the shard counts in, so its wait never
	// ends before ours (which would read as "ready").
	remaining = (remaining + time.Millisecond - 1).Truncate(time.Millisecond)
	// Bounded by our deadline, not call()'s default timeout (shorter than
	// the longest wait). The calls still running when we return are
	// cancelled, which loses nothing: they propose nothing.
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	type answer struct {
		i   int
		err error
	}
	answers := make(chan answer, n)
	for i := range n {
		go func() {
			_, err := recv(wctx, i, max, durationpb.New(remaining), true, 0)
			answers <- answer{i, err}
		}()
	}
	var lastErr error
	for range n {
		a := <-answers
		switch {
		case !time.Now().Before(deadline):
			return -1, nil // the wait is over, whatever the answer
		case a.err != nil:
			lastErr = a.err // one partition's shard down: the others still wait
		default:
			return a.i, nil
		}
	}
	return -1, lastErr
}

// DeleteMessage implements QueueService on the partition named by the handle.
func (r *Router) DeleteMessage(ctx context.Context, req *qv1.DeleteMessageRequest) (*qv1.DeleteMessageResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).DeleteMessage)
	}
	return byHandle(ctx, r, req, func(name string) { req.Queue = name }, "DeleteMessage", (*shardserver.Server).DeleteMessage)
}

// ChangeMessageVisibility implements QueueService on the partition named
// by the handle.
func (r *Router) ChangeMessageVisibility(ctx context.Context, req *qv1.ChangeMessageVisibilityRequest) (*qv1.ChangeMessageVisibilityResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).ChangeMessageVisibility)
	}
	return byHandle(ctx, r, req, func(name string) { req.Queue = name }, "ChangeMessageVisibility", (*shardserver.Server).ChangeMessageVisibility)
}

// byHandle routes a one-handle call to the partition its handle names;
// setQueue points the request at that partition's catalog name.
func byHandle[Req interface {
	proto.Message
	GetQueue() string
	GetReceiptHandle() string
}, Resp proto.Message](ctx context.Context, r *Router, req Req, setQueue func(string), method string,
	local func(*shardserver.Server, context.Context, Req) (Resp, error)) (Resp, error) {
	var zero Resp
	tenant, err := server.Require(ctx, server.ScopeMessagesReceive)
	if err != nil {
		return zero, err
	}
	if err := checkName("queue", req.GetQueue()); err != nil {
		return zero, err
	}
	hr := handleRouter{r: r}
	t, name, err := hr.target(ctx, "receipt_handle", tenant, req.GetQueue(), req.GetReceiptHandle())
	if err != nil {
		return zero, err
	}
	setQueue(name)
	return call(ctx, r, t, queueMethod+method, req, local)
}

// DeleteMessageBatch implements QueueService: one call per partition.
func (r *Router) DeleteMessageBatch(ctx context.Context, req *qv1.DeleteMessageBatchRequest) (*qv1.DeleteMessageBatchResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).DeleteMessageBatch)
	}
	ok, failed, err := handleBatch(ctx, r, req.GetQueue(), req.GetEntries(),
		func(queue string, part []*qv1.DeleteMessageBatchEntry) *qv1.DeleteMessageBatchRequest {
			return &qv1.DeleteMessageBatchRequest{Queue: queue, Entries: part}
		}, queueMethod+"DeleteMessageBatch", (*shardserver.Server).DeleteMessageBatch)
	if err != nil {
		return nil, err
	}
	return &qv1.DeleteMessageBatchResponse{Successful: ok, Failed: failed}, nil
}

// ChangeMessageVisibilityBatch implements QueueService: one call per partition.
func (r *Router) ChangeMessageVisibilityBatch(ctx context.Context, req *qv1.ChangeMessageVisibilityBatchRequest) (*qv1.ChangeMessageVisibilityBatchResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).ChangeMessageVisibilityBatch)
	}
	ok, failed, err := handleBatch(ctx, r, req.GetQueue(), req.GetEntries(),
		func(queue string, part []*qv1.ChangeMessageVisibilityBatchEntry) *qv1.ChangeMessageVisibilityBatchRequest {
			return &qv1.ChangeMessageVisibilityBatchRequest{Queue: queue, Entries: part}
		}, queueMethod+"ChangeMessageVisibilityBatch", (*shardserver.Server).ChangeMessageVisibilityBatch)
	if err != nil {
		return nil, err
	}
	return &qv1.ChangeMessageVisibilityBatchResponse{Successful: ok, Failed: failed}, nil
}

// handleEntry is a batch entry that names a message by its receipt handle.
type handleEntry interface {
	GetId() string
	GetReceiptHandle() string
}

// batchResponse is a batch answer of successful and failed entries.
type batchResponse interface {
	proto.Message
	GetSuccessful() []*qv1.BatchResultOk
	GetFailed() []*qv1.BatchResultError
}

// handleBatch routes a batch by receipt handle: one sub-batch per partition
// the handles name, in parallel. An entry whose handle is not valid
// base64url fails alone; the sub-batch that fails as a whole fails its
// entries (unless all fail: then the call does).
func handleBatch[E handleEntry, Req proto.Message, Resp batchResponse](ctx context.Context, r *Router, queue string, entries []E,
	sub func(queue string, part []E) Req, method string, local func(*shardserver.Server, context.Context, Req) (Resp, error),
) ([]*qv1.BatchResultOk, []*qv1.BatchResultError, error) {
	tenant, err := server.Require(ctx, server.ScopeMessagesReceive)
	if err != nil {
		return nil, nil, err
	}
	if err := checkName("queue", queue); err != nil {
		return nil, nil, err
	}
	if err := shardserver.ValidateBatch(len(entries), func(i int) string { return entries[i].GetId() }); err != nil {
		return nil, nil, err
	}
	var bad []*qv1.BatchResultError
	groups := map[target][]E{}
	hr := handleRouter{r: r}
	for i, e := range entries {
		t, err := shardserver.InEntry(i, func(p string) (target, error) {
			t, _, err := hr.target(ctx, p+"receipt_handle", tenant, queue, e.GetReceiptHandle())
			return t, err
		})
		if err != nil {
			bad = append(bad, shardserver.FailedEntry(e.GetId(), err))
			continue
		}
		groups[t] = append(groups[t], e)
	}
	if len(groups) == 0 {
		return nil, bad, nil
	}
	type merged struct {
		ok     []*qv1.BatchResultOk
		failed []*qv1.BatchResultError
	}
	out, err := mergeBatches(groups, func(t target, part []E) (*merged, error) {
		resp, err := call(ctx, r, t, method, sub(store.PartitionName(queue, t.partition), part), local)
		if err != nil {
			return nil, err
		}
		return &merged{resp.GetSuccessful(), resp.GetFailed()}, nil
	}, func(out, part *merged) {
		out.ok = append(out.ok, part.ok...)
		out.failed = append(out.failed, part.failed...)
	}, func(out *merged, e E, err error) {
		out.failed = append(out.failed, shardserver.FailedEntry(e.GetId(), err))
	})
	if err != nil {
		return nil, nil, err
	}
	return out.ok, append(out.failed, bad...), nil
}

// durationMsOf is a protobuf duration in milliseconds (nil: 0).
func durationMsOf(d *durationpb.Duration) int64 {
	if d == nil {
		return 0
	}
	return d.AsDuration().Milliseconds()
}

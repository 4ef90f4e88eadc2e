package quorumq

import (
	"context"
	"crypto/rand"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// Limits of one batch call (API.md); bigger batches are split.
const (
	maxBatchEntries = 100
	maxBatchBytes   = 4 << 20
	maxWaitTime     = 20 * time.Second
)

// Queue is a handle on one queue. It is cheap, safe for concurrent use and
// makes no call until used.
type Queue struct {
	c    *Client
	name string
	rt   *route // shared by the client's handles on this queue
}

// routed makes the calls under ctx go to (and teach) the queue's route.
func (q *Queue) routed(ctx context.Context) context.Context { return withRoute(ctx, q.rt) }

// Name returns the queue's name.
func (q *Queue) Name() string { return q.name }

// OutgoingMessage is a message to send. Only Body is required.
type OutgoingMessage struct {
	// Body is UTF-8 text.
	Body string
	// Attributes: at most 16.
	Attributes map[string]string
	// Tags for broker-side filtering: at most 16.
	Tags []string
	// Delay keeps the message invisible this long after the send
	// (overrides the queue's delivery_delay; zero: the queue's).
	Delay time.Duration
	// DeliverAt keeps the message invisible until then (instead of Delay).
	DeliverAt time.Time
	// GroupID orders messages of a FIFO queue (required there).
	GroupID string
	// DeduplicationID: FIFO sends with the same id within 5 minutes are
	// stored once.
	DeduplicationID string
	// IdempotencyKey makes retries of this send return the first result
	// for 5 minutes. Empty: the SDK makes a random one per message and
	// reuses it across its own retries. Set it to survive retries of your
	// own (a process restart resending the same work item).
	IdempotencyKey string
	// TTL: the message expires this long after the send (zero: the
	// queue's MessageTTL; at most that).
	TTL time.Duration
	// Priority 0 (lowest) – 9 (highest); nil: the default, 4. A receive
	// returns the highest priority first (see QueueAttributes.PriorityMode).
	// FIFO queues refuse any other priority than 4. Set it with
	// sdk.Priority(n).
	Priority *int
}

// Priority returns a message priority for OutgoingMessage.Priority.
func Priority(p int) *int { return &p }

// SendResult identifies a stored message.
type SendResult struct {
	// MessageID is the message's unique, sortable id.
	MessageID string
	// Sequence is its position in its partition.
	Sequence uint64
}

// newKey is a random idempotency key or receive attempt id.
func newKey() string { return rand.Text() }

func (m *OutgoingMessage) entry(id string) *qv1.SendMessageBatchEntry {
	e := &qv1.SendMessageBatchEntry{
		Id: id, Body: m.Body, Attributes: m.Attributes, Tags: m.Tags,
		GroupId: m.GroupID, DeduplicationId: m.DeduplicationID, IdempotencyKey: m.IdempotencyKey,
	}
	if m.Priority != nil {
		p := int32(*m.Priority)
		e.Priority = &p
	}
	if e.IdempotencyKey == "" {
		e.IdempotencyKey = newKey()
	}
	if m.Delay > 0 {
		e.Delay = durationpb.New(m.Delay)
	}
	if m.TTL > 0 {
		e.Ttl = durationpb.New(m.TTL)
	}
	if !m.DeliverAt.IsZero() {
		e.DeliverAt = timestamppb.New(m.DeliverAt)
	}
	return e
}

// checkEntry fails an entry whose text fields are not valid UTF-8 with
// INVALID_ARGUMENT, before it is sent: protobuf refuses to marshal such a
// string, which would fail the whole request (every entry of a batch)
// with INTERNAL. The server checks every other bound, per entry.
func checkEntry(e *qv1.SendMessageBatchEntry) error {
	field := ""
	switch {
	case !utf8.ValidString(e.GetBody()):
		field = "body"
	case !utf8.ValidString(e.GetGroupId()):
		field = "group_id"
	case !utf8.ValidString(e.GetDeduplicationId()):
		field = "deduplication_id"
	case !utf8.ValidString(e.GetIdempotencyKey()):
		field = "idempotency_key"
	}
	for k, v := range e.GetAttributes() {
		if field == "" && (!utf8.ValidString(k) || !utf8.ValidString(v)) {
			field = "attributes"
		}
	}
	for _, t := range e.GetTags() {
		if field == "" && !utf8.ValidString(t) {
			field = "tags"
		}
	}
	if field == "" {
		return nil
	}
	return &Error{Code: codes.InvalidArgument, Reason: ReasonInvalidArgument, Field: field, Message: field + " must be valid UTF-8"}
}

// size approximates what the server counts against the 4 MiB batch limit.
func entrySize(e *qv1.SendMessageBatchEntry) int {
	n := len(e.GetBody())
	for k, v := range e.GetAttributes() {
		n += len(k) + len(v)
	}
	for _, t := range e.GetTags() {
		n += len(t)
	}
	return n
}

// Send stores one message and returns once a majority of replicas has it.
// It is retried under the client's RetryPolicy with the same idempotency
// key, so a send whose answer was lost is not stored twice. A message
// whose text is not valid UTF-8 fails with ErrInvalidArgument unsent.
func (q *Queue) Send(ctx context.Context, m OutgoingMessage) (SendResult, error) {
	e := m.entry("")
	if err := checkEntry(e); err != nil {
		return SendResult{}, err
	}
	req := &qv1.SendMessageRequest{
		Queue: q.name, Body: e.Body, Attributes: e.Attributes, Tags: e.Tags, Delay: e.Delay,
		DeliverAt: e.DeliverAt, GroupId: e.GroupId, DeduplicationId: e.DeduplicationId, IdempotencyKey: e.IdempotencyKey, Ttl: e.Ttl,
		Priority: e.Priority,
	}
	resp, err := call(q.routed(ctx), q.c, "send", 0, func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.SendMessageResponse, error) {
		return api.SendMessage(ctx, req)
	})
	if err != nil {
		return SendResult{}, err
	}
	return SendResult{MessageID: resp.GetMessageId(), Sequence: resp.GetSequence()}, nil
}

// SendBatch sends messages in as few calls as the limits allow (100
// entries, 4 MiB). The results are aligned with msgs; when some entries
// fail, the error is a *BatchError whose Errors say which and why; the
// others are stored. An entry whose text is not valid UTF-8 fails alone
// with ErrInvalidArgument, unsent. Entries that fail with a retryable code
// are retried with their keys.
func (q *Queue) SendBatch(ctx context.Context, msgs []OutgoingMessage) ([]SendResult, error) {
	entries := make([]*qv1.SendMessageBatchEntry, len(msgs))
	for i := range msgs {
		entries[i] = msgs[i].entry(strconv.Itoa(i))
	}
	results := make([]SendResult, len(msgs))
	errs := q.sendEntries(ctx, entries, results)
	return results, newBatchError(errs)
}

// sendEntries sends entries (ids are their indexes as text) and fills
// results; it returns each entry's error. Invalid entries (checkEntry)
// are not sent, so they cannot fail the others.
func (q *Queue) sendEntries(ctx context.Context, entries []*qv1.SendMessageBatchEntry, results []SendResult) []error {
	ch := chunker{maxEntries: maxBatchEntries, maxBytes: maxBatchBytes}
	invalid := map[int]error{}
	for i, e := range entries {
		if err := checkEntry(e); err != nil {
			invalid[i] = err
			continue
		}
		ch.add(i, entrySize(e))
	}
	chunks := ch.done()
	errs := q.c.batch(q.routed(ctx), "send batch", len(entries), chunks, func(ctx context.Context, api qv1.QueueServiceClient, idx []int) ([]*qv1.BatchResultError, error) {
		req := &qv1.SendMessageBatchRequest{Queue: q.name, Entries: make([]*qv1.SendMessageBatchEntry, len(idx))}
		for j, i := range idx {
			req.Entries[j] = entries[i]
		}
		resp, err := api.SendMessageBatch(ctx, req)
		if err != nil {
			return nil, err
		}
		for _, ok := range resp.GetSuccessful() {
			if i, err := strconv.Atoi(ok.GetId()); err == nil && i >= 0 && i < len(results) {
				results[i] = SendResult{MessageID: ok.GetMessageId(), Sequence: ok.GetSequence()}
			}
		}
		return resp.GetFailed(), nil
	})
	for i, err := range invalid {
		errs[i] = err
	}
	return errs
}

// batch runs a batch call per chunk of entry indexes under the retry
// policy: a failed call is retried whole; entries that failed with a
// retryable code are sent again (with the same content, so the same
// idempotency keys) until the attempts are used up. Entry ids are the
// indexes as text. It returns each entry's error.
func (c *Client) batch(ctx context.Context, op string, n int, chunks [][]int, do func(context.Context, qv1.QueueServiceClient, []int) ([]*qv1.BatchResultError, error)) []error {
	return c.retryChunks(ctx, n, chunks, func(ctx context.Context, idx []int) ([]*qv1.BatchResultError, error) {
		return call(ctx, c, op, 0, func(ctx context.Context, api qv1.QueueServiceClient) ([]*qv1.BatchResultError, error) {
			return do(ctx, api, idx)
		})
	})
}

// chunker cuts entry indexes into calls of at most maxEntries entries and
// maxBytes bytes (a single larger entry gets a call of its own).
type chunker struct {
	maxEntries, maxBytes int
	cur                  []int
	size                 int
	chunks               [][]int
}

func (c *chunker) add(i, size int) {
	if len(c.cur) > 0 && (len(c.cur) == c.maxEntries || c.size+size > c.maxBytes) {
		c.chunks = append(c.chunks, c.cur)
		c.cur, c.size = nil, 0
	}
	c.cur = append(c.cur, i)
	c.size += size
}

func (c *chunker) done() [][]int {
	if len(c.cur) > 0 {
		c.chunks = append(c.chunks, c.cur)
		c.cur, c.size = nil, 0
	}
	return c.chunks
}

// retryChunks sends each chunk of entry indexes with send (one call, its
// own retries included) and sends the entries that failed with a
// retryable code again, after the policy's backoff, until the attempts are
// used up. Entry ids are the indexes as text. It returns each entry's
// error (nil for the entries no chunk names).
func (c *Client) retryChunks(ctx context.Context, n int, chunks [][]int, send func(context.Context, []int) ([]*qv1.BatchResultError, error)) []error {
	errs := make([]error, n)
	for _, idx := range chunks {
		for round := 1; len(idx) > 0; round++ {
			failed, err := send(ctx, idx)
			if err != nil {
				for _, i := range idx {
					errs[i] = err
				}
				break
			}
			var again []int
			var wait time.Duration
			for _, f := range failed {
				i, perr := strconv.Atoi(f.GetId())
				if perr != nil || i < 0 || i >= n {
					continue
				}
				e := batchEntryError(f)
				if ok, atLeast := retryable(e, false); ok && round < c.retry.MaxAttempts && ctx.Err() == nil {
					again = append(again, i)
					wait = max(wait, atLeast)
					continue
				}
				errs[i] = e
			}
			if len(again) > 0 {
				if err := sleepCtx(ctx, max(c.retry.backoff(round), wait)); err != nil {
					for _, i := range again {
						errs[i] = err
					}
					break
				}
			}
			idx = again
		}
	}
	return errs
}

// TagFilter selects messages by tags: every tag of All, at least one of
// Any (when given), none of None.
type TagFilter struct {
	All, Any, None []string
}

// ReceiveOption tunes a Receive.
type ReceiveOption func(*qv1.ReceiveMessagesRequest)

// MaxMessages receives up to n messages (1 – 100; default 1).
func MaxMessages(n int) ReceiveOption {
	return func(r *qv1.ReceiveMessagesRequest) { r.MaxMessages = int32(n) }
}

// WaitTime long-polls up to d (0 – 20s) for a message; default: the
// queue's receive_wait.
func WaitTime(d time.Duration) ReceiveOption {
	return func(r *qv1.ReceiveMessagesRequest) { r.WaitTime = durationpb.New(d) }
}

// VisibilityTimeout leases the messages for d; default: the queue's.
func VisibilityTimeout(d time.Duration) ReceiveOption {
	return func(r *qv1.ReceiveMessagesRequest) { r.VisibilityTimeout = durationpb.New(d) }
}

// Filter receives only messages whose tags match f.
func Filter(f TagFilter) ReceiveOption {
	return func(r *qv1.ReceiveMessagesRequest) {
		r.TagFilter = &qv1.TagFilter{All: f.All, Any: f.Any, None: f.None}
	}
}

// Message is a received (leased) message.
type Message struct {
	// ID is the id given at send.
	ID string
	// ReceiptHandle identifies this lease for Delete and ChangeVisibility.
	ReceiptHandle string
	// Body, Attributes and Tags are as sent.
	Body       string
	Attributes map[string]string
	Tags       []string
	// SentAt and FirstReceivedAt are the server's times.
	SentAt, FirstReceivedAt time.Time
	// ReceiveCount counts the receives so far, this one included.
	ReceiveCount int
	// GroupID is the FIFO group.
	GroupID string
	// Sequence is the position in its partition.
	Sequence uint64
	// DeadLetterSource names the queue a dead-lettered message came from,
	// and DeadLetterReason why: MAX_RECEIVES, EXPIRED or OVERFLOW.
	DeadLetterSource, DeadLetterReason string
	// FailedCount and ReleasedCount count earlier deliveries nacked as
	// failed (or whose lease ran out) and as released. ReceiveCount −
	// ReleasedCount counts toward the dead-letter policy.
	FailedCount, ReleasedCount int
	// Priority is the priority given at send (4 when none was).
	Priority int

	queue *Queue
}

// Queue returns the queue the message was received from.
func (m *Message) Queue() *Queue { return m.queue }

// Delete deletes the message with its receipt handle.
func (m *Message) Delete(ctx context.Context) error {
	return m.queue.Delete(ctx, m.ReceiptHandle)
}

// ChangeVisibility sets the message's lease to end d from now; 0 returns
// it to the queue at once.
func (m *Message) ChangeVisibility(ctx context.Context, d time.Duration) error {
	return m.queue.ChangeVisibility(ctx, m.ReceiptHandle, d)
}

func (q *Queue) message(m *qv1.ReceivedMessage) *Message {
	out := &Message{
		ID: m.GetMessageId(), ReceiptHandle: m.GetReceiptHandle(), Body: m.GetBody(),
		Attributes: m.GetAttributes(), Tags: m.GetTags(), ReceiveCount: int(m.GetReceiveCount()),
		GroupID: m.GetGroupId(), Sequence: m.GetSequence(), DeadLetterSource: m.GetDeadLetterSource(), queue: q,
		DeadLetterReason: deadLetterReason(m.GetDeadLetterReason()),
		FailedCount:      int(m.GetFailedCount()), ReleasedCount: int(m.GetReleasedCount()),
		Priority: int(m.GetPriority()),
	}
	if m.GetSentAt() != nil {
		out.SentAt = m.GetSentAt().AsTime()
	}
	if m.GetFirstReceivedAt() != nil {
		out.FirstReceivedAt = m.GetFirstReceivedAt().AsTime()
	}
	return out
}

// Receive leases up to MaxMessages visible messages, oldest first; with
// WaitTime it long-polls. Retries reuse one receive_attempt_id, so a
// receive whose answer was lost returns the same messages and handles
// instead of leasing others.
func (q *Queue) Receive(ctx context.Context, opts ...ReceiveOption) ([]*Message, error) {
	req := &qv1.ReceiveMessagesRequest{Queue: q.name}
	for _, o := range opts {
		o(req)
	}
	req.ReceiveAttemptId = newKey()
	return q.receive(ctx, req)
}

func (q *Queue) receive(ctx context.Context, req *qv1.ReceiveMessagesRequest) ([]*Message, error) {
	wait := maxWaitTime // unset: the queue's receive_wait, at most 20s
	if req.GetWaitTime() != nil {
		wait = req.GetWaitTime().AsDuration()
	}
	resp, err := call(q.routed(ctx), q.c, "receive", wait, func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.ReceiveMessagesResponse, error) {
		return api.ReceiveMessages(ctx, req)
	})
	if err != nil {
		return nil, err
	}
	out := make([]*Message, len(resp.GetMessages()))
	for i, m := range resp.GetMessages() {
		out[i] = q.message(m)
	}
	return out, nil
}

// Delete deletes a received message. Deleting a deleted message succeeds;
// a handle superseded by a later receive fails with ErrStaleReceipt.
func (q *Queue) Delete(ctx context.Context, receiptHandle string) error {
	_, err := call(q.routed(ctx), q.c, "delete", 0, func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.DeleteMessageResponse, error) {
		return api.DeleteMessage(ctx, &qv1.DeleteMessageRequest{Queue: q.name, ReceiptHandle: receiptHandle})
	})
	return err
}

// DeleteBatch deletes received messages, 100 per call. When some fail the
// error is a *BatchError aligned with receiptHandles.
func (q *Queue) DeleteBatch(ctx context.Context, receiptHandles []string) error {
	errs := q.c.batch(q.routed(ctx), "delete batch", len(receiptHandles), chunk(len(receiptHandles)), func(ctx context.Context, api qv1.QueueServiceClient, idx []int) ([]*qv1.BatchResultError, error) {
		req := &qv1.DeleteMessageBatchRequest{Queue: q.name, Entries: make([]*qv1.DeleteMessageBatchEntry, len(idx))}
		for j, i := range idx {
			req.Entries[j] = &qv1.DeleteMessageBatchEntry{Id: strconv.Itoa(i), ReceiptHandle: receiptHandles[i]}
		}
		resp, err := api.DeleteMessageBatch(ctx, req)
		return resp.GetFailed(), err
	})
	return newBatchError(errs)
}

// ChangeVisibility sets a received message's lease to end d from now
// (0 – 12h); 0 returns it to the queue at once (a nack).
func (q *Queue) ChangeVisibility(ctx context.Context, receiptHandle string, d time.Duration) error {
	_, err := call(q.routed(ctx), q.c, "change visibility", 0, func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.ChangeMessageVisibilityResponse, error) {
		return api.ChangeMessageVisibility(ctx, &qv1.ChangeMessageVisibilityRequest{
			Queue: q.name, ReceiptHandle: receiptHandle, VisibilityTimeout: durationpb.New(d)})
	})
	return err
}

// VisibilityChange is one entry of ChangeVisibilityBatch.
type VisibilityChange struct {
	ReceiptHandle string
	Timeout       time.Duration
}

// ChangeVisibilityBatch changes leases, 100 per call. When some fail the
// error is a *BatchError aligned with changes.
func (q *Queue) ChangeVisibilityBatch(ctx context.Context, changes []VisibilityChange) error {
	errs := q.c.batch(q.routed(ctx), "change visibility batch", len(changes), chunk(len(changes)), func(ctx context.Context, api qv1.QueueServiceClient, idx []int) ([]*qv1.BatchResultError, error) {
		req := &qv1.ChangeMessageVisibilityBatchRequest{Queue: q.name, Entries: make([]*qv1.ChangeMessageVisibilityBatchEntry, len(idx))}
		for j, i := range idx {
			req.Entries[j] = &qv1.ChangeMessageVisibilityBatchEntry{Id: strconv.Itoa(i), ReceiptHandle: changes[i].ReceiptHandle,
				VisibilityTimeout: durationpb.New(changes[i].Timeout)}
		}
		resp, err := api.ChangeMessageVisibilityBatch(ctx, req)
		return resp.GetFailed(), err
	})
	return newBatchError(errs)
}

// chunk splits n entry indexes into batches of at most 100.
func chunk(n int) [][]int {
	var out [][]int
	for lo := 0; lo < n; lo += maxBatchEntries {
		hi := min(lo+maxBatchEntries, n)
		idx := make([]int, 0, hi-lo)
		for i := lo; i < hi; i++ {
			idx = append(idx, i)
		}
		out = append(out, idx)
	}
	return out
}

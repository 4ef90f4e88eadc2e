package quorumq

import (
	"context"
	"errors"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// Topics: a published message is stored once in a partition log and read,
// in offset order per partition, by any number of consumer groups (see
// GroupConsumer), besides being copied into subscribed queues.

// Sentinels of topic calls (matched by reason, like the queue ones).
var (
	// ErrTopicNotFound: no such topic in the tenant.
	ErrTopicNotFound = errors.New("quorumq: topic not found")
	// ErrGroupNotFound: no such consumer group on the topic.
	ErrGroupNotFound = errors.New("quorumq: consumer group not found")
	// ErrOffsetOutOfRange: the offset is outside the partition's retained
	// log (retention dropped it): reset the group.
	ErrOffsetOutOfRange = errors.New("quorumq: offset out of range")
	// ErrUnknownMember: the group's coordinator does not know the member
	// (its session ended, or the coordinator moved): join again.
	ErrUnknownMember = errors.New("quorumq: unknown group member")
	// ErrMemberFenced: a read or commit for a partition the member does
	// not own in its generation (the group rebalanced).
	ErrMemberFenced = errors.New("quorumq: group member fenced")
)

// Reasons of topic calls (api/quorumq/v1/topic.proto).
const (
	ReasonTopicNotFound    = "TOPIC_NOT_FOUND"
	ReasonGroupNotFound    = "GROUP_NOT_FOUND"
	ReasonOffsetOutOfRange = "OFFSET_OUT_OF_RANGE"
	ReasonUnknownMember    = "UNKNOWN_MEMBER"
	ReasonMemberFenced     = "MEMBER_FENCED"
)

func init() {
	// The topic reasons join the queue ones (errors.go).
	byReason[ReasonTopicNotFound] = ErrTopicNotFound
	byReason[ReasonGroupNotFound] = ErrGroupNotFound
	byReason[ReasonOffsetOutOfRange] = ErrOffsetOutOfRange
	byReason[ReasonUnknownMember] = ErrUnknownMember
	byReason[ReasonMemberFenced] = ErrMemberFenced
}

// topicCall runs a TopicService call under the client's retry policy.
func topicCall[T any](ctx context.Context, c *Client, op string, extra time.Duration, fn func(context.Context, qv1.TopicServiceClient) (T, error)) (T, error) {
	return callEndpoint(ctx, c, c.retry, op, extra, func(ctx context.Context, ep *endpoint) (T, error) { return fn(ctx, ep.topics) })
}

// Topic is a handle on a topic; it makes no call until used.
type Topic struct {
	c    *Client
	name string
}

// Topic returns a handle on the topic name.
func (c *Client) Topic(name string) *Topic { return &Topic{c: c, name: name} }

// Name is the topic's name.
func (t *Topic) Name() string { return t.name }

// TopicAttributes are a topic's settings; zero fields take the server's
// defaults.
type TopicAttributes struct {
	// Partitions: 1 – 64 (default 1), fixed at creation.
	Partitions int
	// Retention: 60s – 14 days (default 7 days).
	Retention time.Duration
	// RetentionBytes bounds each partition's log (0: no bound).
	RetentionBytes int64
	// MaxMessageSize: body + attributes + tags (default 1 MiB).
	MaxMessageSize int64
}

// CreateTopic creates the topic (the same again succeeds; other
// attributes fail). It needs the queues:admin scope.
func (c *Client) CreateTopic(ctx context.Context, name string, a TopicAttributes) (*Topic, error) {
	req := &qv1.CreateTopicRequest{Name: name, Attributes: &qv1.TopicAttributes{Partitions: int32(a.Partitions),
		RetentionBytes: a.RetentionBytes, MaxMessageSize: a.MaxMessageSize}}
	if a.Retention > 0 {
		req.Attributes.Retention = durationpb.New(a.Retention)
	}
	_, err := topicCall(ctx, c, "create topic", 0, func(ctx context.Context, api qv1.TopicServiceClient) (*qv1.CreateTopicResponse, error) {
		return api.CreateTopic(ctx, req)
	})
	if err != nil {
		return nil, err
	}
	return c.Topic(name), nil
}

// CreateGroup creates a consumer group at the oldest retained message of
// every partition (an existing group keeps its offsets). It needs the
// queues:admin scope.
func (t *Topic) CreateGroup(ctx context.Context, group string) error {
	_, err := topicCall(ctx, t.c, "create group", 0, func(ctx context.Context, api qv1.TopicServiceClient) (*qv1.CreateGroupResponse, error) {
		return api.CreateGroup(ctx, &qv1.CreateGroupRequest{Topic: t.name, Group: group, Start: qv1.GroupStart_GROUP_START_EARLIEST})
	})
	return err
}

// TopicMessage is a message to publish.
type TopicMessage struct {
	// Body is UTF-8 text.
	Body string
	// Attributes: at most 16.
	Attributes map[string]string
	// Tags: at most 16 (subscriptions filter on them).
	Tags []string
	// PartitionKey: messages with one key go to one partition, in publish
	// order (empty: round robin).
	PartitionKey string
	// IdempotencyKey makes retries return the first result for 5 minutes.
	// Empty: a random one per message, kept across the SDK's retries.
	IdempotencyKey string
}

// PublishResult places a published message.
type PublishResult struct {
	MessageID string
	Partition int32
	Offset    int64
}

// Publisher publishes to a topic. Every call is retried under the
// client's RetryPolicy with the message's idempotency key, so a publish
// whose answer was lost is stored once. It is safe for concurrent use.
type Publisher struct {
	t *Topic
}

// NewPublisher returns a publisher to the topic.
func (t *Topic) NewPublisher() *Publisher { return &Publisher{t: t} }

// Publish appends one message and returns once a majority of replicas
// has it.
func (p *Publisher) Publish(ctx context.Context, m TopicMessage) (PublishResult, error) {
	key := m.IdempotencyKey
	if key == "" {
		key = newKey()
	}
	if err := checkTopicMessage(m, key); err != nil {
		return PublishResult{}, err
	}
	req := &qv1.PublishRequest{Topic: p.t.name, Body: m.Body, Attributes: m.Attributes, Tags: m.Tags,
		PartitionKey: m.PartitionKey, IdempotencyKey: key}
	r, err := topicCall(ctx, p.t.c, "publish", 0, func(ctx context.Context, api qv1.TopicServiceClient) (*qv1.PublishResponse, error) {
		return api.Publish(ctx, req)
	})
	if err != nil {
		return PublishResult{}, err
	}
	return PublishResult{MessageID: r.GetMessageId(), Partition: r.GetPartition(), Offset: r.GetOffset()}, nil
}

// Bounds of one PublishBatch call (api/quorumq/v1/topic.proto).
const (
	maxPublishEntries = 100
	maxPublishBytes   = 4 << 20
)

// checkTopicMessage fails a message whose text is not valid UTF-8 before
// it is sent (protobuf would refuse the whole request).
func checkTopicMessage(m TopicMessage, key string) error {
	err := checkEntry(&qv1.SendMessageBatchEntry{Body: m.Body, Attributes: m.Attributes, Tags: m.Tags, GroupId: m.PartitionKey, IdempotencyKey: key})
	var e *Error
	if errors.As(err, &e) && e.Field == "group_id" {
		e.Field, e.Message = "partition_key", "partition_key must be valid UTF-8"
	}
	return err
}

// PublishBatch publishes msgs in as few calls as the limits allow (100
// entries, 4 MiB). The results are aligned with msgs; when some entries
// fail the error is a *BatchError saying which. Entries that fail with a
// retryable code are published again with their keys. The server checks
// the bounds of every entry before it publishes any: an entry out of
// bounds (too many tags, an empty one, …) fails the other entries of its
// call with it; one too large for the topic fails alone.
func (p *Publisher) PublishBatch(ctx context.Context, msgs []TopicMessage) ([]PublishResult, error) {
	entries := make([]*qv1.PublishBatchEntry, len(msgs))
	results := make([]PublishResult, len(msgs))
	errs := make([]error, len(msgs))
	ch := chunker{maxEntries: maxPublishEntries, maxBytes: maxPublishBytes}
	for i, m := range msgs {
		key := m.IdempotencyKey
		if key == "" {
			key = newKey()
		}
		if err := checkTopicMessage(m, key); err != nil {
			errs[i] = err
			continue
		}
		entries[i] = &qv1.PublishBatchEntry{Id: strconv.Itoa(i), Body: m.Body, Attributes: m.Attributes, Tags: m.Tags,
			PartitionKey: m.PartitionKey, IdempotencyKey: key}
		s := len(m.Body) + len(m.PartitionKey) + len(key) + 64
		for k, v := range m.Attributes {
			s += len(k) + len(v)
		}
		for _, tag := range m.Tags {
			s += len(tag)
		}
		ch.add(i, s)
	}
	chunks := ch.done()
	c := p.t.c
	sent := c.retryChunks(ctx, len(msgs), chunks, func(ctx context.Context, idx []int) ([]*qv1.BatchResultError, error) {
		req := &qv1.PublishBatchRequest{Topic: p.t.name}
		for _, i := range idx {
			req.Entries = append(req.Entries, entries[i])
		}
		resp, err := topicCall(ctx, c, "publish batch", 0, func(ctx context.Context, api qv1.TopicServiceClient) (*qv1.PublishBatchResponse, error) {
			return api.PublishBatch(ctx, req)
		})
		if err != nil {
			return nil, err
		}
		for _, ok := range resp.GetSuccessful() {
			if i, err := strconv.Atoi(ok.GetId()); err == nil && i >= 0 && i < len(results) {
				results[i] = PublishResult{MessageID: ok.GetMessageId(), Partition: ok.GetPartition(), Offset: ok.GetOffset()}
			}
		}
		failed := make([]*qv1.BatchResultError, 0, len(resp.GetFailed()))
		for _, f := range resp.GetFailed() {
			failed = append(failed, &qv1.BatchResultError{Id: f.GetId(), Code: f.GetCode(), Reason: f.GetReason(), Message: f.GetMessage()})
		}
		return failed, nil
	})
	for i, err := range sent {
		if err != nil {
			errs[i] = err
		}
	}
	return results, newBatchError(errs)
}

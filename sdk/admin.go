package quorumq

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// QueueAttributes are a queue's settings. A zero field means the server's
// default (visibility 30s, retention 4 days, no delay, no long poll, 1 MiB
// messages, 1 partition, no dead-letter queue).
type QueueAttributes struct {
	VisibilityTimeout time.Duration
	MessageRetention  time.Duration
	DeliveryDelay     time.Duration
	ReceiveWait       time.Duration
	MaxMessageSize    int64
	// DeadLetterQueue and MaxReceiveCount: after MaxReceiveCount receives
	// a message moves to DeadLetterQueue (of the same tenant).
	DeadLetterQueue string
	MaxReceiveCount int
	// FIFO and ContentBasedDeduplication are fixed at creation; a FIFO
	// queue's name ends in ".fifo".
	FIFO                      bool
	ContentBasedDeduplication bool
	Partitions                int
	// RetryPolicy backs off failed deliveries on the server (nil: none).
	RetryPolicy *QueueRetryPolicy
	// MessageTTL: every message expires this long after its send (0:
	// never); a message's own TTL may only be shorter. Less than the
	// retention. Expired messages are dead-lettered (reason EXPIRED) or
	// dropped.
	MessageTTL time.Duration
	// MaxLength and MaxBytes bound the stored messages (0: no bound);
	// Overflow says what a send past them does.
	MaxLength, MaxBytes int64
	Overflow            Overflow
	// PriorityMode is "strict" (or empty: the highest priority first) or
	// "weighted": of every PriorityWeight + 1 messages delivered (default
	// 10), one is the oldest visible message of any priority.
	PriorityMode   string
	PriorityWeight int
	// Fairness "group" (standard queues, fixed at creation): receives
	// favour message groups with few messages received and not yet
	// deleted over a group flooding the queue.
	Fairness string
}

// QueueStats are approximate counts at the time of GetQueue.
type QueueStats struct {
	Visible, InFlight, Delayed int64
}

// QueueInfo describes a queue.
type QueueInfo struct {
	Name       string
	Attributes QueueAttributes
	Tags       map[string]string
	CreatedAt  time.Time
	// Stats are filled by GetQueue only.
	Stats QueueStats
	// PartitionShards is the shard (Raft group) of each partition
	// (GetQueue only).
	PartitionShards []uint64
}

func dur(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func (a QueueAttributes) proto() *qv1.QueueAttributes {
	p := &qv1.QueueAttributes{
		VisibilityTimeout: dur(a.VisibilityTimeout), MessageRetention: dur(a.MessageRetention),
		DeliveryDelay: dur(a.DeliveryDelay), ReceiveWait: dur(a.ReceiveWait), MaxMessageSize: a.MaxMessageSize,
		Fifo: a.FIFO, ContentBasedDeduplication: a.ContentBasedDeduplication, Partitions: int32(a.Partitions),
		PriorityMode: a.PriorityMode, PriorityWeight: int32(a.PriorityWeight), Fairness: a.Fairness,
	}
	if a.DeadLetterQueue != "" {
		p.DeadLetter = &qv1.DeadLetterPolicy{Queue: a.DeadLetterQueue, MaxReceiveCount: int32(a.MaxReceiveCount)}
	}
	a.limitsProto(p)
	return p
}

func queueInfo(q *qv1.Queue) *QueueInfo {
	a := q.GetAttributes()
	info := &QueueInfo{
		Name: q.GetName(), Tags: q.GetTags(),
		Attributes: QueueAttributes{
			VisibilityTimeout: a.GetVisibilityTimeout().AsDuration(), MessageRetention: a.GetMessageRetention().AsDuration(),
			DeliveryDelay: a.GetDeliveryDelay().AsDuration(), ReceiveWait: a.GetReceiveWait().AsDuration(),
			MaxMessageSize: a.GetMaxMessageSize(), DeadLetterQueue: a.GetDeadLetter().GetQueue(),
			MaxReceiveCount: int(a.GetDeadLetter().GetMaxReceiveCount()), FIFO: a.GetFifo(),
			ContentBasedDeduplication: a.GetContentBasedDeduplication(), Partitions: int(a.GetPartitions()),
			PriorityMode: a.GetPriorityMode(), PriorityWeight: int(a.GetPriorityWeight()), Fairness: a.GetFairness(),
		},
		Stats:           QueueStats{Visible: q.GetStats().GetVisible(), InFlight: q.GetStats().GetInFlight(), Delayed: q.GetStats().GetDelayed()},
		PartitionShards: q.GetPartitionShards(),
	}
	if q.GetCreatedAt() != nil {
		info.CreatedAt = q.GetCreatedAt().AsTime()
	}
	info.Attributes.limitsFrom(a)
	return info
}

// CreateQueue creates a queue, or returns it when it exists with the same
// attributes; other attributes fail with ErrQueueExists.
func (c *Client) CreateQueue(ctx context.Context, name string, attrs QueueAttributes, tags map[string]string) (*QueueInfo, error) {
	resp, err := call(ctx, c, "create queue", 0, func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.CreateQueueResponse, error) {
		return api.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: name, Attributes: attrs.proto(), Tags: tags})
	})
	if err != nil {
		return nil, err
	}
	return queueInfo(resp.GetQueue()), nil
}

// GetQueue returns a queue's attributes and approximate counts.
func (c *Client) GetQueue(ctx context.Context, name string) (*QueueInfo, error) {
	resp, err := call(ctx, c, "get queue", 0, func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.GetQueueResponse, error) {
		return api.GetQueue(ctx, &qv1.GetQueueRequest{Name: name})
	})
	if err != nil {
		return nil, err
	}
	return queueInfo(resp.GetQueue()), nil
}

// ListQueues returns every queue of the tenant whose name starts with
// prefix, in name order (page by page; without stats).
func (c *Client) ListQueues(ctx context.Context, prefix string) ([]*QueueInfo, error) {
	var out []*QueueInfo
	token := ""
	for {
		resp, err := call(ctx, c, "list queues", 0, func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.ListQueuesResponse, error) {
			return api.ListQueues(ctx, &qv1.ListQueuesRequest{Prefix: prefix, PageSize: 1000, PageToken: token})
		})
		if err != nil {
			return nil, err
		}
		for _, q := range resp.GetQueues() {
			out = append(out, queueInfo(q))
		}
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

// DeleteQueue deletes a queue and its messages. A retry that finds the
// queue gone (because the first attempt deleted it) succeeds.
func (c *Client) DeleteQueue(ctx context.Context, name string) error {
	attempts := 0
	_, err := call(ctx, c, "delete queue", 0, func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.DeleteQueueResponse, error) {
		attempts++
		return api.DeleteQueue(ctx, &qv1.DeleteQueueRequest{Name: name})
	})
	if attempts > 1 && errors.Is(err, ErrQueueNotFound) {
		return nil
	}
	return err
}

// PurgeQueue removes every message of a queue: visible, in flight and
// delayed. It is not retried: an attempt whose answer was lost may have
// purged, and a second purge would also remove messages sent in between.
// On an error the caller decides whether to purge again.
func (c *Client) PurgeQueue(ctx context.Context, name string) error {
	_, err := callOnce(ctx, c, "purge queue", func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.PurgeQueueResponse, error) {
		return api.PurgeQueue(ctx, &qv1.PurgeQueueRequest{Name: name})
	})
	return err
}

// RedriveOptions tune Redrive.
type RedriveOptions struct {
	// MaxMessages moved by this call (1 – 10000; zero: the server's 1000).
	MaxMessages int
	// TargetQueue receives every message instead of its source queue.
	TargetQueue string
}

// Redrive moves messages of a dead-letter queue back to their source
// queues (receive count reset) and returns how many moved.
func (c *Client) Redrive(ctx context.Context, deadLetterQueue string, o RedriveOptions) (int64, error) {
	resp, err := call(ctx, c, "redrive", 0, func(ctx context.Context, api qv1.QueueServiceClient) (*qv1.RedriveMessagesResponse, error) {
		return api.RedriveMessages(ctx, &qv1.RedriveMessagesRequest{DeadLetterQueue: deadLetterQueue, MaxMessages: int32(o.MaxMessages), TargetQueue: o.TargetQueue})
	})
	if err != nil {
		return 0, err
	}
	return resp.GetMoved(), nil
}

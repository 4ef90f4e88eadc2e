package shardserver

import (
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// TopicSettings turns API attributes into a record's settings, defaults
// filled in and ranges checked.
func TopicSettings(tenant, name string, a *qv1.TopicAttributes) (*storepb.TopicRecord, error) {
	if err := store.ValidateTopicName("name", name); err != nil {
		return nil, err
	}
	rec := &storepb.TopicRecord{Tenant: tenant, Name: name, Partitions: max(a.GetPartitions(), 1),
		RetentionMs: store.DefaultTopicRetentionMs, RetentionBytes: a.GetRetentionBytes(), MaxMessageSize: a.GetMaxMessageSize()}
	if a.GetPartitions() < 0 {
		return nil, server.FieldError("attributes.partitions", fmt.Sprintf("must be 1 to %d", store.MaxTopicPartitions))
	}
	if rec.MaxMessageSize == 0 {
		rec.MaxMessageSize = store.MaxMessageSize
	}
	if d := a.GetRetention(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, server.FieldError("attributes.retention", "not a valid duration")
		}
		rec.RetentionMs = d.AsDuration().Milliseconds()
	}
	if err := store.ValidateTopicSettings(rec); err != nil {
		return nil, err
	}
	return rec, nil
}

func TopicToAPI(r *storepb.TopicRecord) *qv1.Topic {
	t := &qv1.Topic{
		Name: r.GetName(),
		Attributes: &qv1.TopicAttributes{Partitions: r.GetPartitions(),
			Retention:      durationpb.New(time.Duration(r.GetRetentionMs()) * time.Millisecond),
			RetentionBytes: r.GetRetentionBytes(), MaxMessageSize: r.GetMaxMessageSize()},
		CreateTime: timestamppb.New(time.UnixMilli(r.GetCreatedAtMs())),
	}
	for _, s := range r.GetSubscriptions() {
		t.Subscriptions = append(t.Subscriptions, SubscriptionToAPI(s))
	}
	return t
}

func SubscriptionToAPI(s *storepb.TopicSubscription) *qv1.Subscription {
	out := &qv1.Subscription{Queue: s.GetQueue()}
	if f := s.GetFilter(); f != nil {
		out.TagFilter = &qv1.TagFilter{All: f.GetAll(), Any: f.GetAny(), None: f.GetNone()}
	}
	return out
}

func TopicMessageToAPI(m *storepb.TopicMessageRecord) *qv1.TopicMessage {
	return &qv1.TopicMessage{MessageId: m.GetId(), Offset: m.GetOffset(), Body: m.GetBody(), Attributes: m.GetAttributes(),
		Tags: m.GetTags(), PartitionKey: m.GetPartitionKey(), PublishTime: timestamppb.New(time.UnixMilli(m.GetPublishedAtMs()))}
}

// GroupStart turns an API start into a SeekTopicGroup's mode and time.
func GroupStart(start qv1.GroupStart, at *timestamppb.Timestamp) (int32, int64, error) {
	switch start {
	case qv1.GroupStart_GROUP_START_UNSPECIFIED, qv1.GroupStart_GROUP_START_EARLIEST:
		return store.GroupStartEarliest, 0, nil
	case qv1.GroupStart_GROUP_START_LATEST:
		return store.GroupStartLatest, 0, nil
	case qv1.GroupStart_GROUP_START_TIME:
		if at == nil || at.CheckValid() != nil {
			return 0, 0, server.FieldError("time", "a valid time is required with GROUP_START_TIME")
		}
		return store.GroupStartTime, at.AsTime().UnixMilli(), nil
	}
	return 0, 0, server.FieldError("start", "unknown start")
}

// OutcomeStatus rebuilds the status of a publish entry's failure.
func OutcomeStatus(o *storepb.TopicPublishOutcome) error {
	var c codes.Code
	if err := c.UnmarshalJSON([]byte(strconv.Quote(o.GetErrorCode()))); err != nil {
		c = codes.Internal
	}
	return server.StatusError(c, o.GetErrorReason(), o.GetErrorMessage(), nil)
}

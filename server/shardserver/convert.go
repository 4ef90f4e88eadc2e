package shardserver

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Upper bounds used while converting; the store enforces the exact ranges of
// DESIGN §3 and names the field.
const maxAttrDuration = 15 * 24 * time.Hour

// attributesFromAPI fills a store attribute set from the API's: unset fields
// take the value from base (the defaults on create, the current values on a
// masked update).
func attributesFromAPI(a *qv1.QueueAttributes, base *storepb.QueueAttributes, mask map[string]bool) (*storepb.QueueAttributes, error) {
	out := cloneAttrs(base)
	set := func(name string) bool { return mask == nil || mask[name] }
	var err error
	durs := []struct {
		name string
		d    *durationpb.Duration
		def  int64
		dst  *int64
	}{
		{"visibility_timeout", a.GetVisibilityTimeout(), store.DefaultAttributes().VisibilityTimeoutMs, &out.VisibilityTimeoutMs},
		{"message_retention", a.GetMessageRetention(), store.DefaultAttributes().MessageRetentionMs, &out.MessageRetentionMs},
		{"delivery_delay", a.GetDeliveryDelay(), store.DefaultAttributes().DeliveryDelayMs, &out.DeliveryDelayMs},
		{"receive_wait", a.GetReceiveWait(), store.DefaultAttributes().ReceiveWaitMs, &out.ReceiveWaitMs},
	}
	for _, f := range durs {
		if !set(f.name) {
			continue
		}
		def := *f.dst
		if mask != nil { // named in the mask but unset: back to the default
			def = f.def
		}
		if *f.dst, err = DurationMs("attributes."+f.name, f.d, def, maxAttrDuration); err != nil {
			return nil, err
		}
	}
	if set("max_message_size") {
		switch {
		case a.GetMaxMessageSize() != 0:
			out.MaxMessageSize = a.GetMaxMessageSize()
		case mask != nil:
			out.MaxMessageSize = store.DefaultAttributes().MaxMessageSize
		}
	}
	if set("dead_letter") {
		if dl := a.GetDeadLetter(); dl != nil {
			if dl.GetQueue() == "" {
				return nil, server.FieldError("attributes.dead_letter.queue", "must name a queue")
			}
			out.DeadLetterQueue = dl.GetQueue()
			out.MaxReceiveCount = dl.GetMaxReceiveCount()
		} else if mask != nil {
			out.DeadLetterQueue, out.MaxReceiveCount = "", 0
		}
	}
	if set("fifo") && (a.GetFifo() || mask != nil) {
		out.Fifo = a.GetFifo()
	}
	if set("content_based_deduplication") && (a.GetContentBasedDeduplication() || mask != nil) {
		out.ContentBasedDeduplication = a.GetContentBasedDeduplication()
	}
	if set("partitions") && a.GetPartitions() != 0 {
		out.Partitions = a.GetPartitions()
	}
	if err := limitsFromAPI(a, out, set, mask != nil); err != nil {
		return nil, err
	}
	if err := orderFromAPI(a, out, set, mask != nil); err != nil {
		return nil, err
	}
	return out, store.ValidateAttributes(out)
}

func cloneAttrs(a *storepb.QueueAttributes) *storepb.QueueAttributes {
	return proto.Clone(a).(*storepb.QueueAttributes)
}

func msDuration(ms int64) *durationpb.Duration {
	return durationpb.New(time.Duration(ms) * time.Millisecond)
}

func msTime(ms int64) *timestamppb.Timestamp {
	if ms == 0 {
		return nil
	}
	return timestamppb.New(time.UnixMilli(ms))
}

func attributesToAPI(a *storepb.QueueAttributes) *qv1.QueueAttributes {
	out := &qv1.QueueAttributes{
		VisibilityTimeout:         msDuration(a.GetVisibilityTimeoutMs()),
		MessageRetention:          msDuration(a.GetMessageRetentionMs()),
		DeliveryDelay:             msDuration(a.GetDeliveryDelayMs()),
		ReceiveWait:               msDuration(a.GetReceiveWaitMs()),
		MaxMessageSize:            a.GetMaxMessageSize(),
		Fifo:                      a.GetFifo(),
		ContentBasedDeduplication: a.GetContentBasedDeduplication(),
		Partitions:                a.GetPartitions(),
	}
	if a.GetDeadLetterQueue() != "" {
		out.DeadLetter = &qv1.DeadLetterPolicy{Queue: a.GetDeadLetterQueue(), MaxReceiveCount: a.GetMaxReceiveCount()}
	}
	limitsToAPI(a, out)
	if a.GetPriorityMode() == store.PriorityWeighted {
		out.PriorityMode, out.PriorityWeight = "weighted", a.GetPriorityWeight()
		if out.PriorityWeight == 0 {
			out.PriorityWeight = store.DefaultPriorityWeight
		}
	}
	if a.GetFairness() == store.FairnessGroup {
		out.Fairness = "group"
	}
	return out
}

func queueToAPI(info *store.QueueInfo, withStats bool) *qv1.Queue {
	r := info.Record
	q := &qv1.Queue{
		Name:       r.GetName(),
		Attributes: attributesToAPI(r.GetAttributes()),
		Tags:       r.GetTags(),
		CreatedAt:  msTime(r.GetCreatedAtMs()),
		UpdatedAt:  msTime(max(r.GetUpdatedAtMs(), r.GetCreatedAtMs())),
		// The router places partitions by it (empty: the base placement).
		PartitionShards: r.GetPartitionShards(),
	}
	if withStats {
		q.Stats = &qv1.QueueStats{Visible: info.Stats.Visible, InFlight: info.Stats.InFlight, Delayed: info.Stats.Delayed}
	}
	return q
}

func messageToAPI(m *storepb.MessageRecord, handle []byte) *qv1.ReceivedMessage {
	return &qv1.ReceivedMessage{
		MessageId:        m.GetId(),
		ReceiptHandle:    encodeHandle(handle),
		Body:             m.GetBody(),
		Attributes:       m.GetAttributes(),
		Tags:             m.GetTags(),
		SentAt:           msTime(m.GetSentAtMs()),
		FirstReceivedAt:  msTime(m.GetFirstReceivedAtMs()),
		ReceiveCount:     m.GetReceiveCount(),
		GroupId:          m.GetGroupId(),
		Sequence:         m.GetSeq(),
		DeadLetterSource: m.GetDeadLetterSource(),
		FailedCount:      m.GetFailedCount(),
		ReleasedCount:    m.GetReleasedCount(),
		DeadLetterReason: qv1.DeadLetterReason(m.GetDeadLetterReason()),
		Priority:         store.PriorityOf(m),
	}
}

// sendEntryFromAPI converts a validated message to a store send entry.
func sendEntryFromAPI(m MessageInput) *storepb.SendEntry {
	e := &storepb.SendEntry{
		Body:            m.Body,
		Attributes:      m.Attributes,
		Tags:            m.Tags,
		DelayMs:         -1,
		GroupId:         m.GroupID,
		DeduplicationId: m.dedupID,
		IdempotencyKey:  m.IdempotencyKey,
		Priority:        m.priority,
	}
	if m.delay != nil {
		e.DelayMs = m.delay.AsDuration().Milliseconds()
	}
	if m.ttl != nil {
		e.TtlMs = m.ttl.AsDuration().Milliseconds()
	}
	if m.deliverAt != nil {
		e.DeliverAtMs = m.deliverAt.AsTime().UnixMilli()
		if e.DeliverAtMs <= 0 { // the epoch or before: due at once
			e.DeliverAtMs, e.DelayMs = 0, 0
		}
	}
	return e
}

func FilterFromAPI(f *qv1.TagFilter) *storepb.TagFilter {
	if f == nil || (len(f.GetAll()) == 0 && len(f.GetAny()) == 0 && len(f.GetNone()) == 0) {
		return nil
	}
	return &storepb.TagFilter{All: f.GetAll(), Any: f.GetAny(), None: f.GetNone()}
}

// orderFromAPI fills the receive-order attributes: priority_mode "strict"
// (or empty) / "weighted", priority_weight (the default 10 is stored as 0,
// so that a queue created with it equals one created without), fairness
// "group" / "none" (or empty). Defaults are not echoed back (see
// attributesToAPI), so queues without them read as before.
func orderFromAPI(a *qv1.QueueAttributes, out *storepb.QueueAttributes, set func(string) bool, masked bool) error {
	if set("priority_mode") && (a.GetPriorityMode() != "" || masked) {
		switch a.GetPriorityMode() {
		case "", "strict":
			out.PriorityMode = store.PriorityStrict
		case "weighted":
			out.PriorityMode = store.PriorityWeighted
		default:
			return server.FieldError("attributes.priority_mode", `must be "strict" or "weighted"`)
		}
	}
	if set("priority_weight") && (a.GetPriorityWeight() != 0 || masked) {
		out.PriorityWeight = a.GetPriorityWeight()
		if out.PriorityWeight == store.DefaultPriorityWeight {
			out.PriorityWeight = 0
		}
		if out.PriorityWeight < 0 {
			return server.FieldError("attributes.priority_weight", fmt.Sprintf("must be between 1 and %d", store.MaxPriorityWeight))
		}
	}
	if set("fairness") && (a.GetFairness() != "" || masked) {
		switch a.GetFairness() {
		case "", "none":
			out.Fairness = store.FairnessNone
		case "group":
			out.Fairness = store.FairnessGroup
		default:
			return server.FieldError("attributes.fairness", `must be "group" or "none"`)
		}
	}
	return nil
}

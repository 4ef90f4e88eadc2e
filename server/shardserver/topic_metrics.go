package shardserver

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// registerTopicGauges reports, on the shard's leader, each partition
// copy's retained bytes (its disk usage, bodies and attributes) and
// messages: quorumq_topic_bytes and quorumq_topic_messages with tenant,
// topic and partition labels. Like the queue gauges, only the first
// MaxQueueLabels (tenant, topic) pairs a node sees get their own series; the
// partitions of later topics are summed under tenant and topic "_other"
// (with no partition label), so a tenant creating topics cannot grow the
// scrape without bound.
func (s *Server) registerTopicGauges(m metric.Meter) {
	if m == nil {
		return
	}
	bytes, err := m.Int64ObservableGauge("topic.bytes", metric.WithUnit("By"),
		metric.WithDescription("Retained bytes of a topic partition's log (body, attributes and tags)."))
	if err != nil {
		panic(err) // only on an invalid name: a bug caught by any test
	}
	msgs, err := m.Int64ObservableGauge("topic.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Retained messages of a topic partition's log."))
	if err != nil {
		panic(err)
	}
	// capped admits (tenant, topic) pairs up to the cap; its label sets are
	// not used, the topic series carry their own keys.
	capped := newQueueLabels(s.cfg.MaxQueueLabels)
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if !s.leading() {
			return nil
		}
		parts, err := s.store.TopicPartitions()
		if err != nil {
			return err
		}
		var otherBytes, otherMsgs int64
		others := false
		for _, p := range parts {
			tenant, topic := p.GetTopic().GetTenant(), p.GetTopic().GetName()
			if set := capped.get(tenant, topic); set.Equals(&capped.other) {
				others = true
				otherBytes += p.GetBytes()
				otherMsgs += p.GetMessages()
				continue
			}
			set := metric.WithAttributes(attribute.String("tenant", tenant),
				attribute.String("topic", topic), attribute.Int("partition", int(p.GetPartition())))
			o.ObserveInt64(bytes, p.GetBytes(), set)
			o.ObserveInt64(msgs, p.GetMessages(), set)
		}
		if others {
			set := metric.WithAttributes(attribute.String("tenant", OtherLabel), attribute.String("topic", OtherLabel))
			o.ObserveInt64(bytes, otherBytes, set)
			o.ObserveInt64(msgs, otherMsgs, set)
		}
		return nil
	}, bytes, msgs)
	if err != nil {
		panic(err)
	}
}

package server

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// registerTopicGauges reports, on the shard's leader, each partition
// copy's retained bytes (its disk usage, bodies and attributes) and
// messages: quorumq_topic_bytes and quorumq_topic_messages with tenant,
// topic and partition labels.
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
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if !s.leading() {
			return nil
		}
		parts, err := s.store.TopicPartitions()
		if err != nil {
			return err
		}
		for _, p := range parts {
			set := metric.WithAttributes(attribute.String("tenant", p.GetTopic().GetTenant()),
				attribute.String("topic", p.GetTopic().GetName()), attribute.Int("partition", int(p.GetPartition())))
			o.ObserveInt64(bytes, p.GetBytes(), set)
			o.ObserveInt64(msgs, p.GetMessages(), set)
		}
		return nil
	}, bytes, msgs)
	if err != nil {
		panic(err)
	}
}

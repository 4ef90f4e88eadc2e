package store

import (
	"errors"
	"fmt"
	"strings"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// runTopic runs the topic commands of the store scripts (testdata/topic*.txt):
//
//	topic-create topic=o partitions=2 retention=1h bytes=0 maxsize=1024
//	topic-update topic=o retention=2h
//	topic-sub topic=o q=a filter=all:x     topic-unsub topic=o q=a [ifmissing=1]
//	topic-delete topic=o
//	topic-put topic=o p=0 [rev=N]          the partition copy from the record
//	topic-drop topic=o p=0 [inc=ms]
//	publish topic=o p=0 body=x tags=a,b key=k idem=i [inc=ms] [n=N]
//	read topic=o p=0 from=0 max=10 [bytes=N]
//	group-seek topic=o p=0 g=g start=earliest|latest|time|offset at=10s off=3 [create]
//	commit topic=o p=0 g=g off=3           group-delete topic=o p=0 g=g
//	group topic=o p=0 g=g                  trim [limit=N]
//	tpart topic=o p=0                      needs-trim
//	fence topic=o p=0 g=g member=m gen=2   commit ... member=m gen=2
//	owned topic=o p=0 g=g member=m gen=2
func (h *harness) runTopic(cmd string, a args) (string, bool) {
	tenant, topic := a.str("tenant", "t"), a.str("topic", "")
	part := int32(a.int("p", 0))
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	rec := func() *storepb.TopicRecord {
		r, err := h.s.GetTopic(tenant, topic)
		if err != nil {
			return &storepb.TopicRecord{Tenant: tenant, Name: topic}
		}
		return r
	}
	inc := func() int64 {
		if a.has("inc") {
			return a.ms("inc", 0)
		}
		part, err := h.s.TopicPartition(tenant, topic, part)
		if err != nil {
			return 1
		}
		return part.Topic.CreatedAtMs
	}
	show := func(r *Result) {
		if r.Err != nil {
			p("%s", topicErrName(r.Err))
			return
		}
		if tr := r.Topic; tr != nil && tr.Topic != nil && (cmd == "topic-create" || cmd == "topic-update" ||
			cmd == "topic-sub" || cmd == "topic-unsub" || cmd == "topic-delete" || cmd == "topic-put") {
			p("%s", topicLine(tr.Topic))
		}
		if r.OutboxAdded {
			p("outbox added")
		}
	}
	settings := func(old *storepb.TopicRecord) *storepb.TopicRecord {
		return &storepb.TopicRecord{Tenant: tenant, Name: topic,
			Partitions:     int32(a.int("partitions", int64(max(old.Partitions, 1)))),
			RetentionMs:    a.ms("retention", max(old.RetentionMs, DefaultTopicRetentionMs)),
			RetentionBytes: a.int("bytes", old.RetentionBytes),
			MaxMessageSize: a.int("maxsize", max(old.MaxMessageSize, MaxMessageSize))}
	}
	switch cmd {
	case "topic-create":
		show(h.apply(&storepb.Command{Op: &storepb.Command_CreateTopic{CreateTopic: &storepb.CreateTopic{Topic: settings(&storepb.TopicRecord{})}}}))
	case "topic-update":
		show(h.apply(&storepb.Command{Op: &storepb.Command_ChangeTopic{ChangeTopic: &storepb.ChangeTopic{Tenant: tenant, Name: topic, Settings: settings(rec())}}}))
	case "topic-sub":
		show(h.apply(&storepb.Command{Op: &storepb.Command_ChangeTopic{ChangeTopic: &storepb.ChangeTopic{Tenant: tenant, Name: topic,
			Subscribe: &storepb.TopicSubscription{Queue: a.str("q", ""), Filter: h.filter(a)}}}}))
	case "topic-unsub":
		show(h.apply(&storepb.Command{Op: &storepb.Command_ChangeTopic{ChangeTopic: &storepb.ChangeTopic{Tenant: tenant, Name: topic, Unsubscribe: a.str("q", ""),
			UnsubscribeIfQueueMissing: a.has("ifmissing")}}}))
	case "topic-delete":
		show(h.apply(&storepb.Command{Op: &storepb.Command_ChangeTopic{ChangeTopic: &storepb.ChangeTopic{Tenant: tenant, Name: topic, Delete: true}}}))
	case "topic-put":
		r := rec()
		if a.has("rev") {
			r.Revision = a.int("rev", 0)
		}
		show(h.apply(&storepb.Command{Op: &storepb.Command_PutTopicPartition{PutTopicPartition: &storepb.PutTopicPartition{Topic: r, Partition: part}}}))
	case "topic-drop":
		show(h.apply(&storepb.Command{Op: &storepb.Command_DeleteTopicPartition{DeleteTopicPartition: &storepb.DeleteTopicPartition{
			Tenant: tenant, Topic: topic, Partition: part, Incarnation: a.ms("inc", 0)}}}))
	case "publish":
		var es []*storepb.PublishEntry
		for i := range a.int("n", 1) {
			body := a.str("body", "m")
			if a.has("n") {
				body = fmt.Sprintf("%s%d", body, i)
			}
			es = append(es, &storepb.PublishEntry{Body: body, Tags: a.list("tags"), PartitionKey: a.str("key", ""), IdempotencyKey: a.str("idem", "")})
		}
		r := h.apply(&storepb.Command{Op: &storepb.Command_Publish{Publish: &storepb.Publish{Tenant: tenant, Topic: topic, Partition: part,
			Incarnation: inc(), Entries: es}}})
		if r.Err == nil && !a.has("n") {
			o := r.Topic.Published[0]
			switch {
			case o.Err != nil:
				p("%s", topicErrName(o.Err))
			case o.Duplicate:
				p("%s offset=%d duplicate", h.msgName(o.MessageID), o.Offset)
			default:
				p("%s offset=%d", h.msgName(o.MessageID), o.Offset)
			}
		} else if r.Err == nil {
			p("published %d, last offset=%d", len(r.Topic.Published), r.Topic.Published[len(es)-1].Offset)
		}
		show(r)
	case "read":
		rd, err := h.s.ReadTopic(tenant, topic, part, inc(), a.int("from", 0), int(a.int("max", 10)), a.int("bytes", 1<<30))
		if err != nil {
			return topicErrName(err), true
		}
		for _, m := range rd.Messages {
			line := fmt.Sprintf("%d %s body=%s published=%s", m.Offset, h.msgName(m.Id), m.Body, fmtMs(m.PublishedAtMs))
			if m.PartitionKey != "" {
				line += " key=" + m.PartitionKey
			}
			p("%s", line)
		}
		p("next=%d start=%d end=%d", rd.Next, rd.Start, rd.End)
	case "group-seek":
		start := map[string]int32{"earliest": GroupStartEarliest, "latest": GroupStartLatest, "time": GroupStartTime, "offset": GroupStartOffset}[a.str("start", "earliest")]
		r := h.apply(&storepb.Command{Op: &storepb.Command_SeekTopicGroup{SeekTopicGroup: &storepb.SeekTopicGroup{Tenant: tenant, Topic: topic,
			Partition: part, Incarnation: inc(), Group: a.str("g", ""), Start: start, TimeMs: a.ms("at", 0), Offset: a.int("off", 0), CreateOnly: a.has("create")}}})
		if r.Err == nil {
			p("offset=%d", r.Topic.GroupOffset)
		}
		show(r)
	case "commit":
		show(h.apply(&storepb.Command{Op: &storepb.Command_CommitTopicOffset{CommitTopicOffset: &storepb.CommitTopicOffset{Tenant: tenant, Topic: topic,
			Partition: part, Incarnation: inc(), Group: a.str("g", ""), Offset: a.int("off", 0),
			Member: a.str("member", ""), Generation: a.int("gen", 0)}}}))
	case "fence":
		show(h.apply(&storepb.Command{Op: &storepb.Command_FenceTopicGroup{FenceTopicGroup: &storepb.FenceTopicGroup{Tenant: tenant, Topic: topic,
			Partition: part, Incarnation: inc(), Group: a.str("g", ""), Member: a.str("member", ""), Generation: a.int("gen", 0)}}}))
	case "owned":
		if err := h.s.TopicGroupOwned(tenant, topic, part, a.str("g", ""), a.str("member", ""), a.int("gen", 0)); err != nil {
			return topicErrName(err), true
		}
		p("owned")
	case "group-delete":
		show(h.apply(&storepb.Command{Op: &storepb.Command_DeleteTopicGroup{DeleteTopicGroup: &storepb.DeleteTopicGroup{Tenant: tenant, Topic: topic,
			Partition: part, Incarnation: inc(), Group: a.str("g", "")}}}))
	case "group":
		off, err := h.s.TopicGroupOffset(tenant, topic, part, a.str("g", ""))
		if err != nil {
			return topicErrName(err), true
		}
		p("offset=%d", off)
	case "trim":
		r := h.apply(&storepb.Command{Op: &storepb.Command_TrimTopics{TrimTopics: &storepb.TrimTopics{Limit: int32(a.int("limit", 0))}}})
		p("trimmed=%d", r.Topic.Trimmed)
	case "needs-trim":
		need, err := h.s.NeedsTopicTrim(h.now)
		if err != nil {
			return topicErrName(err), true
		}
		p("%v", need)
	case "tpart":
		pr, err := h.s.TopicPartition(tenant, topic, part)
		if err != nil {
			return topicErrName(err), true
		}
		p("id=%d start=%d end=%d messages=%d bytes=%d head=[%d,%d) rev=%d subs=%d", pr.Id, pr.StartOffset, pr.EndOffset, pr.Messages, pr.Bytes,
			pr.Head.FirstOffset, pr.Head.EndOffset, pr.Topic.Revision, len(pr.Topic.Subscriptions))
	default:
		return "", false
	}
	out := strings.TrimRight(b.String(), "\n")
	if out == "" {
		out = "ok"
	}
	return out, true
}

func topicLine(r *storepb.TopicRecord) string {
	s := fmt.Sprintf("%s/%s partitions=%d retention=%s bytes=%d maxsize=%d created=%s rev=%d", r.Tenant, r.Name, r.Partitions,
		fmtMs(r.RetentionMs), r.RetentionBytes, r.MaxMessageSize, fmtMs(r.CreatedAtMs), r.Revision)
	for _, sub := range r.Subscriptions {
		s += " sub=" + sub.Queue
		if f := sub.Filter; f != nil {
			s += fmt.Sprintf("(all:%s any:%s none:%s)", strings.Join(f.All, ","), strings.Join(f.Any, ","), strings.Join(f.None, ","))
		}
	}
	return s
}

func topicErrName(err error) string {
	var oe *OffsetRangeError
	switch {
	case errors.As(err, &oe):
		return fmt.Sprintf("OFFSET_OUT_OF_RANGE offset=%d start=%d end=%d", oe.Offset, oe.Start, oe.End)
	case errors.Is(err, ErrTopicNotFound):
		return "TOPIC_NOT_FOUND"
	case errors.Is(err, ErrTopicExists):
		return "TOPIC_ALREADY_EXISTS"
	case errors.Is(err, ErrGroupNotFound):
		return "GROUP_NOT_FOUND"
	case errors.Is(err, ErrMemberFenced):
		return "MEMBER_FENCED"
	}
	return errName(err)
}

package shardserver

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// The shard leader's side of topics: topic commands are proposed here,
// partition logs read here (after a read barrier, long-polling on the
// applies of the partition), and retention proposed by housekeeping. The
// router (route_topics.go) reaches these through leaderCall, locally or on
// the leader's node (topic_peer.go).

// trimLimit bounds the segments and records one retention command drops.
const trimLimit = 100

// TopicStatus maps an outcome to a gRPC status: the topic sentinels here,
// the rest as every other call (toStatus).
func TopicStatus(err error) error {
	var oe *store.OffsetRangeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &oe):
		return server.StatusError(codes.FailedPrecondition, server.ReasonOffsetOutOfRange, err.Error(), map[string]string{
			"start": strconv.FormatInt(oe.Start, 10), "end": strconv.FormatInt(oe.End, 10)})
	case errors.Is(err, store.ErrTopicNotFound):
		return server.StatusError(codes.NotFound, server.ReasonTopicNotFound, err.Error(), nil)
	case errors.Is(err, store.ErrTopicExists):
		return server.StatusError(codes.AlreadyExists, server.ReasonTopicAlreadyExists, err.Error(), nil)
	case errors.Is(err, store.ErrGroupNotFound):
		return server.StatusError(codes.NotFound, server.ReasonGroupNotFound, err.Error(), nil)
	case errors.Is(err, store.ErrMemberFenced):
		return server.StatusError(codes.FailedPrecondition, server.ReasonMemberFenced, err.Error()+": heartbeat for the new assignment", nil)
	}
	return server.ToStatus(err)
}

func isTopicOp(cmd *storepb.Command) bool {
	switch cmd.GetOp().(type) {
	case *storepb.Command_CreateTopic, *storepb.Command_ChangeTopic, *storepb.Command_PutTopicPartition,
		*storepb.Command_DeleteTopicPartition, *storepb.Command_Publish, *storepb.Command_SeekTopicGroup,
		*storepb.Command_CommitTopicOffset, *storepb.Command_DeleteTopicGroup, *storepb.Command_FenceTopicGroup:
		return true
	}
	return false
}

// TopicPropose proposes a topic command on this shard and returns its
// outcome; a whole-command failure is the status error.
func (s *Server) TopicPropose(ctx context.Context, cmd *storepb.Command) (*storepb.TopicCommandReply, error) {
	if !isTopicOp(cmd) {
		return nil, server.StatusError(codes.InvalidArgument, server.ReasonInvalidArgument, "not a topic command", nil)
	}
	res, err := s.propose(ctx, cmd)
	if err != nil {
		return nil, TopicStatus(err)
	}
	tr := res.Topic
	if tr == nil {
		return nil, server.StatusError(codes.Internal, server.ReasonInternal, "topic command without a topic result", nil)
	}
	reply := &storepb.TopicCommandReply{Topic: tr.Topic, GroupOffset: tr.GroupOffset, Trimmed: int32(tr.Trimmed)}
	for _, o := range tr.Published {
		out := &storepb.TopicPublishOutcome{MessageId: o.MessageID, Offset: o.Offset, Duplicate: o.Duplicate}
		if o.Err != nil {
			out.ErrorCode, out.ErrorReason, out.ErrorMessage = server.BatchError(TopicStatus(o.Err))
		}
		reply.Published = append(reply.Published, out)
	}
	return reply, nil
}

// TopicCatalog reads topic records of truth (metadata shard) after a read
// barrier.
func (s *Server) TopicCatalog(ctx context.Context, req *storepb.TopicCatalogRequest) (*storepb.TopicCatalogReply, error) {
	if err := s.readBarrier(ctx); err != nil {
		return nil, server.ToStatus(err)
	}
	if req.GetName() != "" {
		rec, err := s.store.GetTopic(req.GetTenant(), req.GetName())
		if err != nil {
			return nil, TopicStatus(err)
		}
		return &storepb.TopicCatalogReply{Topics: []*storepb.TopicRecord{rec}}, nil
	}
	recs, err := s.store.ListTopics(req.GetTenant(), req.GetPrefix(), req.GetAfter(), int(req.GetLimit()))
	if err != nil {
		return nil, TopicStatus(err)
	}
	return &storepb.TopicCatalogReply{Topics: recs}, nil
}

// TopicRead reads a partition log on the leader: from the request's offset
// or the group's committed one, waiting up to wait_ms for a message.
func (s *Server) TopicRead(ctx context.Context, req *storepb.TopicReadRequest) (*storepb.TopicReadReply, error) {
	key := topicWaitKey(req.GetTenant(), req.GetTopic(), req.GetPartition())
	deadline := time.Now().Add(time.Duration(req.GetWaitMs()) * time.Millisecond)
	for {
		// Take the wake-up channel before reading: an append between the
		// read and the wait still wakes it.
		woken := s.topics.waits.wait(key)
		if err := s.readBarrier(ctx); err != nil {
			return nil, server.ToStatus(err)
		}
		reply, err := s.readTopicOnce(req)
		if err != nil || len(reply.Messages) > 0 || req.GetMaxMessages() == 0 {
			return reply, TopicStatus(err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return reply, nil
		}
		t := time.NewTimer(left)
		select {
		case <-woken:
			t.Stop()
		case <-t.C:
			return reply, nil
		case <-ctx.Done():
			t.Stop()
			return reply, nil
		case <-s.stop:
			t.Stop()
			return reply, nil
		}
	}
}

func (s *Server) readTopicOnce(req *storepb.TopicReadRequest) (*storepb.TopicReadReply, error) {
	part, err := s.store.TopicPartition(req.GetTenant(), req.GetTopic(), req.GetPartition())
	if err != nil {
		return nil, err
	}
	if inc := req.GetIncarnation(); inc != 0 && part.GetTopic().GetCreatedAtMs() != inc {
		return nil, store.ErrTopicNotFound
	}
	reply := &storepb.TopicReadReply{StartOffset: part.StartOffset, EndOffset: part.EndOffset,
		MessagesRetained: part.Messages, Bytes: part.Bytes}
	from := req.GetOffset()
	if g := req.GetGroup(); g != "" {
		off, err := s.store.TopicGroupOffset(req.GetTenant(), req.GetTopic(), req.GetPartition(), g)
		switch {
		case err == nil:
			reply.GroupFound, reply.GroupOffset = true, off
		case !errors.Is(err, store.ErrGroupNotFound):
			return nil, err
		}
		if m := req.GetMember(); m != "" {
			// A member reads only what it owns (a group gone: not found).
			if err := s.store.TopicGroupOwned(req.GetTenant(), req.GetTopic(), req.GetPartition(), g, m, req.GetGeneration()); err != nil {
				return nil, err
			}
		}
		if !req.GetHasOffset() {
			if !reply.GroupFound {
				return nil, fmt.Errorf("%w: %s", store.ErrGroupNotFound, g)
			}
			from = off
		}
	}
	reply.NextOffset = from
	if req.GetMaxMessages() == 0 {
		return reply, nil
	}
	rd, err := s.store.ReadTopic(req.GetTenant(), req.GetTopic(), req.GetPartition(), part.GetTopic().GetCreatedAtMs(),
		from, int(req.GetMaxMessages()), req.GetMaxBytes())
	if err != nil {
		return nil, err
	}
	reply.Messages, reply.NextOffset, reply.StartOffset, reply.EndOffset = rd.Messages, rd.Next, rd.Start, rd.End
	return reply, nil
}

// trimTopics proposes retention while the store reports partition log
// segments or idempotency records to drop (leader only).
func (s *Server) trimTopics(ctx context.Context) {
	for ctx.Err() == nil && s.leading() {
		need, err := s.store.NeedsTopicTrim(s.cfg.Now().UnixMilli())
		if err != nil {
			s.cfg.Logger.Error("topic retention check failed", "shard", s.shard, "err", err)
			return
		}
		if !need {
			return
		}
		res, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_TrimTopics{TrimTopics: &storepb.TrimTopics{Limit: trimLimit}}})
		if err != nil {
			s.cfg.Logger.Warn("topic retention failed", "shard", s.shard, "err", err)
			return
		}
		if res.Topic == nil || res.Topic.Trimmed < trimLimit {
			return
		}
	}
}

// topicApplied wakes the readers of a partition a publish appended to.
func (s *Server) topicApplied(res *store.Result) {
	if tr := res.Topic; tr != nil && tr.Appended {
		s.topics.waits.wake(topicWaitKey(res.Tenant, tr.Name, tr.Partition))
	}
}

func topicWaitKey(tenant, topic string, p int32) string {
	return tenant + "\x00" + topic + "\x00" + strconv.Itoa(int(p))
}

// topicState is a shard server's topic state.
type topicState struct {
	waits       topicWaiters
	coord       coordinator // group membership (topic_members.go)
	unsubscribe atomic.Pointer[TopicUnsubscriber]
}

// TopicUnsubscriber removes a queue's subscription from a topic (the
// record of truth and every partition copy).
type TopicUnsubscriber func(ctx context.Context, tenant, topic, queue string) error

// SetTopicUnsubscriber gives the relay what unsubscribes a queue whose
// copies its target shard refuses (the queue was deleted).
func (s *Server) SetTopicUnsubscriber(u TopicUnsubscriber) { s.topics.unsubscribe.Store(&u) }

// unsubscribeRefused unsubscribes the queues that refused copies of this
// shard's topic messages: a refusal is final (the queue no longer exists),
// so the subscription goes, from the record of truth and every partition.
func (s *Server) unsubscribeRefused(ctx context.Context, entries []*storepb.OutboxEntry, refused []uint64) {
	u := s.topics.unsubscribe.Load()
	if u == nil || len(refused) == 0 {
		return
	}
	ids := map[uint64]bool{}
	for _, id := range refused {
		ids[id] = true
	}
	done := map[string]bool{}
	for _, e := range entries {
		if !ids[e.GetId()] {
			continue
		}
		part, err := s.store.TopicOfMessage(e.GetMessage().GetId())
		if err != nil || part == nil {
			continue
		}
		k := part.GetTopic().GetTenant() + "\x00" + part.GetTopic().GetName() + "\x00" + e.GetTargetQueue()
		if done[k] {
			continue
		}
		done[k] = true
		if err := (*u)(ctx, part.GetTopic().GetTenant(), part.GetTopic().GetName(), e.GetTargetQueue()); err != nil {
			s.cfg.Logger.Warn("unsubscribe of a deleted queue failed", "shard", s.shard, "topic", part.GetTopic().GetName(),
				"queue", e.GetTargetQueue(), "err", err)
			continue
		}
		s.cfg.Logger.Info("queue unsubscribed from its topic: it no longer exists", "shard", s.shard,
			"topic", part.GetTopic().GetName(), "queue", e.GetTargetQueue())
	}
}

// topicWaiters hands out one channel per partition, closed (and replaced)
// by the next append: readers long-poll on it without proposing.
type topicWaiters struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (w *topicWaiters) wait(key string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]chan struct{}{}
	}
	ch, ok := w.m[key]
	if !ok {
		ch = make(chan struct{})
		w.m[key] = ch
	}
	return ch
}

func (w *topicWaiters) wake(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, ok := w.m[key]; ok {
		close(ch)
		delete(w.m, key)
	}
}

// wakeAll wakes every reader (the state was replaced by a snapshot).
func (w *topicWaiters) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, ch := range w.m {
		close(ch)
		delete(w.m, k)
	}
}

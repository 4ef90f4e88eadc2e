package router

import (
	"context"
	"fmt"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Consumer groups keep one committed offset per partition, stored on the
// partition's shard with its log (replicated, in snapshots). A group exists
// where it has offsets; CreateGroup places them on every partition.

// groupTopic is the prologue of a group call: the caller's tenant (one of
// scopes), the names checked and the topic's record.
func (ts *TopicServer) groupTopic(ctx context.Context, topic, group string, scopes ...string) (string, *storepb.TopicRecord, error) {
	tenant, err := server.Require(ctx, scopes...)
	if err != nil {
		return "", nil, err
	}
	if err := store.ValidateTopicName("topic", topic); err != nil {
		return "", nil, err
	}
	if err := store.ValidateTopicName("group", group); err != nil {
		return "", nil, err
	}
	rec, err := ts.topic(ctx, tenant, topic, false)
	return tenant, rec, err
}

// seek places the group on partitions ps.
func (ts *TopicServer) seek(ctx context.Context, rec *storepb.TopicRecord, group string, ps []int32, start int32, atMs int64, createOnly bool) error {
	_, err := parallel(len(ps), func(i int) (struct{}, error) {
		p := ps[i]
		_, err := onTopicPartition(ctx, ts, rec, p, func(rec *storepb.TopicRecord) (*storepb.TopicCommandReply, error) {
			return ts.r.proposeTopic(ctx, ts.shardOf(rec, p), &storepb.Command{Op: &storepb.Command_SeekTopicGroup{SeekTopicGroup: &storepb.SeekTopicGroup{
				Tenant: rec.Tenant, Topic: rec.Name, Partition: p, Incarnation: rec.CreatedAtMs, Group: group,
				Start: start, TimeMs: atMs, CreateOnly: createOnly}}})
		})
		return struct{}{}, err
	})
	return err
}

func allPartitions(rec *storepb.TopicRecord) []int32 {
	ps := make([]int32, rec.GetPartitions())
	for i := range ps {
		ps[i] = int32(i)
	}
	return ps
}

// group gathers the group's offsets and lag; GROUP_NOT_FOUND when no
// partition has it.
func (ts *TopicServer) group(ctx context.Context, rec *storepb.TopicRecord, group string) (*qv1.Group, error) {
	parts, err := parallel(int(rec.GetPartitions()), func(i int) (*storepb.TopicReadReply, error) {
		return onTopicPartition(ctx, ts, rec, int32(i), func(rec *storepb.TopicRecord) (*storepb.TopicReadReply, error) {
			return ts.r.readTopicShard(ctx, ts.shardOf(rec, int32(i)), &storepb.TopicReadRequest{Tenant: rec.Tenant, Topic: rec.Name,
				Partition: int32(i), Incarnation: rec.CreatedAtMs, Group: group, HasOffset: true})
		})
	})
	if err != nil {
		return nil, err
	}
	g := &qv1.Group{Name: group, Topic: rec.GetName()}
	for i, p := range parts {
		if !p.GetGroupFound() {
			continue
		}
		g.Partitions = append(g.Partitions, &qv1.GroupPartition{Partition: int32(i), CommittedOffset: p.GetGroupOffset(),
			Lag: max(p.GetEndOffset()-max(p.GetGroupOffset(), p.GetStartOffset()), 0)})
	}
	if len(g.Partitions) == 0 {
		return nil, errNoGroup(group)
	}
	return g, nil
}

// CreateGroup implements TopicService.
func (ts *TopicServer) CreateGroup(ctx context.Context, req *qv1.CreateGroupRequest) (*qv1.CreateGroupResponse, error) {
	_, rec, err := ts.groupTopic(ctx, req.GetTopic(), req.GetGroup(), server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	start, at, err := shardserver.GroupStart(req.GetStart(), req.GetTime())
	if err != nil {
		return nil, err
	}
	if err := ts.seek(ctx, rec, req.GetGroup(), allPartitions(rec), start, at, true); err != nil {
		return nil, err
	}
	g, err := ts.group(ctx, rec, req.GetGroup())
	if err != nil {
		return nil, err
	}
	return &qv1.CreateGroupResponse{Group: g}, nil
}

// GetGroup implements TopicService.
func (ts *TopicServer) GetGroup(ctx context.Context, req *qv1.GetGroupRequest) (*qv1.GetGroupResponse, error) {
	_, rec, err := ts.groupTopic(ctx, req.GetTopic(), req.GetGroup(), server.ScopeQueuesAdmin, server.ScopeMessagesSend, server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	g, err := ts.group(ctx, rec, req.GetGroup())
	if err != nil {
		return nil, err
	}
	return &qv1.GetGroupResponse{Group: g}, nil
}

// DeleteGroup implements TopicService.
func (ts *TopicServer) DeleteGroup(ctx context.Context, req *qv1.DeleteGroupRequest) (*qv1.DeleteGroupResponse, error) {
	_, rec, err := ts.groupTopic(ctx, req.GetTopic(), req.GetGroup(), server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	_, err = parallel(int(rec.GetPartitions()), func(i int) (struct{}, error) {
		p := int32(i)
		_, err := ts.r.proposeTopic(ctx, ts.shardOf(rec, p), &storepb.Command{Op: &storepb.Command_DeleteTopicGroup{DeleteTopicGroup: &storepb.DeleteTopicGroup{
			Tenant: rec.Tenant, Topic: rec.Name, Partition: p, Incarnation: rec.CreatedAtMs, Group: req.GetGroup()}}})
		if server.ReasonOf(err) == server.ReasonTopicNotFound {
			err = nil // no copy, no offsets
		}
		return struct{}{}, err
	})
	if err != nil {
		return nil, err
	}
	return &qv1.DeleteGroupResponse{}, nil
}

// ResetGroup implements TopicService.
func (ts *TopicServer) ResetGroup(ctx context.Context, req *qv1.ResetGroupRequest) (*qv1.ResetGroupResponse, error) {
	_, rec, err := ts.groupTopic(ctx, req.GetTopic(), req.GetGroup(), server.ScopeQueuesAdmin)
	if err != nil {
		return nil, err
	}
	start, at, err := shardserver.GroupStart(req.GetStart(), req.GetTime())
	if err != nil {
		return nil, err
	}
	ps := allPartitions(rec)
	if req.Partition != nil {
		if p := req.GetPartition(); p < 0 || p >= rec.GetPartitions() {
			return nil, server.FieldError("partition", fmt.Sprintf("must be 0 to %d", rec.GetPartitions()-1))
		}
		ps = []int32{req.GetPartition()}
	}
	if _, err := ts.group(ctx, rec, req.GetGroup()); err != nil {
		return nil, err // reset moves a group; CreateGroup makes one
	}
	if err := ts.seek(ctx, rec, req.GetGroup(), ps, start, at, false); err != nil {
		return nil, err
	}
	g, err := ts.group(ctx, rec, req.GetGroup())
	if err != nil {
		return nil, err
	}
	return &qv1.ResetGroupResponse{Group: g}, nil
}

// ReadTopic implements TopicService: the read (and its long poll) runs on
// the partition's shard leader; the reply fits a client's default receive
// limit like a receive's.
func (ts *TopicServer) ReadTopic(ctx context.Context, req *qv1.ReadTopicRequest) (*qv1.ReadTopicResponse, error) {
	_, rec, err := ts.groupTopic(ctx, req.GetTopic(), req.GetGroup(), server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	p := req.GetPartition()
	if p < 0 || p >= rec.GetPartitions() {
		return nil, server.FieldError("partition", fmt.Sprintf("must be 0 to %d", rec.GetPartitions()-1))
	}
	limit := req.GetMaxMessages()
	switch {
	case limit == 0:
		limit = defaultTopicRead
	case limit < 0 || limit > maxTopicRead:
		return nil, server.FieldError("max_messages", fmt.Sprintf("must be 1 to %d", maxTopicRead))
	}
	wait, err := shardserver.DurationMs("wait_time", req.GetWaitTime(), 0, shardserver.MaxWaitTime)
	if err != nil {
		return nil, err
	}
	if req.Offset != nil && req.GetOffset() < 0 {
		return nil, server.FieldError("offset", "must not be negative")
	}
	if req.GetMemberId() != "" {
		if err := checkMemberID(req.GetMemberId()); err != nil {
			return nil, err
		}
	}
	// The long poll runs on the leader: the call's deadline covers it.
	ctx, cancel := context.WithTimeout(ctx, time.Duration(wait)*time.Millisecond+ts.r.cfg.Timeout)
	defer cancel()
	reply, err := onTopicPartition(ctx, ts, rec, p, func(rec *storepb.TopicRecord) (*storepb.TopicReadReply, error) {
		return ts.r.readTopicShard(ctx, ts.shardOf(rec, p), &storepb.TopicReadRequest{Tenant: rec.Tenant, Topic: rec.Name,
			Partition: p, Incarnation: rec.CreatedAtMs, Group: req.GetGroup(), HasOffset: req.Offset != nil, Offset: req.GetOffset(),
			MaxMessages: limit, WaitMs: wait, MaxBytes: server.ReceiveBudget,
			Member: req.GetMemberId(), Generation: req.GetGeneration()})
	})
	if err != nil {
		return nil, err
	}
	out := &qv1.ReadTopicResponse{NextOffset: reply.GetNextOffset(), EndOffset: reply.GetEndOffset()}
	for _, m := range reply.GetMessages() {
		out.Messages = append(out.Messages, shardserver.TopicMessageToAPI(m))
	}
	return out, nil
}

// CommitOffsets implements TopicService.
func (ts *TopicServer) CommitOffsets(ctx context.Context, req *qv1.CommitOffsetsRequest) (*qv1.CommitOffsetsResponse, error) {
	_, rec, err := ts.groupTopic(ctx, req.GetTopic(), req.GetGroup(), server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	offs := req.GetOffsets()
	if len(offs) == 0 || len(offs) > int(rec.GetPartitions()) {
		return nil, server.FieldError("offsets", fmt.Sprintf("must name 1 to %d partitions", rec.GetPartitions()))
	}
	if req.GetMemberId() != "" {
		if err := checkMemberID(req.GetMemberId()); err != nil {
			return nil, err
		}
	}
	seen := map[int32]bool{}
	for i, o := range offs {
		switch {
		case o.GetPartition() < 0 || o.GetPartition() >= rec.GetPartitions():
			return nil, server.FieldError(fmt.Sprintf("offsets[%d].partition", i), fmt.Sprintf("must be 0 to %d", rec.GetPartitions()-1))
		case seen[o.GetPartition()]:
			return nil, server.FieldError(fmt.Sprintf("offsets[%d].partition", i), "named twice")
		case o.GetOffset() < 0:
			return nil, server.FieldError(fmt.Sprintf("offsets[%d].offset", i), "must not be negative")
		}
		seen[o.GetPartition()] = true
	}
	_, err = parallel(len(offs), func(i int) (struct{}, error) {
		p := offs[i].GetPartition()
		_, err := ts.r.proposeTopic(ctx, ts.shardOf(rec, p), &storepb.Command{Op: &storepb.Command_CommitTopicOffset{CommitTopicOffset: &storepb.CommitTopicOffset{
			Tenant: rec.Tenant, Topic: rec.Name, Partition: p, Incarnation: rec.CreatedAtMs, Group: req.GetGroup(), Offset: offs[i].GetOffset(),
			Member: req.GetMemberId(), Generation: req.GetGeneration()}}})
		return struct{}{}, err
	})
	if err != nil {
		return nil, err
	}
	return &qv1.CommitOffsetsResponse{}, nil
}

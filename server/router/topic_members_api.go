package router

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// The API side of group membership (topic_members.go): the router checks
// the call and forwards it to the group's coordinator, the leader of the
// shard of the topic's partition 0.

// maxMemberID bounds a member id (the coordinator's are 32 hex digits).
const maxMemberID = 64

// memberCall runs op on the group's coordinator.
func (ts *TopicServer) memberCall(ctx context.Context, rec *storepb.TopicRecord, group string, op int32, member string, gen, timeoutMs, waitMs int64) (*storepb.TopicGroupMemberReply, error) {
	return ts.r.topicGroupMember(ctx, ts.shardOf(rec, 0), &storepb.TopicGroupMemberRequest{Tenant: rec.GetTenant(), Topic: rec.GetName(),
		Incarnation: rec.GetCreatedAtMs(), Partitions: rec.GetPartitions(), PlacementShards: rec.GetPlacementShards(), Group: group, Op: op, Member: member,
		Generation: gen, SessionTimeoutMs: timeoutMs, WaitMs: waitMs})
}

func assignmentToAPI(r *storepb.TopicGroupMemberReply) *qv1.GroupAssignment {
	timeout := time.Duration(r.GetSessionTimeoutMs()) * time.Millisecond
	return &qv1.GroupAssignment{Generation: r.GetGeneration(), Partitions: r.GetPartitions(),
		SessionTimeout: durationpb.New(timeout), HeartbeatInterval: durationpb.New(timeout / 3), Members: r.GetMembers()}
}

func checkMemberID(id string) error {
	return shardserver.CheckText("member_id", id, 1, maxMemberID)
}

// JoinGroup implements TopicService.
func (ts *TopicServer) JoinGroup(ctx context.Context, req *qv1.JoinGroupRequest) (*qv1.JoinGroupResponse, error) {
	_, rec, err := ts.groupTopic(ctx, req.GetTopic(), req.GetGroup(), server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	timeout, err := shardserver.DurationMs("session_timeout", req.GetSessionTimeout(), shardserver.DefaultSessionTimeout.Milliseconds(), shardserver.MaxSessionTimeout)
	if err != nil {
		return nil, err
	}
	if timeout < shardserver.MinSessionTimeout.Milliseconds() {
		return nil, server.FieldError("session_timeout", fmt.Sprintf("must be at least %s", shardserver.MinSessionTimeout))
	}
	reply, err := ts.memberCall(ctx, rec, req.GetGroup(), shardserver.MemberJoin, "", 0, timeout, 0)
	if err != nil {
		return nil, err
	}
	return &qv1.JoinGroupResponse{MemberId: reply.GetMember(), Assignment: assignmentToAPI(reply)}, nil
}

// HeartbeatGroup implements TopicService.
func (ts *TopicServer) HeartbeatGroup(ctx context.Context, req *qv1.HeartbeatGroupRequest) (*qv1.HeartbeatGroupResponse, error) {
	_, rec, err := ts.groupTopic(ctx, req.GetTopic(), req.GetGroup(), server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	if err := checkMemberID(req.GetMemberId()); err != nil {
		return nil, err
	}
	if req.GetGeneration() < 0 {
		return nil, server.FieldError("generation", "must not be negative")
	}
	wait, err := shardserver.DurationMs("wait", req.GetWait(), 0, shardserver.MaxSessionTimeout)
	if err != nil {
		return nil, err
	}
	reply, err := ts.memberCall(ctx, rec, req.GetGroup(), shardserver.MemberHeartbeat, req.GetMemberId(), req.GetGeneration(), 0, wait)
	if err != nil {
		return nil, err
	}
	return &qv1.HeartbeatGroupResponse{Assignment: assignmentToAPI(reply)}, nil
}

// LeaveGroup implements TopicService. Leaving twice, or after the session
// ended, succeeds.
func (ts *TopicServer) LeaveGroup(ctx context.Context, req *qv1.LeaveGroupRequest) (*qv1.LeaveGroupResponse, error) {
	_, rec, err := ts.groupTopic(ctx, req.GetTopic(), req.GetGroup(), server.ScopeMessagesReceive)
	if err != nil {
		return nil, err
	}
	if err := checkMemberID(req.GetMemberId()); err != nil {
		return nil, err
	}
	if _, err := ts.memberCall(ctx, rec, req.GetGroup(), shardserver.MemberLeave, req.GetMemberId(), 0, 0, 0); err != nil {
		return nil, err
	}
	return &qv1.LeaveGroupResponse{}, nil
}

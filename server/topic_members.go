package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Consumer group membership, Kafka-style. A group's coordinator is the
// leader of the shard of its topic's partition 0; membership (members,
// session deadlines, generation, assignment) lives in that leader's memory
// only. What is replicated is the offsets and, per partition, the owner
// the coordinator assigned it to (member, generation: FenceTopicGroup on
// the partition's shard). The fence is the safety: a member reads and
// commits a partition only while the replicated owner is itself in the
// generation it names, so two members never both commit one partition,
// even while two nodes briefly both believe they coordinate. The
// coordinator is only liveness: when its leadership ends (or its term
// changes) it forgets every group; members then get UNKNOWN_MEMBER from
// the new coordinator, join again and are re-fenced there. Nothing
// committed is lost: offsets are replicated, and a new owner reads on from
// the committed offset (messages handled but not committed are read again:
// at least once).
//
// A rebalance (join, leave, expiry) bumps the generation, assigns the
// partitions in contiguous ranges to the members in id order, and fences
// every partition with its new owner before any member is told; a call
// that finds the fences of the current generation unwritten (a fence
// failed) writes them first. Members learn a new assignment from their
// next heartbeat, which they send every third of the session timeout.

// Member operations (TopicGroupMemberRequest.op).
const (
	memberJoin      = 1
	memberHeartbeat = 2
	memberLeave     = 3
)

// Bounds of membership.
const (
	defaultSessionTimeout = 10 * time.Second
	minSessionTimeout     = 3 * time.Second
	maxSessionTimeout     = 5 * time.Minute
	maxGroupMembers       = 1000
	maxCoordinatedGroups  = 10000
	groupSweepEvery       = time.Minute
)

// Reasons of membership outcomes (see api/quorumq/v1/topic.proto).
const (
	ReasonUnknownMember = "UNKNOWN_MEMBER"
	ReasonMemberFenced  = "MEMBER_FENCED"
)

func errUnknownMember(member string) error {
	return statusError(codes.NotFound, ReasonUnknownMember,
		fmt.Sprintf("member %q is not in the group (its session ended or the coordinator moved): join again", member), nil)
}

// coordinator is a shard server's group membership state, valid for one
// leadership term.
type coordinator struct {
	mu     sync.Mutex
	term   uint64
	groups map[string]*memberGroup // tenant \0 topic \0 group
	swept  time.Time
}

type memberGroup struct {
	mu          sync.Mutex // serialises the group's calls and fences
	incarnation int64
	partitions  int32
	gen         int64
	fenced      int64 // the generation whose fences are all written
	members     map[string]time.Time
	timeouts    map[string]time.Duration
	assign      map[string][]int32
}

// group returns the group's state, forgetting every group when the
// leadership term changed.
func (c *coordinator) group(term uint64, key string, now time.Time) (*memberGroup, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.groups == nil || c.term != term {
		c.groups, c.term, c.swept = map[string]*memberGroup{}, term, now
	}
	if now.Sub(c.swept) > groupSweepEvery {
		c.swept = now
		for k, g := range c.groups {
			if g.mu.TryLock() {
				if g.live(now) == 0 {
					delete(c.groups, k)
				}
				g.mu.Unlock()
			}
		}
	}
	g := c.groups[key]
	if g == nil {
		if len(c.groups) >= maxCoordinatedGroups {
			return nil, statusError(codes.ResourceExhausted, ReasonOverloaded, "too many groups with members on this coordinator", nil)
		}
		g = &memberGroup{members: map[string]time.Time{}, timeouts: map[string]time.Duration{}}
		c.groups[key] = g
	}
	return g, nil
}

func (c *coordinator) drop(key string, g *memberGroup) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.groups[key] == g {
		delete(c.groups, key)
	}
}

// live counts the members whose session has not ended.
func (g *memberGroup) live(now time.Time) int {
	n := 0
	for _, d := range g.members {
		if now.Before(d) {
			n++
		}
	}
	return n
}

// expire drops the members whose session ended; true if any was.
func (g *memberGroup) expire(now time.Time) bool {
	changed := false
	for m, d := range g.members {
		if !now.Before(d) {
			delete(g.members, m)
			delete(g.timeouts, m)
			changed = true
		}
	}
	return changed
}

// rebalance bumps the generation and assigns the partitions in contiguous
// ranges to the members in id order.
func (g *memberGroup) rebalance() {
	g.gen++
	ids := make([]string, 0, len(g.members))
	for m := range g.members {
		ids = append(ids, m)
	}
	slices.Sort(ids)
	g.assign = map[string][]int32{}
	if len(ids) == 0 {
		return
	}
	per, extra := int(g.partitions)/len(ids), int(g.partitions)%len(ids)
	p := int32(0)
	for i, m := range ids {
		n := per
		if i < extra {
			n++
		}
		for range n {
			g.assign[m] = append(g.assign[m], p)
			p++
		}
	}
}

// owner is the member partition p is assigned to ("" when none).
func (g *memberGroup) owner(p int32) string {
	for m, ps := range g.assign {
		if slices.Contains(ps, p) {
			return m
		}
	}
	return ""
}

func newMemberID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// topicGroupMember serves a member's join, heartbeat or leave on the
// coordinator (this shard's leader).
func (s *Server) topicGroupMember(ctx context.Context, req *storepb.TopicGroupMemberRequest) (*storepb.TopicGroupMemberReply, error) {
	st, err := s.raft.Status(s.shard)
	if err != nil || !st.IsLeader {
		return nil, statusError(codes.Unavailable, ReasonNotLeader, fmt.Sprintf("not the leader of shard %d", s.shard), nil)
	}
	if req.GetPartitions() < 1 {
		return nil, statusError(codes.InvalidArgument, ReasonInvalidArgument, "partitions must be positive", nil)
	}
	now := time.Now() // membership is not replicated: the coordinator's own clock
	key := req.GetTenant() + "\x00" + req.GetTopic() + "\x00" + req.GetGroup()
	g, err := s.topics.coord.group(st.Term, key, now)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.incarnation != req.GetIncarnation() || g.partitions != req.GetPartitions() {
		// A new group state, or the topic was deleted and created again.
		g.incarnation, g.partitions = req.GetIncarnation(), req.GetPartitions()
		clear(g.members)
		clear(g.timeouts)
		g.fenced = -1
	}
	changed := g.expire(now)
	member := req.GetMember()
	switch req.GetOp() {
	case memberJoin:
		if len(g.members) >= maxGroupMembers {
			return nil, statusError(codes.ResourceExhausted, ReasonInvalidArgument, fmt.Sprintf("a group has at most %d members", maxGroupMembers), nil)
		}
		timeout := time.Duration(req.GetSessionTimeoutMs()) * time.Millisecond
		member = newMemberID()
		g.members[member], g.timeouts[member] = now.Add(timeout), timeout
		changed = true
	case memberHeartbeat:
		if _, ok := g.members[member]; !ok {
			err = errUnknownMember(member)
		} else {
			g.members[member] = now.Add(g.timeouts[member])
		}
	case memberLeave:
		if _, ok := g.members[member]; ok {
			delete(g.members, member)
			delete(g.timeouts, member)
			changed = true
		}
	default:
		return nil, statusError(codes.InvalidArgument, ReasonInvalidArgument, "unknown member operation", nil)
	}
	if changed {
		g.rebalance()
	}
	if ferr := s.fenceGroup(ctx, req, g); ferr != nil {
		if req.GetOp() == memberJoin {
			// The caller sees a failure: it must not hold partitions.
			delete(g.members, member)
			delete(g.timeouts, member)
			g.rebalance()
			if reasonOf(ferr) == ReasonGroupNotFound {
				s.topics.coord.drop(key, g)
			}
		}
		return nil, ferr
	}
	if err != nil {
		return nil, err
	}
	if len(g.members) == 0 {
		s.topics.coord.drop(key, g)
	}
	if req.GetOp() == memberLeave {
		return &storepb.TopicGroupMemberReply{Member: member, Generation: g.gen, Members: int32(len(g.members))}, nil
	}
	return &storepb.TopicGroupMemberReply{Member: member, Generation: g.gen, Partitions: g.assign[member],
		SessionTimeoutMs: g.timeouts[member].Milliseconds(), Members: int32(len(g.members))}, nil
}

// fenceGroup writes, on every partition, its owner in the current
// generation, unless they are written already.
func (s *Server) fenceGroup(ctx context.Context, req *storepb.TopicGroupMemberRequest, g *memberGroup) error {
	if g.fenced == g.gen {
		return nil
	}
	r, err := s.topicRouter()
	if err != nil {
		return err
	}
	gen := g.gen
	_, err = parallel(int(g.partitions), func(i int) (struct{}, error) {
		p := int32(i)
		shard := TopicShardOf(r.shardCount(), req.GetTenant(), req.GetTopic(), p)
		_, err := r.proposeTopic(ctx, shard, &storepb.Command{Op: &storepb.Command_FenceTopicGroup{FenceTopicGroup: &storepb.FenceTopicGroup{
			Tenant: req.GetTenant(), Topic: req.GetTopic(), Partition: p, Incarnation: req.GetIncarnation(), Group: req.GetGroup(),
			Member: g.owner(p), Generation: gen}}})
		return struct{}{}, err
	})
	if err != nil {
		return err // a status: the member sees why
	}
	g.fenced = gen
	return nil
}

// topicRouter is the node's router (the catalog it gave this server):
// the coordinator fences partitions on other shards through it.
func (s *Server) topicRouter() (*Router, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, statusError(codes.Unavailable, ReasonNoQuorum, "this server coordinates no groups: "+err.Error(), nil)
	}
	r, ok := c.(*Router)
	if !ok {
		return nil, statusError(codes.Unavailable, ReasonNoQuorum, "this server coordinates no groups: no router", nil)
	}
	return r, nil
}

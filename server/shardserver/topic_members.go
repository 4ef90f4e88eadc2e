package shardserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/server"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Consumer group membership, Kafka-style. A group's coordinator is the
// leader of the shard of its topic's partition 0; membership (members,
// session deadlines, generation, assignment) lives in that leader's memory
// only. What is replicated is the offsets and, per partition, the owner
// the coordinator handed it to (member, and the generation it got it in:
// FenceTopicGroup on the partition's shard). The fence is the safety: a
// member reads and commits a partition only while the replicated owner is
// itself, so two members never both commit one partition, even while two
// nodes briefly both believe they coordinate. The coordinator is only
// liveness: when its leadership ends (or its term changes) it forgets
// every group; members then get UNKNOWN_MEMBER from the new coordinator,
// join again and are fenced anew there. Nothing committed is lost:
// offsets are replicated, and a new owner reads on from the committed
// offset (messages handled but not committed are read again: at least
// once).
//
// A rebalance (join, leave, expiry) bumps the generation and assigns the
// partitions in contiguous ranges to the members in id order (the
// target). A partition moves to its target at once when its owner is gone;
// from a live owner it moves once the owner's heartbeat says it applied a
// generation without it (it stopped reading it and committed), or after
// the owner's session timeout: so one member reads a partition at a time.
// A move is fenced before any member is told of it; a fence that failed
// is written by the next call. Members learn their assignment from their
// heartbeat, which they send every third of the session timeout; a
// heartbeat may long-poll (wait_ms): held while the member's assignment
// is the one it applied, answered as soon as the group changes. A timer
// per group runs the coordinator at the next session end or release
// deadline, so a dead member's partitions move when its session ends, not
// at the next call, and long-polling members hear of it at once: a
// partition is taken over within the session timeout of its owner's last
// heartbeat. A member is nearly always in a held heartbeat, so its death
// shows as that call's caller going away: its session then ends half a
// session later (or at its deadline, if sooner), so its partitions are
// taken over within the session timeout of its death. A live member whose
// call broke calls again at once and keeps its session.

// Member operations (TopicGroupMemberRequest.op).
const (
	MemberJoin      = 1
	MemberHeartbeat = 2
	MemberLeave     = 3
	memberTick      = 4 // the coordinator's timer: expire sessions, hand partitions on
	memberDropped   = 5 // the coordinator's own: a held heartbeat's caller went away
)

// Bounds of membership.
const (
	DefaultSessionTimeout = 10 * time.Second
	MinSessionTimeout     = 3 * time.Second
	MaxSessionTimeout     = 5 * time.Minute
	maxGroupMembers       = 1000
	maxCoordinatedGroups  = 10000
	groupSweepEvery       = time.Minute
)

func errUnknownMember(member string) error {
	return server.StatusError(codes.NotFound, server.ReasonUnknownMember,
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
	members     map[string]*groupMember
	// Per partition: the member the last rebalance assigns it to, the one
	// that owns it now (fenced, or dirty: its fence is still to write) and
	// the generation it got it in, and since when and which generation the
	// owner has it taken away (while owner != target).
	target, owner []string
	ownerGen      []int64
	dirty         []bool
	revokedAt     []time.Time
	revokedGen    []int64
	// changed is closed (and replaced) when the generation or an owner
	// changes: long-polling heartbeats wait on it.
	changed chan struct{}
	// ident names the group for the timer's passes; timer is that timer.
	ident *storepb.TopicGroupMemberRequest
	timer *time.Timer
}

type groupMember struct {
	deadline time.Time
	timeout  time.Duration
	applied  int64 // the generation whose assignment it has applied
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
			return nil, server.StatusError(codes.ResourceExhausted, server.ReasonOverloaded, "too many groups with members on this coordinator", nil)
		}
		g = &memberGroup{}
		c.groups[key] = g
	}
	return g, nil
}

// abandon forgets every group when this server no longer coordinates
// them (it lost the leadership, or the term changed) and wakes their held
// heartbeats: they answer NOT_LEADER, and members find the new
// coordinator at once instead of when their holds end.
func (c *coordinator) abandon(term uint64, leader bool) {
	c.mu.Lock()
	old := c.groups
	if len(old) == 0 || (leader && c.term == term) {
		c.mu.Unlock()
		return
	}
	c.groups = map[string]*memberGroup{}
	c.mu.Unlock()
	// g.mu after c.mu is released: memberOnce takes them the other way.
	for _, g := range old {
		g.mu.Lock()
		g.notify()
		if g.timer != nil {
			g.timer.Stop()
		}
		g.mu.Unlock()
	}
}

// current tells whether g is still the group's state.
func (c *coordinator) current(key string, g *memberGroup) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.groups[key] == g
}

func (c *coordinator) drop(key string, g *memberGroup) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.groups[key] == g {
		delete(c.groups, key)
	}
}

// reset starts the group afresh for a topic incarnation: no members, and
// owners unknown (whatever fences exist are overwritten on first use).
func (g *memberGroup) reset(incarnation int64, partitions int32) {
	n := int(partitions)
	g.incarnation, g.partitions = incarnation, partitions
	g.members = map[string]*groupMember{}
	g.target, g.owner = make([]string, n), make([]string, n)
	g.ownerGen, g.dirty = make([]int64, n), make([]bool, n)
	g.revokedAt, g.revokedGen = make([]time.Time, n), make([]int64, n)
	g.notify()
	for p := range g.dirty {
		g.dirty[p] = true
	}
}

// live counts the members whose session has not ended.
func (g *memberGroup) live(now time.Time) int {
	n := 0
	for _, m := range g.members {
		if now.Before(m.deadline) {
			n++
		}
	}
	return n
}

// expire drops the members whose session ended; true if any was.
func (g *memberGroup) expire(now time.Time) bool {
	changed := false
	for id, m := range g.members {
		if !now.Before(m.deadline) {
			delete(g.members, id)
			changed = true
		}
	}
	return changed
}

// rebalance bumps the generation and assigns the partitions in contiguous
// ranges to the members in id order.
func (g *memberGroup) rebalance(now time.Time) {
	g.gen++
	ids := make([]string, 0, len(g.members))
	for m := range g.members {
		ids = append(ids, m)
	}
	slices.Sort(ids)
	clear(g.target)
	if len(ids) > 0 {
		per, extra := int(g.partitions)/len(ids), int(g.partitions)%len(ids)
		p := 0
		for i, m := range ids {
			n := per
			if i < extra {
				n++
			}
			for range n {
				g.target[p] = m
				p++
			}
		}
	}
	for p := range g.target {
		switch {
		case g.target[p] == g.owner[p]:
			g.revokedAt[p], g.revokedGen[p] = time.Time{}, 0
		case g.revokedAt[p].IsZero():
			g.revokedAt[p], g.revokedGen[p] = now, g.gen
		}
	}
}

// settle moves each partition whose owner no longer holds it in practice
// to its target: the owner is gone, applied the generation that took the
// partition away, or had its session timeout to do so.
func (g *memberGroup) settle(now time.Time) (moved bool) {
	for p := range g.target {
		if g.target[p] == g.owner[p] {
			continue
		}
		if m := g.members[g.owner[p]]; m != nil && m.applied < g.revokedGen[p] && now.Sub(g.revokedAt[p]) < m.timeout {
			continue
		}
		g.owner[p], g.ownerGen[p], g.dirty[p] = g.target[p], g.gen, true
		g.revokedAt[p], g.revokedGen[p] = time.Time{}, 0
		moved = true
	}
	return moved
}

// notify wakes the heartbeats waiting for a change of the group.
func (g *memberGroup) notify() {
	if g.changed != nil {
		close(g.changed)
	}
	g.changed = make(chan struct{})
}

// nextEvent is when the group next changes by itself: a session ends, or
// a live owner's time to release a partition runs out. Zero: never.
func (g *memberGroup) nextEvent() time.Time {
	var next time.Time
	earlier := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, m := range g.members {
		earlier(m.deadline)
	}
	for p := range g.target {
		if g.target[p] == g.owner[p] || g.revokedAt[p].IsZero() {
			continue
		}
		if m := g.members[g.owner[p]]; m != nil {
			earlier(g.revokedAt[p].Add(m.timeout))
		}
	}
	return next
}

// assigned is what member holds: partitions it owns, fenced, and keeps.
func (g *memberGroup) assigned(member string) []int32 {
	var out []int32
	for p := range g.target {
		if g.owner[p] == member && g.target[p] == member && !g.dirty[p] {
			out = append(out, int32(p))
		}
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func newMemberID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// TopicGroupMember serves a member's join, heartbeat or leave on the
// coordinator (this shard's leader). A heartbeat with wait_ms whose member
// holds the current assignment is held until the group changes (or the
// wait, bounded by half the session and the call's deadline, ends) and
// then answered afresh.
func (s *Server) TopicGroupMember(ctx context.Context, req *storepb.TopicGroupMemberRequest) (*storepb.TopicGroupMemberReply, error) {
	reply, changed, hold, err := s.memberOnce(ctx, req)
	if err != nil || changed == nil {
		return reply, err
	}
	t := time.NewTimer(hold)
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	case <-ctx.Done():
		// The caller went away while held: its process died or its
		// connection broke. A live member calls again at once (its SDK
		// retries, another endpoint if need be); a dead one's session now
		// ends half a session from here, so its partitions are taken over
		// within its session timeout of its death, not of its last call.
		dropped := proto.Clone(req).(*storepb.TopicGroupMemberRequest)
		dropped.Op, dropped.WaitMs = memberDropped, 0
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ProposeTimeout)
		defer cancel()
		if _, _, _, err := s.memberOnce(dctx, dropped); err != nil {
			s.cfg.Logger.Debug("group member drop failed", "shard", s.shard, "topic", req.GetTopic(), "group", req.GetGroup(), "err", err)
		}
		return reply, nil
	case <-s.stop:
		return reply, nil
	}
	// Answer afresh, as a coordinator pass: the member's session still
	// counts from the heartbeat it sent, so a member killed during a held
	// call loses its partitions one session after it sent that call.
	again := proto.Clone(req).(*storepb.TopicGroupMemberRequest)
	again.Op, again.WaitMs = memberTick, 0
	reply, _, _, err = s.memberOnce(ctx, again)
	if err == nil && (reply == nil || reply.GetSessionTimeoutMs() == 0) {
		// The group state was replaced, or the member's session ended.
		return nil, errUnknownMember(req.GetMember())
	}
	return reply, err
}

// memberOnce runs one membership call. For a heartbeat that may wait it
// also returns the channel closed on the group's next change and how long
// to wait for it.
func (s *Server) memberOnce(ctx context.Context, req *storepb.TopicGroupMemberRequest) (_ *storepb.TopicGroupMemberReply, changedCh <-chan struct{}, hold time.Duration, _ error) {
	st, err := s.raft.Status(s.shard)
	if err != nil || !st.IsLeader {
		return nil, nil, 0, server.StatusError(codes.Unavailable, server.ReasonNotLeader, fmt.Sprintf("not the leader of shard %d", s.shard), nil)
	}
	if req.GetPartitions() < 1 {
		return nil, nil, 0, server.StatusError(codes.InvalidArgument, server.ReasonInvalidArgument, "partitions must be positive", nil)
	}
	now := time.Now() // membership is not replicated: the coordinator's own clock
	key := req.GetTenant() + "\x00" + req.GetTopic() + "\x00" + req.GetGroup()
	var g *memberGroup
	for {
		if g, err = s.topics.coord.group(st.Term, key, now); err != nil {
			return nil, nil, 0, err
		}
		g.mu.Lock()
		if s.topics.coord.current(key, g) {
			break
		}
		g.mu.Unlock() // dropped while this call waited: take the new one
	}
	defer g.mu.Unlock()
	if g.members == nil || g.incarnation != req.GetIncarnation() || g.partitions != req.GetPartitions() {
		if req.GetOp() == memberTick || req.GetOp() == memberDropped {
			return nil, nil, 0, nil // of a group state since replaced
		}
		// A new group state, or the topic was deleted and created again.
		g.reset(req.GetIncarnation(), req.GetPartitions())
	}
	g.ident = &storepb.TopicGroupMemberRequest{Tenant: req.GetTenant(), Topic: req.GetTopic(), Incarnation: req.GetIncarnation(),
		Partitions: req.GetPartitions(), Group: req.GetGroup()}
	defer s.scheduleGroup(key, g, now)
	changed := g.expire(now)
	member := req.GetMember()
	switch req.GetOp() {
	case MemberJoin:
		if len(g.members) >= maxGroupMembers {
			return nil, nil, 0, server.StatusError(codes.ResourceExhausted, server.ReasonQuotaExceeded, fmt.Sprintf("a group has at most %d members", maxGroupMembers), nil)
		}
		timeout := time.Duration(req.GetSessionTimeoutMs()) * time.Millisecond
		member = newMemberID()
		g.members[member] = &groupMember{deadline: now.Add(timeout), timeout: timeout}
		changed = true
	case MemberHeartbeat:
		if m := g.members[member]; m == nil {
			err = errUnknownMember(member)
		} else {
			m.deadline = now.Add(m.timeout)
			m.applied = max(m.applied, min(req.GetGeneration(), g.gen))
		}
	case MemberLeave:
		if g.members[member] != nil {
			delete(g.members, member)
			changed = true
		}
	case memberTick:
	case memberDropped:
		if m := g.members[member]; m != nil {
			m.deadline = minTime(m.deadline, now.Add(m.timeout/2))
		}
	default:
		return nil, nil, 0, server.StatusError(codes.InvalidArgument, server.ReasonInvalidArgument, "unknown member operation", nil)
	}
	if changed {
		g.rebalance(now)
	}
	moved := g.settle(now)
	fencing := slices.Contains(g.dirty, true)
	ferr := s.fenceGroup(ctx, req, g)
	if changed || moved || fencing && ferr == nil {
		g.notify()
	}
	if ferr != nil {
		if req.GetOp() == MemberJoin {
			// The caller sees a failure: it must not hold partitions.
			delete(g.members, member)
			g.rebalance(now)
			g.settle(now)
			g.notify()
			if server.ReasonOf(ferr) == server.ReasonGroupNotFound {
				s.topics.coord.drop(key, g)
			}
		}
		return nil, nil, 0, ferr
	}
	if err != nil {
		return nil, nil, 0, err
	}
	if len(g.members) == 0 {
		s.topics.coord.drop(key, g)
	}
	reply := &storepb.TopicGroupMemberReply{Member: member, Generation: g.gen, Members: int32(len(g.members))}
	m := g.members[member]
	if m == nil {
		return reply, nil, 0, nil
	}
	reply.Partitions, reply.SessionTimeoutMs = g.assigned(member), m.timeout.Milliseconds()
	if req.GetOp() == MemberHeartbeat && req.GetWaitMs() > 0 && m.applied >= g.gen {
		hold = min(time.Duration(req.GetWaitMs())*time.Millisecond, m.timeout/2)
		if dl, ok := ctx.Deadline(); ok {
			hold = min(hold, time.Until(dl)-100*time.Millisecond)
		}
		if hold > 0 {
			return reply, g.changed, hold, nil
		}
	}
	return reply, nil, 0, nil
}

// scheduleGroup sets g's timer (g.mu held) to run the coordinator at the
// group's next event, or stops it when there is none.
func (s *Server) scheduleGroup(key string, g *memberGroup, now time.Time) {
	next := g.nextEvent()
	if next.IsZero() || !s.topics.coord.current(key, g) {
		if g.timer != nil {
			g.timer.Stop()
		}
		return
	}
	d := max(next.Sub(now)+time.Millisecond, 10*time.Millisecond)
	if g.timer == nil {
		g.timer = time.AfterFunc(d, func() { s.groupTick(key, g) })
		return
	}
	g.timer.Reset(d)
}

// groupTick is g's timer: a coordinator pass with no member call, which
// ends sessions that ran out and hands their partitions on.
func (s *Server) groupTick(key string, g *memberGroup) {
	select {
	case <-s.stop:
		return
	default:
	}
	g.mu.Lock()
	ident := g.ident
	g.mu.Unlock()
	if ident == nil || !s.topics.coord.current(key, g) {
		return
	}
	tick := proto.Clone(ident).(*storepb.TopicGroupMemberRequest)
	tick.Op = memberTick
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ProposeTimeout)
	defer cancel()
	if _, _, _, err := s.memberOnce(ctx, tick); err != nil {
		s.cfg.Logger.Debug("group coordinator pass failed", "shard", s.shard, "topic", ident.GetTopic(), "group", ident.GetGroup(), "err", err)
	}
}

// fenceGroup writes the fences of the partitions that moved.
func (s *Server) fenceGroup(ctx context.Context, req *storepb.TopicGroupMemberRequest, g *memberGroup) error {
	var ps []int32
	for p, d := range g.dirty {
		if d {
			ps = append(ps, int32(p))
		}
	}
	if len(ps) == 0 {
		return nil
	}
	r, err := s.topicRouter()
	if err != nil {
		return err
	}
	fence := func(p int32) *storepb.Command {
		return &storepb.Command{Op: &storepb.Command_FenceTopicGroup{FenceTopicGroup: &storepb.FenceTopicGroup{
			Tenant: req.GetTenant(), Topic: req.GetTopic(), Partition: p, Incarnation: req.GetIncarnation(), Group: req.GetGroup(),
			Member: g.owner[p], Generation: g.ownerGen[p]}}}
	}
	fenced := func(p int32) { g.dirty[p] = false }                                                                // each p is its own index: no two writers
	return r.ProposePartitions(ctx, req.GetTenant(), req.GetTopic(), req.GetPlacementShards(), ps, fence, fenced) // a status: the member sees why
}

// TopicProposer proposes commands on the shards of topic partitions: the
// node's router, the catalog it gives a server, is one.
type TopicProposer interface {
	// ProposePartitions proposes cmd(p) on the shard of each partition p
	// (placed over the topic's recorded placement shard count; 0: the
	// cluster's base count) at once, calls done(p) for each that
	// succeeded, and returns the first error in partition order.
	ProposePartitions(ctx context.Context, tenant, topic string, placement uint32, ps []int32, cmd func(p int32) *storepb.Command, done func(p int32)) error
}

// topicRouter is the node's router (the catalog it gave this server):
// the coordinator fences partitions on other shards through it.
func (s *Server) topicRouter() (TopicProposer, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, server.StatusError(codes.Unavailable, server.ReasonNoQuorum, "this server coordinates no groups: "+err.Error(), nil)
	}
	r, ok := c.(TopicProposer)
	if !ok {
		return nil, server.StatusError(codes.Unavailable, server.ReasonNoQuorum, "this server coordinates no groups: no router", nil)
	}
	return r, nil
}

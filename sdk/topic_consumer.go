package quorumq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// GroupMessage is a message read from a topic partition.
type GroupMessage struct {
	MessageID    string
	Partition    int32
	Offset       int64
	Body         string
	Attributes   map[string]string
	Tags         []string
	PartitionKey string
	PublishTime  time.Time
}

// GroupHandler handles one message of a partition. Returning nil marks it
// handled: its offset is committed once the messages read with it are
// handled too. An error (or a panic) has the message handled again after
// a backoff, and the partition waits for it (its order is kept).
type GroupHandler func(ctx context.Context, m *GroupMessage) error

// GroupConsumerOptions tune a GroupConsumer. Zero fields take the defaults.
type GroupConsumerOptions struct {
	// SessionTimeout: without a heartbeat for this long the member is
	// dropped and its partitions go to the others (3s – 5 min, default
	// 10s). Heartbeats go every third of it, each held by the coordinator
	// until the group changes (a long poll), so a rebalance is heard at once;
	// a member whose held heartbeat is cut off (its process died) is dropped
	// half of it later unless it heartbeats again, so its partitions move
	// within the session timeout of its death.
	SessionTimeout time.Duration
	// MaxMessages caps one read of a partition (1 – 1000, default 100).
	MaxMessages int
	// WaitTime is the long-poll wait of a read (0 – 20s, default 5s).
	WaitTime time.Duration
	// RetryBackoff is the first wait before a failed message is handled
	// again; it doubles per failure up to 30s (default 1s).
	RetryBackoff time.Duration
	// OnAssigned is called with the member's partitions (ascending) before
	// they are read, after each rebalance.
	OnAssigned func(ctx context.Context, partitions []int32)
	// OnRevoked is called with the partitions the member stops reading,
	// once their handlers returned and what they handled was committed
	// (at a rebalance and when Run ends).
	OnRevoked func(ctx context.Context, partitions []int32)
	// OnError is told of handler errors and failed reads, commits and
	// heartbeats (default: the client's logger).
	OnError func(err error)
}

// GroupConsumer is a member of a topic's consumer group: see Run.
type GroupConsumer struct {
	t     *Topic
	group string
	o     GroupConsumerOptions
}

// NewGroupConsumer returns a consumer of the group (which must exist:
// Topic.CreateGroup); Run starts it.
func (t *Topic) NewGroupConsumer(group string, o GroupConsumerOptions) *GroupConsumer {
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 10 * time.Second
	}
	if o.MaxMessages <= 0 {
		o.MaxMessages = 100
	}
	if o.WaitTime <= 0 {
		o.WaitTime = 5 * time.Second
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = time.Second
	}
	if o.OnError == nil {
		log := t.c.log
		o.OnError = func(err error) { log.Warn("quorumq: group consumer", "topic", t.name, "err", err) }
	}
	return &GroupConsumer{t: t, group: group, o: o}
}

// assignment is what the coordinator last told the member.
type assignment struct {
	member     string
	generation int64
	partitions []int32
	interval   time.Duration
}

func assignmentOf(member string, a *qv1.GroupAssignment) assignment {
	return assignment{member: member, generation: a.GetGeneration(), partitions: a.GetPartitions(),
		interval: max(a.GetHeartbeatInterval().AsDuration(), 100*time.Millisecond)}
}

// Run joins the group and handles the messages of the partitions the
// coordinator assigns to this member, each partition in offset order, one
// message at a time; after handling what one read returned it commits
// the offset after it (at least once: a crash before the commit, or a
// session that ended, has messages handled again by the partition's next
// owner). A heartbeat every third of the session timeout keeps the
// membership and learns rebalances: the readers of partitions taken away
// stop after their current message and commit, OnRevoked runs, and the
// next heartbeat tells the coordinator, which only then hands them to
// their next member; partitions given are announced by OnAssigned and
// read from their committed offset. A member the coordinator forgot (its
// session ended, the coordinator moved) joins again.
//
// Run returns nil once ctx is done, after the readers stopped, what was
// handled was committed and the member left the group (its partitions go
// to the others at once); or the error that stops it (the group or topic
// is gone, the token may not read). A partition whose committed offset
// fell below the retained log (OFFSET_OUT_OF_RANGE) is reported to
// OnError until the group is reset.
func (g *GroupConsumer) Run(ctx context.Context, h GroupHandler) error {
	first, err := g.join(ctx)
	if err != nil {
		return err
	}
	s := &session{updates: make(chan assignment, 1), kick: make(chan struct{}, 1), fatal: make(chan error, 1)}
	hbCtx, stopHeartbeats := context.WithCancel(ctx)
	var last assignment // the heartbeats' last member, to leave with
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		last = g.heartbeats(hbCtx, first, s)
	}()

	readers := map[int32]*reader{}
	member := ""
	stopReaders := func(ps []int32) {
		for _, p := range ps {
			close(readers[p].done)
		}
		for _, p := range ps {
			<-readers[p].finished
			delete(readers, p)
		}
		if len(ps) > 0 && g.o.OnRevoked != nil {
			g.o.OnRevoked(ctx, ps)
		}
	}
	held := func() []int32 {
		ps := make([]int32, 0, len(readers))
		for p := range readers {
			ps = append(ps, p)
		}
		slices.Sort(ps)
		return ps
	}
	apply := func(a assignment) {
		var revoked []int32
		for _, p := range held() {
			r := readers[p]
			if a.member != member || !slices.Contains(a.partitions, p) || r.fenced() {
				revoked = append(revoked, p)
			}
		}
		stopReaders(revoked)
		member = a.member
		var added []int32
		for _, p := range a.partitions {
			if readers[p] == nil {
				added = append(added, p)
			}
		}
		if len(added) > 0 && g.o.OnAssigned != nil {
			g.o.OnAssigned(ctx, slices.Clone(added))
		}
		for _, p := range added {
			readers[p] = g.startReader(ctx, a, p, h, s)
		}
		s.setApplied(a.member, a.generation)
		if len(revoked) > 0 {
			s.poke() // the coordinator waits for this to hand them on
		}
	}
	apply(first)
	for {
		select {
		case a := <-s.updates:
			apply(a)
		case err := <-s.fatal:
			stopReaders(held())
			stopHeartbeats()
			<-hbDone
			return err
		case <-ctx.Done():
			stopReaders(held())
			stopHeartbeats()
			<-hbDone
			g.leave(context.WithoutCancel(ctx), last.member)
			return nil
		}
	}
}

// session is what Run and its heartbeats share.
type session struct {
	updates chan assignment // each heartbeat's assignment, the latest only
	kick    chan struct{}   // heartbeat now
	fatal   chan error

	mu            sync.Mutex
	appliedMember string
	appliedGen    int64 // the generation of appliedMember Run applied
}

func (s *session) setApplied(member string, gen int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appliedMember, s.appliedGen = member, gen
}

// applied is the generation of member's assignment that Run applied (0:
// none yet).
func (s *session) applied(member string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.appliedMember != member {
		return 0
	}
	return s.appliedGen
}

func (s *session) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (g *GroupConsumer) join(ctx context.Context) (assignment, error) {
	r, err := topicCall(ctx, g.t.c, "join group", 0, func(ctx context.Context, api qv1.TopicServiceClient) (*qv1.JoinGroupResponse, error) {
		return api.JoinGroup(ctx, &qv1.JoinGroupRequest{Topic: g.t.name, Group: g.group, SessionTimeout: durationpb.New(g.o.SessionTimeout)})
	})
	if err != nil {
		return assignment{}, err
	}
	return assignmentOf(r.GetMemberId(), r.GetAssignment()), nil
}

func (g *GroupConsumer) leave(ctx context.Context, member string) {
	ctx, cancel := context.WithTimeout(ctx, g.t.c.retry.AttemptTimeout)
	defer cancel()
	_, err := topicCall(ctx, g.t.c, "leave group", 0, func(ctx context.Context, api qv1.TopicServiceClient) (*qv1.LeaveGroupResponse, error) {
		return api.LeaveGroup(ctx, &qv1.LeaveGroupRequest{Topic: g.t.name, Group: g.group, MemberId: member})
	})
	if err != nil {
		g.o.OnError(err)
	}
}

// heartbeats keeps the membership until ctx is done and returns the last
// assignment: every heartbeat says which generation Run applied and sends
// the answer on updates; a member the coordinator does not know joins
// again; errors that no retry cures go to fatal.
func (g *GroupConsumer) heartbeats(ctx context.Context, a assignment, s *session) assignment {
	t := time.NewTimer(a.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return a
		case <-s.kick:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-t.C:
		}
		// The heartbeat long-polls: the coordinator holds it up to an
		// interval while nothing changes, and answers at once when the
		// group rebalances.
		start, gen := time.Now(), a.generation
		r, err := topicCall(ctx, g.t.c, "heartbeat", a.interval, func(ctx context.Context, api qv1.TopicServiceClient) (*qv1.HeartbeatGroupResponse, error) {
			return api.HeartbeatGroup(ctx, &qv1.HeartbeatGroupRequest{Topic: g.t.name, Group: g.group, MemberId: a.member,
				Generation: s.applied(a.member), Wait: durationpb.New(a.interval)})
		})
		switch {
		case err == nil:
			a = assignmentOf(a.member, r.GetAssignment())
		case errors.Is(err, ErrUnknownMember):
			var na assignment
			if na, err = g.join(ctx); err == nil {
				a = na
			}
		}
		if err != nil && ctx.Err() == nil {
			if unrecoverable(err) {
				select { // a reader may have said it already
				case s.fatal <- err:
				default:
				}
				<-ctx.Done()
				return a
			}
			g.o.OnError(err)
		}
		if err == nil {
			select { // only the latest assignment matters
			case <-s.updates:
			default:
			}
			s.updates <- a
		}
		next := a.interval
		if err == nil && a.generation == gen && time.Since(start) >= a.interval/2 {
			next = 0 // held by the coordinator: poll again at once
		}
		t.Reset(next)
	}
}

// unrecoverable errors end Run: waiting does not cure them.
func unrecoverable(err error) bool {
	return errors.Is(err, ErrGroupNotFound) || errors.Is(err, ErrTopicNotFound) || errors.Is(err, ErrPermissionDenied) ||
		errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrInvalidArgument)
}

// reader is the goroutine reading one partition.
type reader struct {
	done      chan struct{} // closed: stop
	finished  chan struct{} // closed when it returned
	wasFenced atomic.Bool
}

func (r *reader) fenced() bool { return r.wasFenced.Load() }

func (g *GroupConsumer) startReader(ctx context.Context, a assignment, p int32, h GroupHandler, s *session) *reader {
	r := &reader{done: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(r.finished)
		fenced, err := g.read(ctx, r.done, a, p, h)
		if err != nil {
			select { // the group or topic is gone: Run ends
			case s.fatal <- err:
			default:
			}
		}
		if fenced {
			r.wasFenced.Store(true)
			s.poke() // a heartbeat says what the group is now
		}
	}()
	return r
}

// read reads partition p and handles its messages until done is closed or
// ctx is done; fenced when the member was fenced off the partition, an
// error when no retry can cure the reads.
func (g *GroupConsumer) read(ctx context.Context, done <-chan struct{}, a assignment, p int32, h GroupHandler) (fenced bool, _ error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // a stop interrupts the long poll
		select {
		case <-done:
			cancel()
		case <-rctx.Done():
		}
	}()
	stopped := func() bool {
		select {
		case <-done:
			return true
		default:
			return rctx.Err() != nil
		}
	}
	var next *int64 // nil: from the group's committed offset
	backoff := g.o.RetryBackoff
	for !stopped() {
		req := &qv1.ReadTopicRequest{Topic: g.t.name, Group: g.group, Partition: p, Offset: next, MaxMessages: int32(g.o.MaxMessages),
			WaitTime: durationpb.New(g.o.WaitTime), MemberId: a.member, Generation: a.generation}
		r, err := topicCall(rctx, g.t.c, "read topic", g.o.WaitTime, func(ctx context.Context, api qv1.TopicServiceClient) (*qv1.ReadTopicResponse, error) {
			return api.ReadTopic(ctx, req)
		})
		switch {
		case stopped():
			return false, nil
		case errors.Is(err, ErrMemberFenced):
			return true, nil
		case unrecoverable(err):
			return false, err
		case err != nil:
			g.o.OnError(err)
			if sleepUntil(rctx, done, backoff) {
				return false, nil
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		from := r.GetNextOffset() - int64(len(r.GetMessages()))
		handled := from
		for _, m := range r.GetMessages() {
			if err := g.handle(ctx, h, p, m); err != nil {
				g.o.OnError(err)
				break
			}
			handled = m.GetOffset() + 1
			if stopped() {
				break
			}
		}
		if handled > from {
			if g.commit(ctx, a, p, handled) {
				return true, nil
			}
		}
		next = proto.Int64(handled)
		if handled < r.GetNextOffset() { // a handler failed: its message again, later
			if sleepUntil(rctx, done, backoff) {
				return false, nil
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = g.o.RetryBackoff
	}
	return false, nil
}

// handle runs the handler, turning a panic into an error.
func (g *GroupConsumer) handle(ctx context.Context, h GroupHandler, p int32, m *qv1.TopicMessage) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("quorumq: handler panic: %v", r)
		}
	}()
	return h(ctx, &GroupMessage{MessageID: m.GetMessageId(), Partition: p, Offset: m.GetOffset(), Body: m.GetBody(),
		Attributes: m.GetAttributes(), Tags: m.GetTags(), PartitionKey: m.GetPartitionKey(), PublishTime: m.GetPublishTime().AsTime()})
}

// commit stores the partition's offset (even while Run is ending); true
// when the member was fenced.
func (g *GroupConsumer) commit(ctx context.Context, a assignment, p int32, offset int64) bool {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.t.c.retry.AttemptTimeout)
	defer cancel()
	_, err := topicCall(cctx, g.t.c, "commit offsets", 0, func(ctx context.Context, api qv1.TopicServiceClient) (*qv1.CommitOffsetsResponse, error) {
		return api.CommitOffsets(ctx, &qv1.CommitOffsetsRequest{Topic: g.t.name, Group: g.group, MemberId: a.member, Generation: a.generation,
			Offsets: []*qv1.PartitionOffset{{Partition: p, Offset: offset}}})
	})
	if errors.Is(err, ErrMemberFenced) {
		return true
	}
	if err != nil {
		g.o.OnError(err)
	}
	return false
}

// sleepUntil waits d; true when ctx or done ended the wait.
func sleepUntil(ctx context.Context, done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false
	case <-done:
		return true
	case <-ctx.Done():
		return true
	}
}

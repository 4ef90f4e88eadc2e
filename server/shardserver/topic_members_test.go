package shardserver_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/node"
	"github.com/quorumq/quorumq/server/router"
)

const memberSession = 3 * time.Second // the shortest session timeout

// groupMembers is a test's view of a group's members.
type groupMembers struct {
	t      *testing.T
	tc     qv1.TopicServiceClient
	topic  string
	group  string
	assign map[string]*qv1.GroupAssignment // member id -> last assignment
	beat   map[string]time.Time            // member id -> last heartbeat sent
}

func (g *groupMembers) join() string {
	g.t.Helper()
	r, err := g.tc.JoinGroup(tctx(g.t), &qv1.JoinGroupRequest{Topic: g.topic, Group: g.group, SessionTimeout: durationpb.New(memberSession)})
	if err != nil {
		g.t.Fatalf("join: %v", err)
	}
	g.assign[r.GetMemberId()] = r.GetAssignment()
	g.beat[r.GetMemberId()] = time.Now()
	return r.GetMemberId()
}

func (g *groupMembers) heartbeat(m string) (*qv1.GroupAssignment, error) {
	g.beat[m] = time.Now()
	// It applies each assignment at once: the generation acknowledges it.
	r, err := g.tc.HeartbeatGroup(tctx(g.t), &qv1.HeartbeatGroupRequest{Topic: g.topic, Group: g.group, MemberId: m,
		Generation: g.assign[m].GetGeneration()})
	if err == nil {
		g.assign[m] = r.GetAssignment()
	}
	return r.GetAssignment(), err
}

// settled heartbeats members until all report one generation whose
// assignments cover the partitions exactly once; it returns the owner of
// each partition.
func (g *groupMembers) settled(partitions int, members ...string) map[int32]string {
	g.t.Helper()
	var owners map[int32]string
	checkFor(g.t, 20*time.Second, 50*time.Millisecond, func() error {
		owners = map[int32]string{}
		gens := map[int64]bool{}
		for _, m := range members {
			a, err := g.heartbeat(m)
			if err != nil {
				return fmt.Errorf("heartbeat %s: %w", m, err)
			}
			gens[a.GetGeneration()] = true
			if int(a.GetMembers()) != len(members) {
				return fmt.Errorf("%d members, want %d", a.GetMembers(), len(members))
			}
			for _, p := range a.GetPartitions() {
				if o, ok := owners[p]; ok {
					return fmt.Errorf("partition %d owned by %s and %s", p, o, m)
				}
				owners[p] = m
			}
		}
		if len(gens) != 1 || len(owners) != partitions {
			return fmt.Errorf("generations %v, %d of %d partitions owned", gens, len(owners), partitions)
		}
		return nil
	})
	return owners
}

func (g *groupMembers) commit(m string, gen int64, p int32, off int64) error {
	_, err := g.tc.CommitOffsets(tctx(g.t), &qv1.CommitOffsetsRequest{Topic: g.topic, Group: g.group, MemberId: m, Generation: gen,
		Offsets: []*qv1.PartitionOffset{{Partition: p, Offset: off}}})
	return err
}

func (g *groupMembers) read(m string, gen int64, p int32) (*qv1.ReadTopicResponse, error) {
	return g.tc.ReadTopic(tctx(g.t), &qv1.ReadTopicRequest{Topic: g.topic, Group: g.group, Partition: p, MemberId: m, Generation: gen, MaxMessages: 10})
}

func setUpMemberTopic(t *testing.T, tc qv1.TopicServiceClient, topic string, partitions int32, messages int) {
	t.Helper()
	ctx := tctx(t)
	if _, err := tc.CreateTopic(ctx, &qv1.CreateTopicRequest{Name: topic, Attributes: &qv1.TopicAttributes{Partitions: partitions}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.CreateGroup(ctx, &qv1.CreateGroupRequest{Topic: topic, Group: "g"}); err != nil {
		t.Fatal(err)
	}
	for i := range messages {
		if _, err := tc.Publish(ctx, &qv1.PublishRequest{Topic: topic, Body: fmt.Sprint(i), PartitionKey: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// Three members share four partitions, each partition owned by one member
// at a time: a member reads and commits only its partitions in its
// generation (a stale generation is fenced), a member that stops
// heartbeating loses its partitions to the others within its session, and
// one that leaves loses them at once.
func TestTopicGroupMembersShareAndTakeOver(t *testing.T) {
	n := startSharded(t)
	tc := topicClient(t, n.GRPCAddr())
	setUpMemberTopic(t, tc, "members", 4, 40)
	g := &groupMembers{t: t, tc: tc, topic: "members", group: "g", assign: map[string]*qv1.GroupAssignment{}, beat: map[string]time.Time{}}

	a, b, c := g.join(), g.join(), g.join()
	owners := g.settled(4, a, b, c)
	per := map[string]int{}
	for _, m := range owners {
		per[m]++
	}
	if len(per) != 3 {
		t.Fatalf("owners %v: every member should own a partition", owners)
	}
	if iv := g.assign[a].GetHeartbeatInterval().AsDuration(); iv != memberSession/3 {
		t.Fatalf("heartbeat interval %v, want %v", iv, memberSession/3)
	}

	// Each member reads and commits its own partitions; others are fenced.
	gen := g.assign[a].GetGeneration()
	for p, m := range owners {
		r, err := g.read(m, gen, p)
		if err != nil {
			t.Fatalf("owner read of %d: %v", p, err)
		}
		if err := g.commit(m, gen, p, r.GetNextOffset()); err != nil {
			t.Fatalf("owner commit of %d: %v", p, err)
		}
		for _, other := range []string{a, b, c} {
			if other == m {
				continue
			}
			wantReason(t, g.commit(other, gen, p, 0), codes.FailedPrecondition, server.ReasonMemberFenced)
			_, err := g.read(other, gen, p)
			wantReason(t, err, codes.FailedPrecondition, server.ReasonMemberFenced)
		}
		// A generation older than the owner's ownership is fenced too.
		wantReason(t, g.commit(m, 0, p, 0), codes.FailedPrecondition, server.ReasonMemberFenced)
	}
	gr, err := tc.GetGroup(tctx(t), &qv1.GetGroupRequest{Topic: "members", Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range gr.GetGroup().GetPartitions() {
		if p.GetCommittedOffset() == 0 {
			t.Fatalf("partition %d: the owner's commit did not land: %v", p.GetPartition(), gr)
		}
	}

	// c stops heartbeating: a and b take its partitions over.
	stopped := g.beat[c]
	var took time.Duration
	checkFor(t, memberSession+5*time.Second, 100*time.Millisecond, func() error {
		owned := 0
		for _, m := range []string{a, b} {
			as, err := g.heartbeat(m)
			if err != nil {
				return err
			}
			owned += len(as.GetPartitions())
		}
		if owned != 4 {
			return fmt.Errorf("a and b own %d partitions", owned)
		}
		took = time.Since(stopped)
		return nil
	})
	t.Logf("partitions taken over %v after the last heartbeat (session %v)", took, memberSession)
	if took < memberSession {
		t.Fatalf("taken over after %v, before the session of %v ended", took, memberSession)
	}
	_, err = g.heartbeat(c)
	wantReason(t, err, codes.NotFound, server.ReasonUnknownMember)
	owners = g.settled(4, a, b)
	cGen := g.assign[c].GetGeneration()
	for _, p := range g.assign[c].GetPartitions() {
		wantReason(t, g.commit(c, cGen, p, 0), codes.FailedPrecondition, server.ReasonMemberFenced)
		if err := g.commit(owners[p], g.assign[owners[p]].GetGeneration(), p, 1); err != nil {
			t.Fatalf("new owner's commit of %d: %v", p, err)
		}
	}

	// b leaves: a owns everything at once.
	if _, err := tc.LeaveGroup(tctx(t), &qv1.LeaveGroupRequest{Topic: "members", Group: "g", MemberId: b}); err != nil {
		t.Fatal(err)
	}
	as, err := g.heartbeat(a)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(as.GetPartitions(), []int32{0, 1, 2, 3}) || as.GetMembers() != 1 {
		t.Fatalf("after b left a has %v of %d members", as.GetPartitions(), as.GetMembers())
	}
	if _, err := tc.LeaveGroup(tctx(t), &qv1.LeaveGroupRequest{Topic: "members", Group: "g", MemberId: b}); err != nil {
		t.Fatalf("leaving twice: %v", err)
	}

	// Reads and commits outside membership keep working.
	if _, err := tc.CommitOffsets(tctx(t), &qv1.CommitOffsetsRequest{Topic: "members", Group: "g",
		Offsets: []*qv1.PartitionOffset{{Partition: 0, Offset: 0}}}); err != nil {
		t.Fatalf("commit without a member: %v", err)
	}
	if _, err := tc.ReadTopic(tctx(t), &qv1.ReadTopicRequest{Topic: "members", Group: "g", Partition: 0, Offset: proto.Int64(0)}); err != nil {
		t.Fatalf("read without a member: %v", err)
	}
}

// A partition taken from a live member reaches the next one only once the
// first acknowledged the generation that took it (it stopped reading it):
// one reader at a time.
func TestTopicGroupHandOverWaitsForRelease(t *testing.T) {
	n := startSharded(t)
	tc := topicClient(t, n.GRPCAddr())
	setUpMemberTopic(t, tc, "handover", 4, 0)
	ctx := tctx(t)
	hb := func(m string, applied int64) *qv1.GroupAssignment {
		t.Helper()
		r, err := tc.HeartbeatGroup(ctx, &qv1.HeartbeatGroupRequest{Topic: "handover", Group: "g", MemberId: m, Generation: applied})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetAssignment()
	}
	ja, err := tc.JoinGroup(ctx, &qv1.JoinGroupRequest{Topic: "handover", Group: "g", SessionTimeout: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	a := ja.GetMemberId()
	if got := ja.GetAssignment().GetPartitions(); len(got) != 4 {
		t.Fatalf("the only member holds %v", got)
	}
	jb, err := tc.JoinGroup(ctx, &qv1.JoinGroupRequest{Topic: "handover", Group: "g", SessionTimeout: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	b, gen := jb.GetMemberId(), jb.GetAssignment().GetGeneration()
	if got := jb.GetAssignment().GetPartitions(); len(got) != 0 {
		t.Fatalf("b holds %v before a let them go", got)
	}
	// a learns of generation gen (two partitions left), but has not
	// applied it: b still waits, and a may still commit them.
	asA := hb(a, ja.GetAssignment().GetGeneration())
	if asA.GetGeneration() != gen || len(asA.GetPartitions()) != 2 {
		t.Fatalf("a's assignment %v", asA)
	}
	if got := hb(b, gen).GetPartitions(); len(got) != 0 {
		t.Fatalf("b holds %v before a applied generation %d", got, gen)
	}
	var taken int32
	for p := int32(0); p < 4; p++ {
		if !slices.Contains(asA.GetPartitions(), p) {
			taken = p
			if _, err := tc.CommitOffsets(ctx, &qv1.CommitOffsetsRequest{Topic: "handover", Group: "g", MemberId: a,
				Generation: ja.GetAssignment().GetGeneration(), Offsets: []*qv1.PartitionOffset{{Partition: p, Offset: 0}}}); err != nil {
				t.Fatalf("a's last commit of %d: %v", p, err)
			}
		}
	}
	// a applied it: the partitions are b's, and a is fenced off them.
	hb(a, gen)
	asB := hb(b, gen)
	if len(asB.GetPartitions()) != 2 || slices.ContainsFunc(asB.GetPartitions(), func(p int32) bool { return slices.Contains(asA.GetPartitions(), p) }) {
		t.Fatalf("b holds %v, a %v", asB.GetPartitions(), asA.GetPartitions())
	}
	_, err = tc.CommitOffsets(ctx, &qv1.CommitOffsetsRequest{Topic: "handover", Group: "g", MemberId: a, Generation: gen,
		Offsets: []*qv1.PartitionOffset{{Partition: taken, Offset: 0}}})
	wantReason(t, err, codes.FailedPrecondition, server.ReasonMemberFenced)
}

// A live member that never acknowledges the generation that took its
// partitions loses them anyway once its session timeout passed.
func TestTopicGroupHandOverAfterSessionWithoutAck(t *testing.T) {
	n := startSharded(t)
	tc := topicClient(t, n.GRPCAddr())
	setUpMemberTopic(t, tc, "noack", 2, 0)
	ctx := tctx(t)
	join := func() *qv1.JoinGroupResponse {
		t.Helper()
		r, err := tc.JoinGroup(ctx, &qv1.JoinGroupRequest{Topic: "noack", Group: "g", SessionTimeout: durationpb.New(memberSession)})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ja := join()
	jb := join()
	taken := time.Now()
	checkFor(t, memberSession+10*time.Second, 100*time.Millisecond, func() error {
		// a keeps its session, acknowledging only its first generation.
		ra, err := tc.HeartbeatGroup(ctx, &qv1.HeartbeatGroupRequest{Topic: "noack", Group: "g", MemberId: ja.GetMemberId(),
			Generation: ja.GetAssignment().GetGeneration()})
		if err != nil {
			return err
		}
		rb, err := tc.HeartbeatGroup(ctx, &qv1.HeartbeatGroupRequest{Topic: "noack", Group: "g", MemberId: jb.GetMemberId(),
			Generation: jb.GetAssignment().GetGeneration()})
		if err != nil {
			return err
		}
		if len(rb.GetAssignment().GetPartitions()) != 1 || len(ra.GetAssignment().GetPartitions()) != 1 {
			return fmt.Errorf("a holds %v, b %v", ra.GetAssignment().GetPartitions(), rb.GetAssignment().GetPartitions())
		}
		return nil
	})
	if since := time.Since(taken); since < memberSession {
		t.Fatalf("handed over after %v, before a's session timeout of %v", since, memberSession)
	}
}

func TestTopicGroupMembershipErrors(t *testing.T) {
	n := startSharded(t)
	tc := topicClient(t, n.GRPCAddr())
	setUpMemberTopic(t, tc, "errs", 2, 0)
	ctx := tctx(t)
	_, err := tc.JoinGroup(ctx, &qv1.JoinGroupRequest{Topic: "errs", Group: "nope"})
	wantReason(t, err, codes.NotFound, server.ReasonGroupNotFound)
	_, err = tc.JoinGroup(ctx, &qv1.JoinGroupRequest{Topic: "errs", Group: "g", SessionTimeout: durationpb.New(time.Second)})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	_, err = tc.JoinGroup(ctx, &qv1.JoinGroupRequest{Topic: "errs", Group: "g", SessionTimeout: durationpb.New(time.Hour)})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	_, err = tc.HeartbeatGroup(ctx, &qv1.HeartbeatGroupRequest{Topic: "errs", Group: "g", MemberId: "ghost"})
	wantReason(t, err, codes.NotFound, server.ReasonUnknownMember)
	_, err = tc.HeartbeatGroup(ctx, &qv1.HeartbeatGroupRequest{Topic: "errs", Group: "g"})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	r, err := tc.JoinGroup(ctx, &qv1.JoinGroupRequest{Topic: "errs", Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.GetAssignment().GetSessionTimeout().AsDuration(); got != 10*time.Second {
		t.Fatalf("default session timeout %v", got)
	}
	// A member of no generation is fenced.
	_, err = tc.CommitOffsets(ctx, &qv1.CommitOffsetsRequest{Topic: "errs", Group: "g", MemberId: "ghost", Generation: 1,
		Offsets: []*qv1.PartitionOffset{{Partition: 0, Offset: 0}}})
	wantReason(t, err, codes.FailedPrecondition, server.ReasonMemberFenced)
}

// When the coordinator's leadership moves, its members are unknown to the
// new one: they join again, are re-fenced there (the old ids can no longer
// commit), and read on from the offsets committed before.
func TestTopicGroupCoordinatorLeaderChange(t *testing.T) {
	c := startMemCluster(t, 3, func(cfg *node.Config) { cfg.Shards = partShards })
	tc := topicClient(t, c.Nodes[1].GRPCAddr())
	setUpMemberTopic(t, tc, "coord", 4, 20)
	g := &groupMembers{t: t, tc: tc, topic: "coord", group: "g", assign: map[string]*qv1.GroupAssignment{}, beat: map[string]time.Time{}}
	a, b := g.join(), g.join()
	owners := g.settled(4, a, b)
	committed := map[int32]int64{}
	for p, m := range owners {
		r, err := g.read(m, g.assign[m].GetGeneration(), p)
		if err != nil {
			t.Fatal(err)
		}
		committed[p] = r.GetNextOffset()
		if err := g.commit(m, g.assign[m].GetGeneration(), p, committed[p]); err != nil {
			t.Fatal(err)
		}
	}

	t.Log("settled and committed")
	// Move the leadership of partition 0's shard (the coordinator).
	sh := router.TopicShardOf(partShards, server.DevTenant, "coord", 0)
	var from uint64
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		st, err := c.Nodes[1].Host().Status(sh)
		if err != nil || st.LeaderID == 0 {
			return fmt.Errorf("no leader of shard %d: %v", sh, err)
		}
		if from == 0 {
			from = st.LeaderID
		}
		if st.LeaderID != from {
			return nil
		}
		to := from%3 + 1
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = c.Nodes[from].Host().TransferLeadership(ctx, sh, to)
		return fmt.Errorf("shard %d still led by node %d", sh, from)
	})

	t.Logf("coordinator moved from node %d", from)
	// The old members are unknown now; they join again.
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		_, err := g.heartbeat(a)
		if _, reason, _ := reasonOf(err); reason != server.ReasonUnknownMember {
			return fmt.Errorf("heartbeat of a after the move: %v", err)
		}
		return nil
	})
	t.Log("the old members are unknown")
	a2, b2 := g.join(), g.join()
	owners2 := g.settled(4, a2, b2)
	for p, m := range owners2 {
		gen := g.assign[m].GetGeneration()
		r, err := g.read(m, gen, p)
		if err != nil {
			t.Fatalf("read %d after the move: %v", p, err)
		}
		if len(r.GetMessages()) > 0 && r.GetMessages()[0].GetOffset() != committed[p] {
			t.Fatalf("partition %d: read from %d, committed %d", p, r.GetMessages()[0].GetOffset(), committed[p])
		}
		if err := g.commit(m, gen, p, committed[p]); err != nil {
			t.Fatalf("commit %d after the move: %v", p, err)
		}
		old := owners[p]
		wantReason(t, g.commit(old, g.assign[old].GetGeneration(), p, 0), codes.FailedPrecondition, server.ReasonMemberFenced)
	}
}

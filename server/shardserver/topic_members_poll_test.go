package shardserver_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// A held heartbeat (wait) answers when the group changes, with no other
// call made: the coordinator's timer ends a silent member's session on
// time and hands its partitions to the member whose heartbeat it holds.
// So a dead member's partitions are taken over within its session timeout
// of its last heartbeat, not at the survivors' next heartbeat after that.
func TestTopicGroupHeldHeartbeatHearsTakeOver(t *testing.T) {
	const session = 6 * time.Second
	n := startSharded(t)
	tc := topicClient(t, n.GRPCAddr())
	setUpMemberTopic(t, tc, "held", 4, 0)
	join := func() *qv1.JoinGroupResponse {
		t.Helper()
		r, err := tc.JoinGroup(tctx(t), &qv1.JoinGroupRequest{Topic: "held", Group: "g", SessionTimeout: durationpb.New(session)})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := join().GetMemberId(), join().GetMemberId()
	// Both apply the current generation until each holds two partitions.
	var lastB time.Time
	gens := settleTwo(t, tc, "held", a, b, func() { lastB = time.Now() })

	// Nothing changes: a held heartbeat is answered when its wait ends.
	wait := session / 2
	start := time.Now()
	r, err := tc.HeartbeatGroup(tctx(t), &qv1.HeartbeatGroupRequest{Topic: "held", Group: "g", MemberId: a, Generation: gens[a],
		Wait: durationpb.New(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if held := time.Since(start); held < 900*time.Millisecond || r.GetAssignment().GetGeneration() != gens[a] {
		t.Fatalf("held %v, generation %d (was %d): want the wait, unchanged", held, r.GetAssignment().GetGeneration(), gens[a])
	}

	// b falls silent. a's one held call, made before b's session ends and
	// waiting past it, must come back with all four partitions.
	time.Sleep(time.Until(lastB.Add(session - wait + time.Second)))
	start = time.Now()
	r, err = tc.HeartbeatGroup(tctx(t), &qv1.HeartbeatGroupRequest{Topic: "held", Group: "g", MemberId: a, Generation: gens[a],
		Wait: durationpb.New(wait)})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(lastB)
	if got := r.GetAssignment().GetPartitions(); len(got) != 4 || r.GetAssignment().GetMembers() != 1 {
		t.Fatalf("after %v held and %v since b's last heartbeat: partitions %v, %d members; want b's session ended and all 4 with a",
			time.Since(start), took, got, r.GetAssignment().GetMembers())
	}
	t.Logf("b's partitions went to a %v after b's last heartbeat (session %v)", took, session)
}

// A member whose held heartbeat's caller goes away (its process died, so
// its connection closed) has its session end half a session later, not a
// whole session after that call arrived: its partitions are taken over
// within the session timeout of its death.
func TestTopicGroupDroppedHeldHeartbeatEndsSessionSooner(t *testing.T) {
	const session = 6 * time.Second
	n := startSharded(t)
	tc := topicClient(t, n.GRPCAddr())
	setUpMemberTopic(t, tc, "dropped", 4, 0)
	join := func() string {
		t.Helper()
		r, err := tc.JoinGroup(tctx(t), &qv1.JoinGroupRequest{Topic: "dropped", Group: "g", SessionTimeout: durationpb.New(session)})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetMemberId()
	}
	a, b := join(), join()
	gens := settleTwo(t, tc, "dropped", a, b, nil)

	// b's held heartbeat: its caller goes away after 200 ms.
	bctx, cancel := context.WithCancel(tctx(t))
	defer time.AfterFunc(200*time.Millisecond, cancel).Stop()
	_, err := tc.HeartbeatGroup(bctx, &qv1.HeartbeatGroupRequest{Topic: "dropped", Group: "g", MemberId: b, Generation: gens[b],
		Wait: durationpb.New(session / 2)})
	if status.Code(err) != codes.Canceled {
		t.Fatalf("b's held heartbeat: %v, want it cancelled by its caller", err)
	}
	dropped := time.Now()
	// b's session ends half a session after that (a whole one would end
	// 5.8 s from here): a's held call, waiting until 4 s from here, hears
	// that it holds all four partitions.
	time.Sleep(time.Second)
	r, err := tc.HeartbeatGroup(tctx(t), &qv1.HeartbeatGroupRequest{Topic: "dropped", Group: "g", MemberId: a, Generation: gens[a],
		Wait: durationpb.New(session / 2)})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.GetAssignment().GetPartitions(); len(got) != 4 || r.GetAssignment().GetMembers() != 1 {
		t.Fatalf("%v after b's caller went away: partitions %v, %d members; want b's session ended and all 4 with a",
			time.Since(dropped), got, r.GetAssignment().GetMembers())
	}
	t.Logf("b's partitions went to a %v after b's caller went away (session %v)", time.Since(dropped), session)
}

// settleTwo heartbeats members a and b of topic's group "g" (4 partitions)
// until both applied one generation and each holds two partitions; it
// calls beforeB before each of b's heartbeats and returns the generations.
func settleTwo(t *testing.T, tc qv1.TopicServiceClient, topic, a, b string, beforeB func()) map[string]int64 {
	t.Helper()
	gens := map[string]int64{}
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, m := range []string{a, b} {
			if m == b && beforeB != nil {
				beforeB()
			}
			r, err := tc.HeartbeatGroup(tctx(t), &qv1.HeartbeatGroupRequest{Topic: topic, Group: "g", MemberId: m, Generation: gens[m]})
			if err != nil {
				return err
			}
			gens[m] = r.GetAssignment().GetGeneration()
			if got := len(r.GetAssignment().GetPartitions()); got != 2 {
				return fmt.Errorf("member %s holds %d partitions", m, got)
			}
		}
		if gens[a] != gens[b] {
			return fmt.Errorf("generations %v", gens)
		}
		return nil
	})
	return gens
}

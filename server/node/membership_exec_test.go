package node

import (
	"log/slog"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// raftSim is one shard's applied raft configuration, led by node leader,
// whose every learner has caught up.
type raftSim struct {
	leader           uint64
	voters, learners []uint64
}

func (r *raftSim) status() raftnode.GroupStatus {
	st := raftnode.GroupStatus{LeaderID: r.leader, IsLeader: true, Applied: 100,
		Voters: slices.Clone(r.voters), Learners: slices.Clone(r.learners)}
	st.Members = slices.Sorted(slices.Values(append(slices.Clone(r.voters), r.learners...)))
	for _, id := range st.Members {
		st.Peers = append(st.Peers, raftnode.PeerProgress{ID: id, Match: 100, Next: 101, State: "StateReplicate", RecentActive: true})
	}
	return st
}

func (r *raftSim) config() (shardConfig, bool) {
	st := r.status()
	return shardConfig{voters: st.Voters, learners: st.Learners, members: st.Members, fromLeader: true}, true
}

// apply applies one ConfChangeV2 (and leaves the joint configuration).
func (r *raftSim) apply(changes []raftnode.MemberChange) {
	drop := func(ids []uint64, id uint64) []uint64 {
		return slices.DeleteFunc(ids, func(v uint64) bool { return v == id })
	}
	for _, c := range changes {
		r.voters, r.learners = drop(r.voters, c.ID), drop(r.learners, c.ID)
		switch c.Kind {
		case raftnode.AddVoter:
			r.voters = append(r.voters, c.ID)
		case raftnode.AddLearner:
			r.learners = append(r.learners, c.ID)
		}
	}
	slices.Sort(r.voters)
	slices.Sort(r.learners)
}

// recordSets is a propose func applying SetReplicaSet to sets (checked
// like the store does).
func recordSets(t *testing.T, sets []*storepb.ReplicaSetRecord) func(*storepb.Command) error {
	return func(cmd *storepb.Command) error {
		op := cmd.GetSetReplicaSet()
		if op == nil {
			t.Fatalf("unexpected command %v", cmd)
		}
		rs := proto.CloneOf(op.GetReplicaSet())
		for i, cur := range sets {
			if cur.GetShard() != rs.GetShard() {
				continue
			}
			if op.GetCheckPending() && !proto.Equal(cur.GetPending(), op.GetExpectPending()) {
				return store.ErrReplicaSetChanged
			}
			sets[i] = rs
		}
		return nil
	}
}

// A move's learner caught up and the shard's leader proposed its
// promotion (joint with the removal of the moved replica), when the
// coordinator, seeing it still a learner past the move timeout, recorded a
// rollback. The promotion then applied: the rollback must not remove the
// new voter (the shard would be a voter short), and the records end with
// the configuration raft applied.
func TestRollbackNeverUndoesAppliedPromotion(t *testing.T) {
	start := time.Unix(1_000_000, 0)
	sets := []*storepb.ReplicaSetRecord{{Shard: 1, ReplicationFactor: 3, Voters: []uint64{1, 2, 3},
		Pending: &storepb.ReplicaChange{NodeId: 4, Add: true, RemoveNodeId: 3, StartedAtMs: start.UnixMilli()}}}
	shard := &raftSim{leader: 1, voters: []uint64{1, 2, 3}, learners: []uint64{4}}
	n := &Node{log: slog.New(slog.DiscardHandler), cfg: Config{MoveTimeout: time.Minute}}
	propose := recordSets(t, sets)
	config := func(uint64) (shardConfig, bool) { return shard.config() }

	promote := nextStep(1, shard.status(), sets[0])
	want := []raftnode.MemberChange{{Kind: raftnode.AddVoter, ID: 4}, {Kind: raftnode.RemoveMember, ID: 3}}
	if promote.kind != stepChange || !slices.Equal(promote.changes, want) {
		t.Fatalf("leader's step %+v, want the promotion %v", promote, want)
	}
	// A follower's configuration (it may not show the promotion yet)
	// never rolls back.
	follower := func(uint64) (shardConfig, bool) {
		c, ok := shard.config()
		c.fromLeader = false
		return c, ok
	}
	if _, err := n.finishChanges(cloneSets(sets), follower, start.Add(2*time.Minute), propose); err != nil {
		t.Fatal(err)
	}
	if p := sets[0].GetPending(); !p.GetAdd() {
		t.Fatalf("rolled back on a follower's configuration: %v", p)
	}
	// The promotion is in the log, not applied: the coordinator rolls back.
	if _, err := n.finishChanges(cloneSets(sets), config, start.Add(2*time.Minute), propose); err != nil {
		t.Fatal(err)
	}
	if p := sets[0].GetPending(); p.GetAdd() || p.GetNodeId() != 4 {
		t.Fatalf("pending after the move timed out: %v, want the rollback of node 4", p)
	}
	shard.apply(promote.changes)
	for pass := range 4 {
		if p := sets[0].GetPending(); p != nil {
			if s := nextStep(1, shard.status(), sets[0]); s.kind == stepChange {
				shard.apply(s.changes)
			}
		}
		if len(shard.voters) < 3 {
			t.Fatalf("pass %d: the shard is down to voters %v (record %v)", pass, shard.voters, sets[0])
		}
		if _, err := n.finishChanges(cloneSets(sets), config, start.Add(3*time.Minute), propose); err != nil {
			t.Fatal(err)
		}
	}
	if rs := sets[0]; !slices.Equal(rs.GetVoters(), []uint64{1, 2, 4}) || rs.GetPending() != nil || len(rs.GetLearners()) != 0 {
		t.Fatalf("record %v, want voters [1 2 4] and nothing pending", rs)
	}
}

// cloneSets is what a pass reads from the metadata replica: copies.
func cloneSets(sets []*storepb.ReplicaSetRecord) []*storepb.ReplicaSetRecord {
	out := make([]*storepb.ReplicaSetRecord, len(sets))
	for i, rs := range sets {
		out[i] = proto.CloneOf(rs)
	}
	return out
}

// A copy to a shard whose configuration the coordinator cannot read (the
// shard lost its leader, e.g. its quorum) holds the other copies back
// until the move timeout only: past it, the plan may copy elsewhere (one
// copy at a time would otherwise stop every repair for good).
func TestStalledCopyWithoutLeaderStopsHoldingOthersBack(t *testing.T) {
	start := time.Unix(1_000_000, 0)
	sets := []*storepb.ReplicaSetRecord{
		{Shard: 1, ReplicationFactor: 3, Voters: []uint64{1, 2, 3},
			Pending: &storepb.ReplicaChange{NodeId: 4, Add: true, RemoveNodeId: 3, StartedAtMs: start.UnixMilli()}},
		{Shard: 2, ReplicationFactor: 3, Voters: []uint64{1, 2, 4}},
	}
	n := &Node{log: slog.New(slog.DiscardHandler), cfg: Config{MoveTimeout: time.Minute}}
	propose := func(cmd *storepb.Command) error {
		t.Fatalf("nothing to record without the shard's configuration: %v", cmd)
		return nil
	}
	unknown := func(uint64) (shardConfig, bool) { return shardConfig{}, false }
	for _, tc := range []struct {
		at   time.Duration
		busy int
	}{{30 * time.Second, 1}, {time.Minute, 1}, {2 * time.Minute, 0}} {
		busy, err := n.finishChanges(cloneSets(sets), unknown, start.Add(tc.at), propose)
		if err != nil {
			t.Fatal(err)
		}
		if busy != tc.busy {
			t.Fatalf("%v after the copy started: %d copies under way, want %d", tc.at, busy, tc.busy)
		}
	}
}

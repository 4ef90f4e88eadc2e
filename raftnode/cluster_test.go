package raftnode

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/quorumq/quorumq/internal/keys"
)

// testCluster is n hosts in one process over a MemNetwork.
type testCluster struct {
	t      *testing.T
	net    *MemNetwork
	nodes  map[uint64]*testNode
	opts   nodeOpts
	groups []uint64
}

func newCluster(t *testing.T, size int, logRetain uint64, groups ...uint64) *testCluster {
	t.Helper()
	return newClusterOpts(t, size, nodeOpts{logRetain: logRetain}, groups...)
}

// newClusterOpts is newCluster with every node's options (its peers,
// groups and transport are set here).
func newClusterOpts(t *testing.T, size int, o nodeOpts, groups ...uint64) *testCluster {
	t.Helper()
	c := &testCluster{t: t, net: NewMemNetwork(), nodes: make(map[uint64]*testNode), groups: groups}
	c.opts = o
	c.opts.peers = nil
	for id := uint64(1); id <= uint64(size); id++ {
		c.opts.peers = append(c.opts.peers, id)
	}
	c.opts.groups = groups
	for _, id := range c.opts.peers {
		if o.crashable {
			c.start(id, vfs.NewCrashableMem())
		} else {
			c.start(id, vfs.NewMem())
		}
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.stop(t)
		}
	})
	return c
}

func (c *testCluster) start(id uint64, fs vfs.FS) {
	o := c.opts
	o.transport = c.net.Transport(id)
	n := startNode(c.t, id, fs, o)
	c.nodes[id] = n
	c.net.Attach(id, n.host)
}

// leader waits until the nodes in ids (all if none) agree on a leader that
// is among them and considers itself leader, and returns it.
func (c *testCluster) leader(group uint64, ids ...uint64) *testNode {
	c.t.Helper()
	if len(ids) == 0 {
		for id := range c.nodes {
			ids = append(ids, id)
		}
	}
	var lead *testNode
	checkFor(c.t, 10*time.Second, func() error {
		var want uint64
		for _, id := range ids {
			st, err := c.nodes[id].host.Status(group)
			if err != nil {
				return err
			}
			if st.LeaderID == 0 || (want != 0 && st.LeaderID != want) {
				return fmt.Errorf("node %d sees leader %d, others %d", id, st.LeaderID, want)
			}
			want = st.LeaderID
		}
		n := c.nodes[want]
		if n == nil || !slices.Contains(ids, want) {
			return fmt.Errorf("leader %d is not among %v", want, ids)
		}
		if st, _ := n.host.Status(group); !st.IsLeader {
			return fmt.Errorf("node %d does not know it leads", want)
		}
		lead = n
		return nil
	})
	return lead
}

// converged waits until every node has the same replicated state for group.
// The states are hashed only once every node has the same applied index
// (the state holds it, so they cannot be equal before): hashing a
// large state takes seconds under -race on a loaded machine, and a poll
// that hashes while a follower still catches up can outlast the deadline.
func (c *testCluster) converged(group uint64) {
	c.t.Helper()
	checkFor(c.t, 30*time.Second, func() error {
		var refApplied string
		var first uint64
		for id, n := range c.nodes {
			applied, err := appliedRecord(n.sdb, group)
			if err != nil {
				return err
			}
			if first == 0 {
				refApplied, first = applied, id
			} else if applied != refApplied {
				return fmt.Errorf("node %d applied %x, node %d %x", first, refApplied, id, applied)
			}
		}
		var ref stateSum
		var refID uint64
		for id, n := range c.nodes {
			sum, err := stateHash(n.sdb, group)
			if err != nil {
				return err
			}
			if refID == 0 {
				ref, refID = sum, id
				continue
			}
			if sum != ref {
				return fmt.Errorf("node %d and node %d differ: %+v vs %+v", refID, id, ref, sum)
			}
		}
		return nil
	})
}

// stateSum summarizes a group's replicated key range.
type stateSum struct {
	Keys    int
	Applied uint64
	Hash    [sha256.Size]byte
}

// appliedRecord is the group's applied-index record ("" if none).
func appliedRecord(db *pebble.DB, group uint64) (string, error) {
	v, closer, err := db.Get(keys.AppliedIndex(group))
	if errors.Is(err, pebble.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer closer.Close()
	return string(v), nil
}

func stateHash(db *pebble.DB, group uint64) (stateSum, error) {
	var s stateSum
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: keys.StatePrefix(group), UpperBound: keys.StateEnd(group)})
	if err != nil {
		return s, err
	}
	defer it.Close()
	h := sha256.New()
	for ok := it.First(); ok; ok = it.Next() {
		h.Write(appendRecord(nil, it.Key(), it.Value()))
		s.Keys++
		if bytes.Equal(it.Key(), keys.AppliedIndex(group)) {
			s.Applied = binary.BigEndian.Uint64(it.Value())
		}
	}
	h.Sum(s.Hash[:0])
	return s, it.Error()
}

func (c *testCluster) follower(group uint64, lead *testNode) *testNode {
	for id, n := range c.nodes {
		if id != lead.id {
			return n
		}
	}
	c.t.Fatal("no follower")
	return nil
}

func TestThreeNodes(t *testing.T) {
	c := newCluster(t, 3, 0, 1, 2)
	for _, g := range c.groups {
		lead := c.leader(g)
		checkResults(t, proposeAll(t, lead.host, g, "m", 100))
		c.converged(g)
		for _, n := range c.nodes {
			st, err := n.host.Status(g)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Members) != 3 || st.LeaderID != lead.id {
				t.Fatalf("node %d status %+v", n.id, st)
			}
			if got := len(counts(t, n.sdb, g)); got != 100 {
				t.Fatalf("node %d applied %d entries of group %d, want 100", n.id, got, g)
			}
		}

		f := c.follower(g, lead)
		ctx := ctxTimeout(t, 5*time.Second)
		_, err := f.host.Propose(ctx, g, []byte("x"))
		var nl *NotLeaderError
		if !errors.As(err, &nl) || !errors.Is(err, ErrNotLeader) || nl.LeaderID != lead.id || nl.Group != g {
			t.Fatalf("propose on follower: %v, want NotLeaderError with leader %d", err, lead.id)
		}
		if err := f.host.ReadIndex(ctx, g); !errors.Is(err, ErrNotLeader) {
			t.Fatalf("read index on follower: %v", err)
		}
		if err := lead.host.ReadIndex(ctx, g); err != nil {
			t.Fatalf("read index on leader: %v", err)
		}
	}
	if p := c.nodes[1].host.Proposals() + c.nodes[2].host.Proposals() + c.nodes[3].host.Proposals(); p != 2*100+2 {
		t.Fatalf("proposals = %d, want 202", p)
	}
}

func TestPartitionLeader(t *testing.T) {
	const g = 1
	c := newCluster(t, 3, 0, g)
	old := c.leader(g)
	checkResults(t, proposeAll(t, old.host, g, "before", 50))

	c.net.Partition(old.id)
	// Proposals on the isolated leader cannot commit: they fail when it
	// steps down (CheckQuorum) or time out.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := old.host.Propose(ctx, g, fmt.Appendf(nil, "lost-%d", i))
			errs <- err
		})
	}

	var rest []uint64
	for id := range c.nodes {
		if id != old.id {
			rest = append(rest, id)
		}
	}
	start := time.Now()
	lead := c.leader(g, rest...)
	t.Logf("new leader %d after %v", lead.id, time.Since(start))
	if lead.id == old.id {
		t.Fatal("isolated node still leads")
	}
	checkResults(t, proposeAll(t, lead.host, g, "during", 50))

	wg.Wait()
	close(errs)
	for err := range errs {
		t.Logf("isolated leader proposal: %v", err)
		if !errors.Is(err, ErrLeadershipLost) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrNotLeader) {
			t.Fatalf("proposal on isolated leader: %v", err)
		}
	}
	if st, _ := old.host.Status(g); st.IsLeader {
		t.Fatalf("isolated node still thinks it leads: %+v", st)
	}

	c.net.Heal()
	lead = c.leader(g)
	checkResults(t, proposeAll(t, lead.host, g, "after", 50))
	c.converged(g)
	for id, n := range c.nodes {
		for idx, k := range counts(t, n.sdb, g) {
			if k != 1 {
				t.Fatalf("node %d applied entry %d %d times", id, idx, k)
			}
		}
	}
}

func TestTransferLeadership(t *testing.T) {
	const g = 1
	c := newCluster(t, 3, 0, g)
	lead := c.leader(g)
	f := c.follower(g, lead)
	if err := f.host.TransferLeadership(ctxTimeout(t, time.Second), g, f.id); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("transfer on follower: %v", err)
	}
	if err := lead.host.TransferLeadership(ctxTimeout(t, 5*time.Second), g, f.id); err != nil {
		t.Fatal(err)
	}
	if got := c.leader(g); got.id != f.id {
		t.Fatalf("leader %d after transfer to %d", got.id, f.id)
	}
	checkResults(t, proposeAll(t, f.host, g, "t", 10))
}

// TestTruncationPassesAbsentMember checks that an isolated follower does
// not pin the leader's log: the leader truncates past it, and after healing
// it catches up by snapshot; followers truncate too, and a restarted
// follower comes back with its truncated log.
func TestTruncationPassesAbsentMember(t *testing.T) {
	const g = 1
	c := newCluster(t, 3, 10, g)
	lead := c.leader(g)
	slow := c.follower(g, lead)
	checkResults(t, proposeAll(t, lead.host, g, "a", 40))
	c.converged(g)

	c.net.Partition(slow.id)
	slowSt, _ := slow.host.Status(g)
	c.proposeUntilTruncated(g, slowSt.LastIndex, otherIDs(c, slow.id)...)
	// Whichever of the others leads after the heal must lack the entries
	// the isolated follower needs: with the state without a WAL each
	// replica truncates only behind its own state flush, later than the
	// leader that proposed the truncation.
	checkFor(t, 20*time.Second, func() error {
		for _, id := range otherIDs(c, slow.id) {
			st, err := c.nodes[id].host.Status(g)
			if err != nil {
				return err
			}
			if st.FirstIndex <= slowSt.LastIndex+1 {
				return fmt.Errorf("node %d first index %d, isolated follower's last %d", id, st.FirstIndex, slowSt.LastIndex)
			}
		}
		return nil
	})

	c.net.Heal()
	c.converged(g)
	// The counter follows the round's commit, after Status shows the
	// snapshot's applied index: wait for it rather than read it once.
	checkFor(t, 10*time.Second, func() error {
		if slow.host.SnapshotsApplied() == 0 {
			return errors.New("isolated follower caught up without a snapshot")
		}
		return nil
	})
	checkFor(t, 10*time.Second, func() error {
		for id, n := range c.nodes {
			st, err := n.host.Status(g)
			if err != nil {
				return err
			}
			if st.FirstIndex <= slowSt.LastIndex {
				return fmt.Errorf("node %d first index %d", id, st.FirstIndex)
			}
		}
		return nil
	})

	// A restarted follower comes back with its truncated log.
	f := c.follower(g, c.leader(g))
	fs := f.fs
	f.stop(t)
	c.net.Detach(f.id)
	c.start(f.id, fs)
	lead = c.leader(g)
	checkResults(t, proposeAll(t, lead.host, g, "c", 20))
	c.converged(g)
}

// proposeUntilTruncated proposes batches until no log among ids (all
// nodes if none) holds index past+1, so that a member at past needs a
// snapshot whichever of them leads, and returns the leader. Every log, not
// only the leader's: with the state without a WAL each replica truncates
// only behind its own state flush, later than the leader that proposed the
// truncation, and leadership may move to it. It follows leadership among
// ids: on a loaded machine, under -race, a follower's apply round can
// outlast an election timeout, and the leader steps down (CheckQuorum)
// between two batches. A proposal lost with its leadership is not retried:
// the batch only fills the log.
func (c *testCluster) proposeUntilTruncated(group, past uint64, ids ...uint64) *testNode {
	c.t.Helper()
	if len(ids) == 0 {
		for id := range c.nodes {
			ids = append(ids, id)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		lead := c.leader(group, ids...)
		var holding error
		for _, id := range ids {
			st, err := c.nodes[id].host.Status(group)
			if err != nil {
				c.t.Fatal(err)
			}
			if st.FirstIndex <= past+1 {
				holding = fmt.Errorf("node %d did not truncate past %d: %+v", id, past, st)
				break
			}
		}
		if holding == nil {
			return lead
		}
		if time.Now().After(deadline) {
			c.t.Fatal(holding)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for j := range 20 {
			wg.Go(func() {
				_, err := lead.host.Propose(ctx, group, fmt.Appendf(nil, "fill%d-%d", i, j))
				errs <- err
			})
		}
		wg.Wait()
		cancel()
		close(errs)
		for err := range errs {
			if err != nil && !errors.Is(err, ErrLeadershipLost) && !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrProposalDropped) {
				c.t.Fatalf("fill proposal: %v", err)
			}
		}
	}
}

// stopNode stops a node (detached first) and removes it from the cluster;
// it returns its filesystem for a restart.
func (c *testCluster) stopNode(id uint64) vfs.FS {
	c.t.Helper()
	n := c.nodes[id]
	c.net.Detach(id)
	n.stop(c.t)
	delete(c.nodes, id)
	return n.fs
}

func otherIDs(c *testCluster, except uint64) []uint64 {
	var ids []uint64
	for id := range c.nodes {
		if id != except {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestDelayedMessages: with every message delayed (and so reordered), the
// group still elects, commits and converges.
func TestDelayedMessages(t *testing.T) {
	const g = 1
	c := newCluster(t, 3, 0, g)
	c.net.Delay(func(e Envelope) time.Duration { return time.Duration(e.Msg.GetIndex()%3) * time.Millisecond })
	lead := c.leader(g)
	checkResults(t, proposeAll(t, lead.host, g, "d", 50))
	c.converged(g)
	c.net.Heal()
	checkResults(t, proposeAll(t, c.leader(g).host, g, "e", 10))
	c.converged(g)
}

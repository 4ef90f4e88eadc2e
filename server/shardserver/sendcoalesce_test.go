package shardserver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/raftnode"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// gateRaft answers a Send command with one outcome per entry whose message
// id is the entry's body; each Propose waits for a token on gate. It
// records the entry count of every command.
type gateRaft struct {
	gate chan struct{}
	fail error // whole-command outcome, if set

	mu       sync.Mutex
	commands []int
	entered  int
}

func (r *gateRaft) Propose(ctx context.Context, _ uint64, data []byte) (any, error) {
	var cmd storepb.Command
	if err := proto.Unmarshal(data, &cmd); err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.entered++
	r.mu.Unlock()
	select {
	case <-r.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	entries := cmd.GetSend().GetEntries()
	r.mu.Lock()
	r.commands = append(r.commands, len(entries))
	r.mu.Unlock()
	res := &store.Result{Err: r.fail}
	for _, e := range entries {
		res.Sent = append(res.Sent, store.SendOutcome{MessageID: e.GetBody()})
	}
	return res, nil
}

func (r *gateRaft) inFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.entered
}

func (r *gateRaft) ReadIndex(context.Context, uint64) error { return nil }

func (r *gateRaft) Status(uint64) (raftnode.GroupStatus, error) {
	return raftnode.GroupStatus{}, errors.New("no status")
}

func (r *gateRaft) WaitLeader(context.Context, uint64) (uint64, error) { return 1, nil }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(time.Millisecond)
	}
}

type sendResult struct {
	out []store.SendOutcome
	err error
}

// While a queue's lane has all its commands in flight, later sends wait
// and go together in the next command; every caller gets the outcomes of
// its own entries, in order.
func TestSendsCoalesceWhileLaneBusy(t *testing.T) {
	r := &gateRaft{gate: make(chan struct{})}
	s := New(Config{}, r, nil, 1)
	ctx := context.Background()
	results := make([]chan sendResult, 0)
	send := func(bodies ...string) {
		var es []*storepb.SendEntry
		for _, b := range bodies {
			es = append(es, &storepb.SendEntry{Body: b})
		}
		ch := make(chan sendResult, 1)
		results = append(results, ch)
		go func() {
			out, err := s.sendEntries(ctx, "t", "q", es)
			ch <- sendResult{out, err}
		}()
	}
	// Fill the lane's slots: one single-entry command each.
	for i := range laneProposals {
		send(fmt.Sprintf("first-%d", i))
		waitFor(t, "a command in flight", func() bool { return r.inFlight() == i+1 })
	}
	// These wait, and must all go in one command.
	const waiting = 20
	for i := range waiting {
		if i%5 == 0 {
			send(fmt.Sprintf("w%d-a", i), fmt.Sprintf("w%d-b", i)) // a batch call
		} else {
			send(fmt.Sprintf("w%d", i))
		}
	}
	waitFor(t, "the sends waiting", func() bool {
		s.sends.mu.Lock()
		defer s.sends.mu.Unlock()
		return len(s.sends.lanes[laneKey{"t", "q"}].waiting) == waiting
	})
	// A send to another queue has its own lane: not held up.
	other := make(chan sendResult, 1)
	go func() {
		out, err := s.sendEntries(ctx, "t", "other", []*storepb.SendEntry{{Body: "x"}})
		other <- sendResult{out, err}
	}()
	waitFor(t, "the other queue's command", func() bool { return r.inFlight() == laneProposals+1 })
	close(r.gate)
	for i, ch := range results {
		res := <-ch
		if res.err != nil {
			t.Fatalf("send %d: %v", i, res.err)
		}
		var want []string
		switch {
		case i < laneProposals:
			want = []string{fmt.Sprintf("first-%d", i)}
		case (i-laneProposals)%5 == 0:
			j := i - laneProposals
			want = []string{fmt.Sprintf("w%d-a", j), fmt.Sprintf("w%d-b", j)}
		default:
			want = []string{fmt.Sprintf("w%d", i-laneProposals)}
		}
		if len(res.out) != len(want) {
			t.Fatalf("send %d: %d outcomes, want %d", i, len(res.out), len(want))
		}
		for k, o := range res.out {
			if o.MessageID != want[k] {
				t.Fatalf("send %d entry %d: got %q, want %q", i, k, o.MessageID, want[k])
			}
		}
	}
	if res := <-other; res.err != nil || len(res.out) != 1 || res.out[0].MessageID != "x" {
		t.Fatalf("other queue: %+v", res)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	total, merged := 0, 0
	for _, n := range r.commands {
		total += n
		merged = max(merged, n)
	}
	if want := laneProposals + waiting + waiting/5 + 1; total != want {
		t.Fatalf("%d entries proposed, want %d", total, want)
	}
	if want := waiting + waiting/5; merged != want {
		t.Fatalf("largest command had %d entries, want the %d waiting in one (commands %v)", merged, want, r.commands)
	}
	s.sends.mu.Lock()
	defer s.sends.mu.Unlock()
	if len(s.sends.lanes) != 0 {
		t.Fatalf("idle lanes left: %v", s.sends.lanes)
	}
}

// A whole-command outcome is every merged caller's; a waiting caller whose
// context ends leaves the lane without being sent.
func TestSendsCoalesceErrorsAndCancel(t *testing.T) {
	r := &gateRaft{gate: make(chan struct{}), fail: store.ErrQueueNotFound}
	s := New(Config{}, r, nil, 1)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, laneProposals+2)
	for i := range laneProposals + 2 {
		wg.Go(func() {
			_, err := s.sendEntries(ctx, "t", "q", []*storepb.SendEntry{{Body: "b"}})
			errs <- err
		})
		if i < laneProposals {
			waitFor(t, "a command in flight", func() bool { return r.inFlight() == i+1 })
		}
	}
	waitFor(t, "two sends waiting", func() bool {
		s.sends.mu.Lock()
		defer s.sends.mu.Unlock()
		return len(s.sends.lanes[laneKey{"t", "q"}].waiting) == 2
	})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := s.sendEntries(cctx, "t", "q", []*storepb.SendEntry{{Body: "cancelled"}})
		done <- err
	}()
	waitFor(t, "the third send waiting", func() bool {
		s.sends.mu.Lock()
		defer s.sends.mu.Unlock()
		return len(s.sends.lanes[laneKey{"t", "q"}].waiting) == 3
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled send: %v", err)
	}
	close(r.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, store.ErrQueueNotFound) {
			t.Fatalf("send: %v, want queue not found", err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	total := 0
	for _, n := range r.commands {
		total += n
	}
	if total != laneProposals+2 {
		t.Fatalf("commands %v: want %d entries (the cancelled send not proposed)", r.commands, laneProposals+2)
	}
}

// Many senders, some giving up early, against proposals that finish in
// any order: every answered call gets its own entries' outcomes, and every
// slot comes back (a lane whose slots leaked would stall its queue).
func TestSendsCoalesceStress(t *testing.T) {
	r := &gateRaft{gate: make(chan struct{})}
	close(r.gate) // proposals finish at once, in whatever order they run
	s := New(Config{}, r, nil, 1)
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			for i := range 50 {
				ctx, cancel := context.WithCancel(context.Background())
				if (g+i)%7 == 0 {
					cancel() // gives up at once: may or may not be sent
				}
				queue := []string{"a", "b"}[i%2]
				body := fmt.Sprintf("%d-%d", g, i)
				out, err := s.sendEntries(ctx, "t", queue, []*storepb.SendEntry{{Body: body}, {Body: body + "+"}})
				cancel()
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						t.Errorf("send %s: %v", body, err)
					}
					continue
				}
				if len(out) != 2 || out[0].MessageID != body || out[1].MessageID != body+"+" {
					t.Errorf("send %s: outcomes %+v", body, out)
				}
			}
		})
	}
	wg.Wait()
	s.sends.mu.Lock()
	defer s.sends.mu.Unlock()
	for k, l := range s.sends.lanes {
		t.Errorf("lane %v left with %d slots taken and %d waiting", k, l.busy, len(l.waiting))
	}
}

package store

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// fairRun drives one queue through a deterministic workload, time carried
// by the commands (no clock): every 10 ms step, nine quiet groups each send
// one message per second (staggered) and, with flood, group "flood" sends
// one message per step (100× each quiet group); the messages arrive 5 ms
// into the step. Four consumers each hold one message for 40 ms, then
// delete it, and ask for the next at the step boundary: one message per
// step, less than the 1.09 per step sent with the flood, so the flood
// builds a backlog. It returns the quiet groups' median wait (send to
// receive) and the keys the receives read per message.
func fairRun(t *testing.T, fair, flood bool) (medianMs int64, keysPerMsg float64) {
	h := newHarness(t)
	create := "create q=a vis=1m"
	if fair {
		create += " fair"
	}
	h.run(create)
	const stepMs, workers, holdSteps = 10, 4, 4
	steps := 3000
	if raceEnabled {
		steps = 500 // about 45 quiet messages; the plain run has 270
	}
	type held struct {
		handle []byte
		until  int
	}
	busy := make([]*held, workers)
	var waits []int64
	var read, received uint64
	for step := range steps {
		// Consumers: finish what is done, then ask for more.
		h.now = int64(step * stepMs)
		var done [][]byte
		for w, b := range busy {
			if b != nil && b.until <= step {
				done, busy[w] = append(done, b.handle), nil
			}
		}
		if len(done) > 0 {
			h.apply(&storepb.Command{Op: &storepb.Command_Delete{Delete: &storepb.Delete{Tenant: "t", Queue: "a", ReceiptHandles: done}}})
		}
		for w := range busy {
			if busy[w] != nil {
				continue
			}
			before := h.s.KeysRead()
			r := h.apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{
				Tenant: "t", Queue: "a", MaxMessages: 1, VisibilityTimeoutMs: -1}}})
			if len(r.Received) == 0 {
				break
			}
			read += h.s.KeysRead() - before
			received++
			m := r.Received[0].Message
			busy[w] = &held{r.Received[0].ReceiptHandle, step + holdSteps}
			if group, sent, ok := strings.Cut(m.Body, "@"); ok && group != "flood" {
				at, _ := strconv.ParseInt(sent, 10, 64)
				waits = append(waits, h.now-at)
			}
		}
		// Producers, 5 ms into the step.
		h.now += stepMs / 2
		var es []*storepb.SendEntry
		for g := range 9 {
			if step%100 == g*11 {
				es = append(es, &storepb.SendEntry{Body: fmt.Sprintf("q%d@%d", g, h.now), GroupId: fmt.Sprint("q", g), DelayMs: -1})
			}
		}
		if flood {
			es = append(es, &storepb.SendEntry{Body: fmt.Sprintf("flood@%d", h.now), GroupId: "flood", DelayMs: -1})
		}
		if len(es) > 0 {
			if r := h.apply(sendCmd("a", es...)); r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	if len(waits) < steps/20 {
		t.Fatalf("only %d quiet messages received", len(waits))
	}
	slices.Sort(waits)
	return waits[len(waits)/2], float64(read) / float64(received)
}

// TestFairQueueFlood is issue 18's "done when" for fairness: one group
// sending 100× the messages of nine others; on a fair queue the others'
// median wait stays within 2× of what they see with the flood absent. The
// same flood on a queue without fairness makes them wait behind its
// backlog (the contrast shows the workload does build one). A fair
// receive reads O(1) keys per message.
func TestFairQueueFlood(t *testing.T) {
	calm, _ := fairRun(t, true, false)
	fairFlood, keys := fairRun(t, true, true)
	plainFlood, _ := fairRun(t, false, true)
	t.Logf("quiet groups' median wait: %d ms without the flood, %d ms with it on a fair queue, %d ms on a plain queue; fair receives read %.1f keys per message",
		calm, fairFlood, plainFlood, keys)
	if fairFlood > 2*calm {
		t.Errorf("fair queue: median wait %d ms with the flood, %d ms without: want within 2x", fairFlood, calm)
	}
	if plainFlood < 10*calm {
		t.Errorf("plain queue: median wait %d ms with the flood, %d ms without: the workload builds no backlog", plainFlood, calm)
	}
	if keys > 20 {
		t.Errorf("fair receives read %.1f keys per message", keys)
	}
}

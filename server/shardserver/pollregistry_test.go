package shardserver

import "testing"

func released(w *pollWaiter) bool {
	select {
	case <-w.ch:
		return true
	default:
		return false
	}
}

// Issue 15.14: a wake for one message releases one waiter (the longest
// waiting), not every waiter of the queue; filtered waiters are all
// released (the message may match none of the others).
func TestPollRegistryWakesOneWaiterPerMessage(t *testing.T) {
	r := newPollRegistry()
	var ws []*pollWaiter
	for range 5 {
		ws = append(ws, r.watch("t", "q", false))
	}
	f := r.watch("t", "q", true)
	other := r.watch("t", "other", false)
	r.wakeN("t", "q", 1)
	for i, w := range ws {
		if got := released(w); got != (i == 0) {
			t.Fatalf("after a wake for 1 message, waiter %d released=%v", i, got)
		}
	}
	if !released(f) || released(other) {
		t.Fatalf("filtered waiter released=%v (want true), other queue's released=%v (want false)", released(f), released(other))
	}
	if !r.leave("t", "q", ws[0]) || r.leave("t", "q", ws[1]) {
		t.Fatal("leave must report whether the waiter was released")
	}
	if got := r.count(); got != 4 {
		t.Fatalf("%d waiters left, want 4 (3 of q, 1 of other)", got)
	}
	r.wakeN("t", "q", 2)
	if !released(ws[2]) || !released(ws[3]) || released(ws[4]) {
		t.Fatal("a wake for 2 messages must release the next 2 waiters")
	}
	r.wake("t", "q")
	if !released(ws[4]) {
		t.Fatal("wake releases every waiter")
	}
}

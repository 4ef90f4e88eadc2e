package chaos

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// outcome of one call, as the client saw it.
type outcome int

const (
	ok      outcome = iota
	failed          // certainly not applied (a definite refusal)
	unknown         // may or may not have been applied (timeout, lost connection, no quorum)
)

func (o outcome) String() string { return [...]string{"ok", "fail", "unknown"}[o] }

// recvEvent is one message returned by a receive that answered.
type recvEvent struct {
	id, body, queue string
	dlSource        string // dead_letter_source
	count           int32
	visMs           int64     // the lease asked for
	sentAt          time.Time // server time, ms
	firstReceivedAt time.Time // server time, ms: the time of this receive when count == 1
	handle          string
	invoked, done   time.Time // client time (the same host clock as the servers')
	drain           bool
}

// settleEvent is one delete or visibility change of one receipt handle.
type settleEvent struct {
	id, queue     string
	count         int32
	change        bool  // a visibility change, else a delete
	visMs         int64 // of a change
	outcome       outcome
	reason        string // of a refusal
	invoked, done time.Time
}

// sendAttempt is what the history knows of one body.
type sendAttempt struct {
	queue   string
	delayMs int64
	best    outcome // ok > unknown > failed over every attempt
	id      string  // message id of an acknowledged attempt
	invoked time.Time
}

// history is every operation the workload made, with its outcome.
type history struct {
	mu      sync.Mutex
	sends   map[string]*sendAttempt // by body
	dupIDs  []string                // a body acknowledged under two ids
	recvs   []recvEvent
	settles []settleEvent
	ops     map[string]int // "<op> <outcome>" counts
}

func newHistory() *history {
	return &history{sends: map[string]*sendAttempt{}, ops: map[string]int{}}
}

func (h *history) count(op string, o outcome) {
	h.mu.Lock()
	h.ops[op+" "+o.String()]++
	h.mu.Unlock()
}

// invokeSend records a send attempt of body before it is made.
func (h *history) invokeSend(body, queue string, delayMs int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sends[body] == nil {
		h.sends[body] = &sendAttempt{queue: queue, delayMs: delayMs, best: failed, invoked: time.Now()}
	}
}

// sendDone records the outcome of one attempt for body.
func (h *history) sendDone(body string, o outcome, id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sends[body]
	h.ops["send "+o.String()]++
	switch o {
	case ok:
		if s.id != "" && s.id != id {
			h.dupIDs = append(h.dupIDs, fmt.Sprintf("duplicate send: body %s acknowledged as %s and as %s (same idempotency key)", body, s.id, id))
		}
		s.best, s.id = ok, id
	case unknown:
		if s.best == failed {
			s.best = unknown
		}
	}
}

func (h *history) addRecvs(evs []recvEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recvs = append(h.recvs, evs...)
}

func (h *history) addSettle(e settleEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.settles = append(h.settles, e)
}

// acknowledged returns the ids of acknowledged sends that no delete may
// have removed (no delete of them was accepted or left unknown): every
// replica must hold them, in their queue or in the dead-letter path.
func (h *history) undeleted() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	maybe := map[string]bool{}
	for _, e := range h.settles {
		if !e.change && e.outcome != failed {
			maybe[e.id] = true
		}
	}
	out := map[string]string{}
	for body, s := range h.sends {
		if s.best == ok && !maybe[s.id] {
			out[s.id] = body
		}
	}
	return out
}

// checkConfig is what the checker knows of the queues.
type checkConfig struct {
	mainQueue, deadQueue string
	maxReceives          int32 // of mainQueue; 0: no dead-letter queue
	drainEnd             time.Time
	retention            time.Duration   // of every queue
	topicQueues          map[string]bool // subscribed queues: their copies were published, not sent
}

// checkResult is the checker's verdict over one history.
type checkResult struct {
	violations []string
	counts     map[string]int // operation and fate counts
	dupReasons map[string]int // redeliveries by explanation
	notes      []string       // details of unexplained redeliveries
}

// leaseSlack absorbs the millisecond truncation of server times.
const leaseSlack = 2 * time.Millisecond

// check reads the whole history.
func (h *history) check(cfg checkConfig) checkResult {
	h.mu.Lock()
	defer h.mu.Unlock()
	res := checkResult{counts: map[string]int{}, dupReasons: map[string]int{}}
	for k, v := range h.ops {
		res.counts[k] = v
	}
	bad := func(format string, args ...any) {
		res.violations = append(res.violations, fmt.Sprintf(format, args...))
	}
	res.violations = append(res.violations, h.dupIDs...)

	// No phantom: every received body was sent, always under one id, the
	// acknowledged one.
	idOfBody := map[string]string{}
	for _, r := range h.recvs {
		s := h.sends[r.body]
		if s == nil && cfg.topicQueues[r.queue] {
			continue // a fan-out copy: the topic checker's
		}
		if s == nil {
			bad("phantom: received %s with body %q that was never sent", r.id, r.body)
			continue
		}
		if prev, seen := idOfBody[r.body]; seen && prev != r.id {
			bad("body %q stored twice: messages %s and %s", r.body, prev, r.id)
		}
		idOfBody[r.body] = r.id
		if s.id != "" && s.id != r.id {
			bad("body %q acknowledged as %s but received as %s", r.body, s.id, r.id)
		}
	}

	type mq struct{ id, queue string }
	byMsg := map[mq][]recvEvent{}
	drained := map[string]bool{}
	firstDLQ := map[string]time.Time{} // id -> earliest completion of a receive from the DLQ
	for _, r := range h.recvs {
		byMsg[mq{r.id, r.queue}] = append(byMsg[mq{r.id, r.queue}], r)
		res.counts["messages received"]++
		if r.drain {
			drained[r.id] = true
			res.counts["received by the drain"]++
		}
		if cfg.maxReceives > 0 && r.queue == cfg.deadQueue {
			if r.dlSource != cfg.mainQueue {
				bad("%s: in the dead-letter queue with dead_letter_source %q, want %q", r.id, r.dlSource, cfg.mainQueue)
			}
			if t, seen := firstDLQ[r.id]; !seen || r.done.Before(t) {
				firstDLQ[r.id] = r.done
			}
		}
		if cfg.maxReceives > 0 && r.queue == cfg.mainQueue && r.count > cfg.maxReceives {
			bad("%s: received from %s with receive count %d beyond max_receive_count %d (should have been dead-lettered)", r.id, r.queue, r.count, cfg.maxReceives)
		}
	}
	changed := map[mq]map[int32]bool{}           // visibility changes that may have applied, by handle count
	byHandle := map[mq]map[int32][]settleEvent{} // settles by message, queue and handle count
	acceptedDeletes := map[mq][]settleEvent{}
	maybeDeleted := map[string]bool{}
	for _, e := range h.settles {
		k := mq{e.id, e.queue}
		kind := "delete"
		if e.change {
			kind = "change visibility"
		}
		label := kind + " " + e.outcome.String()
		if e.outcome == failed {
			label = kind + " refused (" + e.reason + ")"
		}
		res.counts[label]++
		if e.change && e.outcome != failed {
			if changed[k] == nil {
				changed[k] = map[int32]bool{}
			}
			changed[k][e.count] = true
		}
		if byHandle[k] == nil {
			byHandle[k] = map[int32][]settleEvent{}
		}
		byHandle[k][e.count] = append(byHandle[k][e.count], e)
		if !e.change {
			switch e.outcome {
			case ok:
				acceptedDeletes[k] = append(acceptedDeletes[k], e)
				maybeDeleted[e.id] = true
			case unknown:
				maybeDeleted[e.id] = true
			}
		}
	}

	for k, evs := range byMsg {
		sort.Slice(evs, func(i, j int) bool { return evs[i].count < evs[j].count })
		for i, r := range evs {
			if i > 0 && evs[i-1].count == r.count {
				bad("%s: received twice from %s with receive count %d", k.id, k.queue, r.count)
				continue
			}
			// Never before its delay (server times of the same leader
			// clock: sent_at and the first receive's time).
			if s := h.sends[r.body]; s != nil && r.count == 1 && k.queue == s.queue && s.delayMs > 0 {
				if due := r.sentAt.Add(time.Duration(s.delayMs) * time.Millisecond); r.firstReceivedAt.Before(due) {
					bad("%s: first received at %s, before its delay ended (sent %s + %d ms)", k.id, ms(r.firstReceivedAt), ms(r.sentAt), s.delayMs)
				}
			}
			// Never while the previous lease was valid, unless its visibility
			// was changed: the next receive happened no later than its call
			// returned.
			if i > 0 {
				p := evs[i-1]
				if p.count == r.count-1 && !changed[k][p.count] {
					if leaseEnd := leaseStart(p).Add(time.Duration(p.visMs) * time.Millisecond); r.done.Add(leaseSlack).Before(leaseEnd) {
						bad("%s: receive %d from %s returned at %s, while lease %d ran until at least %s", k.id, r.count, k.queue, ms(r.done), p.count, ms(leaseEnd))
					}
				}
			}
			// A dead-lettered message keeps its receive count: its first
			// delivery from the DLQ (count max+1) is not a redelivery there,
			// but it comes only after the last lease in the source ended.
			if cfg.maxReceives > 0 && k.queue == cfg.deadQueue && i == 0 {
				for _, p := range byMsg[mq{k.id, cfg.mainQueue}] {
					if p.count == r.count-1 && !changed[mq{k.id, cfg.mainQueue}][p.count] {
						if leaseEnd := leaseStart(p).Add(time.Duration(p.visMs) * time.Millisecond); r.done.Add(leaseSlack).Before(leaseEnd) {
							bad("%s: received from the DLQ at %s, while its lease %d in %s ran until at least %s", k.id, ms(r.done), p.count, cfg.mainQueue, ms(leaseEnd))
						}
					}
				}
				continue
			}
			if i > 0 || r.count > 1 {
				res.counts["redeliveries"]++
				// Moved to the dead-letter queue: received from it later.
				var dl int32
				if cfg.maxReceives > 0 && k.queue == cfg.mainQueue && !firstDLQ[k.id].IsZero() {
					dl = cfg.maxReceives
				}
				why := explain(evs, i, byHandle[k], dl)
				res.dupReasons[why]++
				if strings.HasPrefix(why, "unexplained") {
					note := fmt.Sprintf("%s: receive %d from %s [%s, %s]: %s; settles of handle %d: %s; of handle %d: %s; first received from the DLQ: %s",
						k.id, r.count, k.queue, ms(r.invoked), ms(r.done), why, r.count-1, fmtSettles(byHandle[k][r.count-1]),
						r.count, fmtSettles(byHandle[k][r.count]), fmtTime(firstDLQ[k.id]))
					res.notes = append(res.notes, note)
					// No order of the two calls explains it: before the delete
					// the receive would have found no message, after it the
					// delete would have been refused as stale, and nothing
					// else (a newer handle's delete, a dead-letter move)
					// removed the message in between.
					if firstDLQ[k.id].IsZero() {
						bad("delete with a superseded handle accepted (or a deleted message received): %s", note)
					}
				}
			}
		}
	}

	// A delete accepted in a queue removes the message from it: no later
	// receive from that queue may return it. A delete with a superseded
	// handle (a receive with a higher count had returned before it was
	// invoked) is accepted only if the message was already gone.
	for k, ds := range acceptedDeletes {
		for _, d := range ds {
			for _, r := range byMsg[k] {
				if r.invoked.After(d.done) {
					bad("%s: received from %s (count %d) after a delete with handle %d was accepted", k.id, k.queue, r.count, d.count)
				}
			}
			superseded := false
			for _, r := range byMsg[k] {
				if r.count > d.count && r.done.Before(d.invoked) {
					superseded = true
				}
			}
			if !superseded {
				continue
			}
			res.counts["deletes with a superseded handle accepted (message already gone)"]++
			for _, e := range h.settles {
				if e.id == k.id && e.queue == k.queue && e.change && e.outcome == ok && e.invoked.After(d.done) {
					bad("%s: delete with superseded handle %d accepted while the message still existed (a visibility change was accepted after it)", k.id, d.count)
				}
			}
		}
	}
	// No message in both queues: once received from the dead-letter queue
	// it is never received from its source again.
	for id, t := range firstDLQ {
		for _, r := range byMsg[mq{id, cfg.mainQueue}] {
			if r.invoked.After(t) {
				bad("%s: received from %s (count %d) after it was received from the dead-letter queue", id, cfg.mainQueue, r.count)
			}
		}
	}

	// No acknowledged send lost; account for each acknowledged message.
	for body, s := range h.sends {
		switch s.best {
		case unknown:
			res.counts["sends unknown (never acknowledged)"]++
			continue
		case failed:
			res.counts["sends failed"]++
			continue
		}
		res.counts["sends acknowledged"]++
		inDLQ := !firstDLQ[s.id].IsZero()
		switch {
		case drained[s.id] && inDLQ:
			res.counts["fate: dead-lettered"]++
		case drained[s.id]:
			res.counts["fate: remaining at the end (drained)"]++
		case maybeDeleted[s.id] && inDLQ:
			res.counts["fate: dead-lettered"]++
		case maybeDeleted[s.id]:
			res.counts["fate: deleted"]++
		case cfg.retention > 0 && !cfg.drainEnd.Before(s.invoked.Add(cfg.retention)):
			res.counts["fate: expired"]++
		default:
			received := len(byMsg[mq{s.id, s.queue}]) > 0
			bad("lost: acknowledged send %s (%s) never deleted and not found by the drain (received before: %v, in DLQ: %v)", s.id, body, received, inDLQ)
		}
	}
	if n := len(res.violations); n > 30 {
		res.violations = append(res.violations[:30], fmt.Sprintf("... and %d more", n-30))
	}
	return res
}

// leaseStart is the earliest the lease of receive p can have begun: the
// server's time of the receive, which is first_received_at for a first
// receive, and otherwise no earlier than the call's start (servers and
// client share the host's clock).
func leaseStart(p recvEvent) time.Time {
	if p.count == 1 {
		return p.firstReceivedAt
	}
	return p.invoked
}

// explain names why receive i of one message was a redelivery, from what
// became of the previous lease before the redelivery returned. deadAt is
// the queue's max_receive_count when the message was later received from
// the dead-letter queue, else 0.
func explain(evs []recvEvent, i int, settles map[int32][]settleEvent, deadAt int32) string {
	r := evs[i]
	if i == 0 || evs[i-1].count != r.count-1 {
		return "earlier receive's answer lost (outcome unknown)"
	}
	var changed, deleteUnknown, deleteLate, deleteRefused, deleteAccepted, deadFirst bool
	for _, e := range settles[r.count-1] {
		before := e.invoked.Before(r.done)
		switch {
		case e.change && e.outcome != failed && before:
			changed = true
		case e.change:
		case e.outcome == unknown && before:
			deleteUnknown = true
		case e.outcome == ok && before:
			deleteAccepted = true
			deadFirst = deadFirst || deadLetteredBefore(evs, settles, deadAt, e)
		case e.outcome == failed && before:
			deleteRefused = true
		default: // a delete made after the redelivery returned
			deleteLate = true
		}
	}
	// An accepted delete of the previous handle is consistent with the
	// redelivery only if it came after a delete of a newer handle had
	// removed the message (deleting a gone message succeeds).
	newerDeleted := false
	for c, es := range settles {
		for _, e := range es {
			if c > r.count-1 && !e.change && e.outcome != failed {
				newerDeleted = true
			}
		}
	}
	switch {
	case changed:
		return "visibility changed (nack)"
	case deleteAccepted && newerDeleted:
		return "lease expired before the delete (slow consumer; the message was gone when it came)"
	case deleteAccepted && deadFirst:
		return "dead-lettered before the delete (receives used up, lease ended; the message was gone when it came)"
	case deleteAccepted:
		return "unexplained: redelivered although a delete with the previous handle was accepted"
	case deleteUnknown:
		return "delete outcome unknown"
	case deleteRefused, deleteLate:
		return "lease expired before the delete (slow consumer)"
	case r.drain:
		return "lease expired (consumer gave up), redelivered to the drain"
	default:
		return "lease expired (consumer gave up)"
	}
}

// deadLetteredBefore reports whether the accepted delete d of an earlier
// handle can have come after the message was moved to the dead-letter queue
// (deleting a gone message succeeds): the message's last receive from the
// queue used up its receives (count >= deadAt; the workload never releases)
// and began before d returned, and that lease can have ended before d
// returned — by its own length, or by a visibility change of its handle
// that may have applied (a nack) — so that a receive could move it before
// d applied. Without a later receive from the dead-letter queue (deadAt 0)
// nothing is excused.
func deadLetteredBefore(evs []recvEvent, settles map[int32][]settleEvent, deadAt int32, d settleEvent) bool {
	last := evs[len(evs)-1]
	if deadAt == 0 || last.count < deadAt || !last.invoked.Before(d.done) {
		return false
	}
	if !d.done.Add(leaseSlack).Before(leaseStart(last).Add(time.Duration(last.visMs) * time.Millisecond)) {
		return true
	}
	for _, e := range settles[last.count] {
		if e.change && e.outcome != failed && e.invoked.Before(d.done) &&
			!d.done.Add(leaseSlack).Before(e.invoked.Add(time.Duration(e.visMs)*time.Millisecond)) {
			return true
		}
	}
	return false
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return ms(t)
}

func fmtSettles(es []settleEvent) string {
	var parts []string
	for _, e := range es {
		kind := "delete"
		if e.change {
			kind = fmt.Sprintf("change(%dms)", e.visMs)
		}
		parts = append(parts, fmt.Sprintf("%s %s%s [%s, %s]", kind, e.outcome, map[bool]string{true: " " + e.reason, false: ""}[e.reason != ""], ms(e.invoked), ms(e.done)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func ms(t time.Time) string { return t.UTC().Format("15:04:05.000") }

func fmtCounts(m map[string]int) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	for _, k := range ks {
		fmt.Fprintf(&b, "%s=%d; ", k, m[k])
	}
	return strings.TrimSuffix(b.String(), "; ")
}

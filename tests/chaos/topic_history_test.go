package chaos

import (
	"fmt"
	"slices"
	"sort"
	"sync"
)

// The topic part of a schedule (issue 20): publishes with idempotency keys,
// fan-out into subscribed queues, and one stream group reading every
// partition and committing its offsets.

// pubAttempt is what the history knows of one published body.
type pubAttempt struct {
	key       string // partition key
	tags      []string
	best      outcome
	id        string // message id of an acknowledged attempt
	partition int32
	offset    int64
}

// topicSub is one subscription as the checker knows it: a queue and the
// tag its filter requires ("" = every message).
type topicSub struct {
	queue string
	tag   string
	fifo  bool
}

func (s topicSub) wants(tags []string) bool { return s.tag == "" || slices.Contains(tags, s.tag) }

// groupOp is one step of a group's reader on one partition, in the
// reader's order: a read that answered, a commit, or a crash (the reader
// dropped what it read without committing).
type groupOp struct {
	kind    string // "read", "commit", "crash"
	start   int64  // read: offset of its first message (next_offset when it returned none)
	msgs    []topicRead
	next    int64 // read: next_offset
	end     int64 // read: end_offset
	offset  int64 // commit
	outcome outcome
}

// topicRead is one message as a group read returned it.
type topicRead struct {
	offset int64
	id     string
	body   string
	key    string
	tags   []string
}

type partKey struct {
	group     string
	partition int32
}

// topicHistory is every topic operation of the workload.
type topicHistory struct {
	mu      sync.Mutex
	pubs    map[string]*pubAttempt // by body
	dupIDs  []string
	groupOp map[partKey][]groupOp
}

func newTopicHistory() *topicHistory {
	return &topicHistory{pubs: map[string]*pubAttempt{}, groupOp: map[partKey][]groupOp{}}
}

func (h *topicHistory) invokePublish(body, key string, tags []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pubs[body] == nil {
		h.pubs[body] = &pubAttempt{key: key, tags: tags, best: failed}
	}
}

// publishDone records the outcome of one attempt for body.
func (h *topicHistory) publishDone(body string, o outcome, id string, partition int32, offset int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.pubs[body]
	switch o {
	case ok:
		if p.best == ok && (p.id != id || p.partition != partition || p.offset != offset) {
			h.dupIDs = append(h.dupIDs, fmt.Sprintf("duplicate publish: body %s acknowledged as %s (%d/%d) and as %s (%d/%d) (same idempotency key)",
				body, p.id, p.partition, p.offset, id, partition, offset))
		}
		p.best, p.id, p.partition, p.offset = ok, id, partition, offset
	case unknown:
		if p.best == failed {
			p.best = unknown
		}
	}
}

func (h *topicHistory) addGroupOp(k partKey, op groupOp) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.groupOp[k] = append(h.groupOp[k], op)
}

// last is the latest step of a group's reader on a partition.
func (h *topicHistory) last(k partKey) groupOp {
	h.mu.Lock()
	defer h.mu.Unlock()
	ops := h.groupOp[k]
	if len(ops) == 0 {
		return groupOp{}
	}
	return ops[len(ops)-1]
}

// topicCheck is what the topic checker knows of the topic.
type topicCheck struct {
	partitions int32
	groups     []string
	subs       []topicSub
}

// check verifies the topic's history against the queue receives recvs
// (the drain has read every group to the end and emptied every queue):
//   - every acknowledged publish is in its partition's log at the offset
//     and under the id it was acknowledged with, and no failed one is;
//   - each group read every partition from 0 to its end in offset order:
//     every read starts at an offset the group may have committed (so a
//     message is read again only after a crash before a commit, or a
//     commit whose outcome was unknown), returns consecutive offsets, and
//     the same message at an offset as every other read;
//   - every message in a log reached every subscribed queue whose filter
//     matches, exactly once (one message of its id, never received twice
//     with one receive count), and no other queue; a FIFO queue first
//     received the messages of one partition key in offset order.
func (h *topicHistory) check(cfg topicCheck, recvs []recvEvent, counts map[string]int) (violations []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	bad := func(format string, args ...any) { violations = append(violations, fmt.Sprintf(format, args...)) }
	violations = append(violations, h.dupIDs...)

	type loc struct {
		partition int32
		offset    int64
	}
	logAt := map[loc]topicRead{}   // what the groups read at each offset
	where := map[string]loc{}      // message id -> its place in the log
	ends := map[int32]int64{}      // partition -> its end as the drain's last read saw it
	for _, g := range cfg.groups { // each group on each partition
		for p := range cfg.partitions {
			ops := h.groupOp[partKey{g, p}]
			may := map[int64]bool{0: true} // offsets the group may have committed
			covered := map[int64]bool{}
			next := int64(0) // offset after the furthest message read
			for i, op := range ops {
				switch op.kind {
				case "commit":
					switch op.outcome {
					case ok:
						may = map[int64]bool{op.offset: true}
						counts["group commits ok"]++
					case unknown:
						may[op.offset] = true
						counts["group commits unknown"]++
					default:
						counts["group commits refused"]++
					}
					continue
				case "crash":
					counts["group readers crashed before a commit"]++
					continue
				}
				counts["group reads"]++
				if !may[op.start] {
					bad("group %s partition %d: read %d started at offset %d, which the group never committed (may have: %v)", g, p, i, op.start, keysOf(may))
				}
				if op.start < next && len(op.msgs) > 0 {
					counts["group messages read again (crash before a commit)"] += int(min(next, op.next) - op.start)
				}
				want := op.start
				for _, m := range op.msgs {
					if m.offset != want {
						bad("group %s partition %d: read %d returned offset %d where %d was next (a gap or disorder)", g, p, i, m.offset, want)
					}
					want = m.offset + 1
					covered[m.offset] = true
					at := loc{p, m.offset}
					if prev, seen := logAt[at]; seen && (prev.id != m.id || prev.body != m.body) {
						bad("partition %d offset %d: read as %s (%s) and as %s (%s)", p, m.offset, prev.id, prev.body, m.id, m.body)
					}
					logAt[at] = m
					if prev, seen := where[m.id]; seen && prev != at {
						bad("message %s read at %d/%d and at %d/%d", m.id, prev.partition, prev.offset, p, m.offset)
					}
					where[m.id] = at
				}
				if op.next != want {
					bad("group %s partition %d: read %d answered next_offset %d after offset %d", g, p, i, op.next, want-1)
				}
				next = max(next, op.next)
				ends[p] = max(ends[p], op.end)
			}
			for o := range ends[p] {
				if !covered[o] {
					bad("group %s partition %d: offset %d (below the end %d) never read", g, p, o, ends[p])
					break
				}
			}
		}
	}

	// Publishes: acknowledged ones in the log as acknowledged, failed ones
	// nowhere.
	inLog := map[string]loc{} // body -> place
	for at, m := range logAt {
		if prev, seen := inLog[m.body]; seen {
			bad("body %s published twice: at %d/%d and at %d/%d", m.body, prev.partition, prev.offset, at.partition, at.offset)
		}
		inLog[m.body] = at
		if h.pubs[m.body] == nil {
			bad("phantom: %s (%s) read at %d/%d but never published", m.id, m.body, at.partition, at.offset)
		}
	}
	for body, p := range h.pubs {
		at, found := inLog[body]
		switch p.best {
		case ok:
			counts["publishes acknowledged"]++
			if got := logAt[loc{p.partition, p.offset}]; got.id != p.id || got.body != body {
				bad("lost: acknowledged publish %s (%s) at %d/%d, but the group read %q (%s) there", p.id, body, p.partition, p.offset, got.id, got.body)
			}
		case unknown:
			counts["publishes unknown"]++
			if found {
				counts["publishes unknown, applied"]++
			}
		case failed:
			counts["publishes failed"]++
			if found {
				bad("publish of %s was refused but the message is at %d/%d", body, at.partition, at.offset)
			}
		}
	}

	// Fan-out: every message of the log in every matching queue, once.
	isSub := map[string]topicSub{}
	for _, s := range cfg.subs {
		isSub[s.queue] = s
	}
	type qm struct{ queue, id string }
	got := map[qm]bool{}
	lastOff := map[qm]int64{} // FIFO: (queue, partition key) -> offset of the last first receive
	for _, r := range recvs {
		s, sub := isSub[r.queue]
		if !sub {
			continue
		}
		counts["fan-out copies received"]++
		got[qm{r.queue, r.id}] = true
		at, found := where[r.id]
		if !found {
			bad("%s received from %s (body %s), but no group read it in the topic", r.id, r.queue, r.body)
			continue
		}
		m := logAt[at]
		if m.body != r.body {
			bad("%s received from %s with body %q, published as %q", r.id, r.queue, r.body, m.body)
		}
		if !s.wants(m.tags) {
			bad("%s (tags %v) received from %s, whose filter wants %q", r.id, m.tags, r.queue, s.tag)
		}
		if s.fifo && r.count == 1 && m.key != "" {
			k := qm{r.queue, m.key}
			if prev, seen := lastOff[k]; seen && at.offset < prev {
				bad("FIFO %s: %s (key %s, offset %d) first received after offset %d of the same key", r.queue, r.id, m.key, at.offset, prev)
			}
			lastOff[k] = at.offset
		}
	}
	for at, m := range logAt {
		for _, s := range cfg.subs {
			if s.wants(m.tags) && !got[qm{s.queue, m.id}] {
				bad("fan-out lost: %s (%s, tags %v, at %d/%d) never reached %s", m.id, m.body, m.tags, at.partition, at.offset, s.queue)
			}
		}
	}
	counts["topic messages in the logs"] = len(logAt)
	return violations
}

func keysOf(m map[int64]bool) []int64 {
	var out []int64
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

package chaos

import (
	"strings"
	"testing"
)

// The topic checker must find what it is meant to find: each case breaks
// one promise of a small clean history (which must pass).
func TestTopicCheckerFindsAnomalies(t *testing.T) {
	cfg := topicCheck{partitions: 1, groups: []string{"g"}, subs: []topicSub{{queue: "red", tag: "red"}, {queue: "f.fifo", fifo: true}}}
	k := partKey{"g", 0}
	m0 := topicRead{offset: 0, id: "m0", body: "b0", key: "k", tags: []string{"red"}}
	m1 := topicRead{offset: 1, id: "m1", body: "b1", key: "k"}
	m2 := topicRead{offset: 2, id: "m2", body: "b2", key: "k", tags: []string{"red"}}
	// base: three publishes acknowledged; the group reads 0-1, commits 2,
	// reads 2, crashes, reads 2 again, commits 3; the copies arrive.
	base := func() (*topicHistory, []recvEvent) {
		h := newTopicHistory()
		for _, m := range []topicRead{m0, m1, m2} {
			h.invokePublish(m.body, m.key, m.tags)
			h.publishDone(m.body, ok, m.id, 0, m.offset)
		}
		h.addGroupOp(k, groupOp{kind: "read", start: 0, msgs: []topicRead{m0, m1}, next: 2, end: 3})
		h.addGroupOp(k, groupOp{kind: "commit", offset: 2, outcome: ok})
		h.addGroupOp(k, groupOp{kind: "read", start: 2, msgs: []topicRead{m2}, next: 3, end: 3})
		h.addGroupOp(k, groupOp{kind: "crash"})
		h.addGroupOp(k, groupOp{kind: "read", start: 2, msgs: []topicRead{m2}, next: 3, end: 3})
		h.addGroupOp(k, groupOp{kind: "commit", offset: 3, outcome: ok})
		h.addGroupOp(k, groupOp{kind: "read", start: 3, next: 3, end: 3})
		recvs := []recvEvent{
			{id: "m0", body: "b0", queue: "red", count: 1}, {id: "m2", body: "b2", queue: "red", count: 1},
			{id: "m0", body: "b0", queue: "f.fifo", count: 1}, {id: "m1", body: "b1", queue: "f.fifo", count: 1},
			{id: "m2", body: "b2", queue: "f.fifo", count: 1},
		}
		return h, recvs
	}
	cases := []struct {
		name   string
		mutate func(h *topicHistory, recvs []recvEvent) []recvEvent
		want   string
	}{
		{"clean", func(_ *topicHistory, r []recvEvent) []recvEvent { return r }, ""},
		{"fan-out lost", func(_ *topicHistory, r []recvEvent) []recvEvent { return r[1:] }, "fan-out lost: m0"},
		{"filter ignored", func(_ *topicHistory, r []recvEvent) []recvEvent {
			return append(r, recvEvent{id: "m1", body: "b1", queue: "red", count: 1})
		}, "whose filter wants"},
		{"FIFO order", func(_ *topicHistory, r []recvEvent) []recvEvent {
			r[3], r[4] = r[4], r[3]
			return r
		}, "first received after offset 2"},
		{"acknowledged publish lost", func(h *topicHistory, r []recvEvent) []recvEvent {
			h.invokePublish("b9", "", nil)
			h.publishDone("b9", ok, "m9", 0, 3)
			return r
		}, "lost: acknowledged publish m9"},
		{"duplicate publish", func(h *topicHistory, r []recvEvent) []recvEvent {
			h.publishDone("b1", ok, "m7", 0, 5)
			return r
		}, "duplicate publish"},
		{"refused publish stored", func(h *topicHistory, r []recvEvent) []recvEvent {
			h.pubs["b1"].best = failed
			return r
		}, "was refused but the message is at 0/1"},
		{"re-read without a crash", func(h *topicHistory, r []recvEvent) []recvEvent {
			h.groupOp[k] = append(h.groupOp[k], groupOp{kind: "read", start: 2, msgs: []topicRead{m2}, next: 3, end: 3})
			return r
		}, "which the group never committed"},
		{"gap in a read", func(h *topicHistory, r []recvEvent) []recvEvent {
			h.groupOp[k][0].msgs = []topicRead{m0}
			h.groupOp[k][0].next = 2
			return append(r[:3], r[4:]...)
		}, "offset 1 (below the end 3) never read"},
		{"offset read as two messages", func(h *topicHistory, r []recvEvent) []recvEvent {
			h.groupOp[k][4].msgs = []topicRead{{offset: 2, id: "m8", body: "b8", key: "k"}}
			return r
		}, "read as m2 (b2) and as m8 (b8)"},
		{"phantom copy", func(_ *topicHistory, r []recvEvent) []recvEvent {
			return append(r, recvEvent{id: "m5", body: "b5", queue: "f.fifo", count: 1})
		}, "no group read it"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, recvs := base()
			recvs = tc.mutate(h, recvs)
			all := strings.Join(h.check(cfg, recvs, map[string]int{}), "\n")
			switch {
			case tc.want == "" && all != "":
				t.Fatalf("want no violation, got:\n%s", all)
			case tc.want != "" && !strings.Contains(all, tc.want):
				t.Fatalf("want a violation containing %q, got:\n%s", tc.want, all)
			}
		})
	}
}

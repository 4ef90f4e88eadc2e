package store

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of store/testdata scripts")

// TestScripts runs store/testdata/*.txt, data-driven scripts in the style of
// etcd-io/raft's interaction tests. Each block is a command line, "----",
// and the expected output up to a blank line; lines starting with '#'
// between blocks are comments. Run with -rewrite to regenerate the outputs.
//
// Times are durations since the Unix epoch ("now=10s"); a command without
// now= reuses the previous time. Messages print as #n (order of first
// appearance of their id), receipt handles as hN (order of issue).
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runScript(t, f) })
	}
}

func runScript(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	lineNo := 0
	next := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		lineNo++
		return sc.Text(), true
	}
	for {
		line, ok := next()
		if !ok {
			break
		}
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			out.WriteString(line + "\n")
			continue
		}
		cmdLine := lineNo
		if sep, ok := next(); !ok || sep != "----" {
			t.Fatalf("%s:%d: want ---- after %q", path, cmdLine, line)
		}
		var want []string
		for {
			l, ok := next()
			if !ok || l == "" {
				break
			}
			want = append(want, l)
		}
		got := strings.TrimRight(h.run(line), "\n")
		if got == "" {
			got = "ok"
		}
		out.WriteString(line + "\n----\n" + got + "\n\n")
		if !*rewrite && got != strings.Join(want, "\n") {
			t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, cmdLine, line, got, strings.Join(want, "\n"))
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, append(bytes.TrimRight(out.Bytes(), "\n"), '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type harness struct {
	t       testing.TB
	db      *pebble.DB
	s       *Store
	now     int64
	index   uint64
	ids     map[string]int
	handles map[string][]byte
	nHandle int
	relayed map[uint64]*storepb.OutboxEntry // entries the relay delivered, by id
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// openMem is an in-memory Pebble that fails the test on any misuse report
// (a single delete that broke the set-once rule; see openWatched).
func openMem(t testing.TB) *pebble.DB {
	db, _ := openWatched(t, &pebble.Options{})
	return db
}

func newHarness(t testing.TB) *harness {
	db := openMem(t)
	return &harness{t: t, db: db, s: New(db, 1), ids: map[string]int{}, handles: map[string][]byte{}, relayed: map[uint64]*storepb.OutboxEntry{}}
}

// apply proposes one command at the harness time in its own batch.
func (h *harness) apply(cmd *storepb.Command) *Result {
	cmd.Version, cmd.TimeMs = CommandVersion, h.now
	data, err := proto.Marshal(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.applyRaw(data)
}

// stage applies cmd at the harness time into a new indexed batch, which
// the caller commits (then calls Committed, as applyRaw does) or drops.
func (h *harness) stage(cmd *storepb.Command) (*Result, *pebble.Batch) {
	cmd.Version, cmd.TimeMs = CommandVersion, h.now
	data, err := proto.Marshal(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	b := h.db.NewIndexedBatch()
	h.index++
	r, err := h.s.Apply(b, h.index, data)
	if err != nil {
		h.t.Fatalf("apply: %v", err)
	}
	return r.(*Result), b
}

func (h *harness) applyRaw(data []byte) *Result {
	b := h.db.NewIndexedBatch()
	h.index++
	r, err := h.s.Apply(b, h.index, data)
	if err != nil {
		h.t.Fatalf("apply: %v", err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		h.t.Fatal(err)
	}
	h.s.Committed() // as the shard server's AfterApply does
	res := r.(*Result)
	for _, m := range res.Received {
		if _, err := m.Whole(); err != nil { // as the leader's reply does
			h.t.Fatal(err)
		}
	}
	return res
}

type args map[string]string

func (a args) str(k, def string) string {
	if v, ok := a[k]; ok {
		return v
	}
	return def
}

func (a args) list(k string) []string {
	if v, ok := a[k]; ok && v != "" {
		return strings.Split(v, ",")
	}
	return nil
}

func (a args) has(k string) bool { _, ok := a[k]; return ok }

func parseMs(s string) int64 {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			panic(err)
		}
		return d * 24 * 3600 * 1000
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(fmt.Sprintf("bad duration %q", s))
	}
	return d.Milliseconds()
}

func (a args) ms(k string, def int64) int64 {
	if v, ok := a[k]; ok {
		return parseMs(v)
	}
	return def
}

func (a args) int(k string, def int64) int64 {
	if v, ok := a[k]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			panic(err)
		}
		return n
	}
	return def
}

func fmtMs(ms int64) string { return msDur(ms).String() }

// errName renders an outcome as the reason the server would map it to.
func errName(err error) string {
	var fe *FieldError
	names := map[error]string{
		ErrQueueNotFound: "QUEUE_NOT_FOUND", ErrQueueExists: "QUEUE_ALREADY_EXISTS",
		ErrStaleReceipt: "STALE_RECEIPT_HANDLE", ErrInvalidReceipt: "INVALID_RECEIPT_HANDLE",
		ErrMessageNotFound: "MESSAGE_NOT_FOUND", ErrMessageTooLarge: "MESSAGE_TOO_LARGE",
		ErrDeadLetterInvalid: "DEAD_LETTER_INVALID", ErrQueueInUse: "QUEUE_IN_USE",
		ErrInvalidCommand: "INVALID_COMMAND", ErrMessageAlreadyReceived: "MESSAGE_ALREADY_RECEIVED",
		ErrQueueFull: "QUEUE_FULL",
	}
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &fe):
		return fmt.Sprintf("INVALID_ARGUMENT %s: %s", fe.Field, fe.Reason)
	case names[err] != "":
		return names[err]
	}
	return "error " + err.Error()
}

func (h *harness) msgName(id string) string {
	n, ok := h.ids[id]
	if !ok {
		n = len(h.ids) + 1
		h.ids[id] = n
	}
	return fmt.Sprintf("#%d", n)
}

func (h *harness) attrs(a args) *storepb.QueueAttributes {
	at := DefaultAttributes()
	at.VisibilityTimeoutMs = a.ms("vis", at.VisibilityTimeoutMs)
	at.MessageRetentionMs = a.ms("retention", at.MessageRetentionMs)
	at.DeliveryDelayMs = a.ms("delay", at.DeliveryDelayMs)
	at.ReceiveWaitMs = a.ms("wait", at.ReceiveWaitMs)
	at.MaxMessageSize = a.int("maxsize", at.MaxMessageSize)
	at.DeadLetterQueue = a.str("dlq", "")
	at.MaxReceiveCount = int32(a.int("max", 0))
	at.Fifo = a.has("fifo") || strings.HasSuffix(a.str("q", ""), ".fifo")
	at.ContentBasedDeduplication = a.has("cbd")
	at.Partitions = int32(a.int("partitions", 1))
	retryAttrs(at, a)
	if a.has("weighted") {
		at.PriorityMode = PriorityWeighted
		at.PriorityWeight = int32(a.int("weighted", 0))
	}
	if a.has("fair") {
		at.Fairness = FairnessGroup
	}
	return at
}

func (h *harness) filter(a args) *storepb.TagFilter {
	v, ok := a["filter"]
	if !ok {
		return nil
	}
	f := &storepb.TagFilter{}
	for part := range strings.SplitSeq(v, "/") {
		kind, tags, _ := strings.Cut(part, ":")
		list := strings.Split(tags, ",")
		switch kind {
		case "all":
			f.All = list
		case "any":
			f.Any = list
		case "none":
			f.None = list
		default:
			panic("bad filter " + v)
		}
	}
	return f
}

func (h *harness) infoLine(qi *QueueInfo) string {
	r := qi.Record
	a := r.Attributes
	s := fmt.Sprintf("%s/%s id=%d vis=%s retention=%s delay=%s", r.Tenant, r.Name, r.Id,
		fmtMs(a.VisibilityTimeoutMs), fmtMs(a.MessageRetentionMs), fmtMs(a.DeliveryDelayMs))
	if a.DeadLetterQueue != "" {
		s += fmt.Sprintf(" dlq=%s max=%d", a.DeadLetterQueue, a.MaxReceiveCount)
	}
	if a.PriorityMode == PriorityWeighted {
		s += fmt.Sprintf(" weighted=%d", a.PriorityWeight)
	}
	if a.Fairness == FairnessGroup {
		s += " fair"
	}
	return s
}

func (h *harness) msgLine(m *storepb.MessageRecord) string {
	s := fmt.Sprintf("%s body=%s seq=%d rc=%d visible_at=%s", h.msgName(m.Id), m.Body, m.Seq, m.ReceiveCount, fmtMs(m.VisibleAtMs))
	if len(m.Tags) > 0 {
		s += " tags=" + strings.Join(m.Tags, ",")
	}
	if m.GroupId != "" {
		s += " group=" + m.GroupId
	}
	if m.DeadLetterSource != "" {
		s += " dead_letter_source=" + m.DeadLetterSource
	}
	if m.Priority != nil {
		s += fmt.Sprintf(" prio=%d", *m.Priority)
	}
	return s + retryLine(m)
}

func (h *harness) handle(name string, a args) []byte {
	if name == "garbage" {
		return []byte("garbage")
	}
	b, ok := h.handles[name]
	if !ok {
		panic("unknown handle " + name)
	}
	if a.has("tamper") {
		b = bytes.Clone(b)
		b[len(b)-1] ^= 1
	}
	return b
}

func (h *harness) run(line string) string {
	fields := strings.Fields(line)
	a := args{}
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		a[k] = v
	}
	if a.has("now") {
		h.now = parseMs(a["now"])
	}
	tenant, q := a.str("tenant", "t"), a.str("q", "")
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	flags := func(r *Result) {
		if r.Woken {
			p("woken")
		}
		if r.OutboxAdded {
			p("outbox added")
		}
	}
	switch fields[0] {
	case "create":
		tags := map[string]string{}
		for _, kv := range a.list("tags") {
			k, v, _ := strings.Cut(kv, ":")
			tags[k] = v
		}
		key := bytes.Repeat([]byte(a.str("key", "k")), 32)
		if a.has("shortkey") {
			key = []byte("short")
		}
		r := h.apply(&storepb.Command{Op: &storepb.Command_CreateQueue{CreateQueue: &storepb.CreateQueue{
			Tenant: tenant, Name: q, Attributes: h.attrs(a), Tags: tags, HandleKey: key}}})
		if r.Err != nil {
			return errName(r.Err)
		}
		p("%s", h.infoLine(r.QueueInfo))
	case "update":
		r := h.apply(&storepb.Command{Op: &storepb.Command_UpdateQueue{UpdateQueue: &storepb.UpdateQueue{
			Tenant: tenant, Name: q, Attributes: h.attrs(a)}}})
		if r.Err != nil {
			return errName(r.Err)
		}
		p("%s", h.infoLine(r.QueueInfo))
	case "delete-queue":
		return errName(h.apply(&storepb.Command{Op: &storepb.Command_DeleteQueue{DeleteQueue: &storepb.DeleteQueue{Tenant: tenant, Name: q}}}).Err)
	case "purge":
		return errName(h.apply(&storepb.Command{Op: &storepb.Command_PurgeQueue{PurgeQueue: &storepb.PurgeQueue{Tenant: tenant, Name: q}}}).Err)
	case "get":
		qi, err := h.s.GetQueue(tenant, q, h.now)
		if err != nil {
			return errName(err)
		}
		p("%s", h.infoLine(qi))
	case "list":
		qs, err := h.s.ListQueues(tenant, a.str("prefix", ""), a.str("after", ""), int(a.int("limit", 0)))
		if err != nil {
			return errName(err)
		}
		for _, qi := range qs {
			p("%s", qi.Record.Name)
		}
		if len(qs) == 0 {
			p("none")
		}
	case "send":
		var entries []*storepb.SendEntry
		attrs := map[string]string{}
		for _, kv := range a.list("attrs") {
			k, v, _ := strings.Cut(kv, ":")
			attrs[k] = v
		}
		// group= and dedup= give one value for every entry, or one per body.
		nth := func(list []string, i int) string {
			switch {
			case len(list) == 0:
				return ""
			case len(list) == 1:
				return list[0]
			}
			return list[i]
		}
		groups, dedups, prios := a.list("group"), a.list("dedup"), a.list("prio")
		for i, body := range strings.Split(a.str("body", "x"), ",") {
			if n, ok := strings.CutPrefix(body, "size:"); ok {
				m, _ := strconv.Atoi(n)
				body = strings.Repeat("x", m)
			}
			e := &storepb.SendEntry{Body: body, Tags: a.list("tags"), DelayMs: -1, IdempotencyKey: a.str("key", ""), Attributes: attrs,
				GroupId: nth(groups, i), DeduplicationId: nth(dedups, i), TtlMs: a.ms("ttl", 0)}
			if p := nth(prios, i); p != "" {
				n, err := strconv.Atoi(p)
				if err != nil {
					panic(err)
				}
				e.Priority = proto.Int32(int32(n))
			}
			if a.has("delay") {
				e.DelayMs = a.ms("delay", 0)
			}
			if a.has("at") {
				e.DeliverAtMs = a.ms("at", 0)
			}
			entries = append(entries, e)
		}
		r := h.apply(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: tenant, Queue: q, Entries: entries}}})
		if r.Err != nil {
			return errName(r.Err)
		}
		for _, s := range r.Sent {
			switch {
			case s.Err != nil:
				p("%s", errName(s.Err))
			case s.Duplicate:
				p("%s seq=%d duplicate", h.msgName(s.MessageID), s.Seq)
			default:
				p("%s seq=%d", h.msgName(s.MessageID), s.Seq)
			}
		}
		flags(r)
	case "receive":
		r := h.apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{
			Tenant: tenant, Queue: q, MaxMessages: int32(a.int("max", 10)),
			VisibilityTimeoutMs: a.ms("vis", -1), Filter: h.filter(a), ReceiveAttemptId: a.str("attempt", "")}}})
		if r.Err != nil {
			return errName(r.Err)
		}
		if r.Replayed {
			p("replayed")
		}
		for _, m := range r.Received {
			// A handle seen before keeps its name: a replayed receive
			// shows the same names.
			name := ""
			for n, b := range h.handles {
				if bytes.Equal(b, m.ReceiptHandle) {
					name = n
				}
			}
			if name == "" {
				h.nHandle++
				name = fmt.Sprintf("h%d", h.nHandle)
				h.handles[name] = m.ReceiptHandle
			}
			p("%s %s", h.msgLine(m.Message), name)
		}
		if len(r.Received) == 0 {
			p("empty")
		}
		flags(r)
	case "delete":
		var hs [][]byte
		names := a.list("handle")
		for _, n := range names {
			hs = append(hs, h.handle(n, a))
		}
		r := h.apply(&storepb.Command{Op: &storepb.Command_Delete{Delete: &storepb.Delete{Tenant: tenant, Queue: q, ReceiptHandles: hs}}})
		if r.Err != nil {
			return errName(r.Err)
		}
		for i, e := range r.Entries {
			p("%s: %s", names[i], errName(e))
		}
		flags(r)
	case "visibility":
		var cs []*storepb.VisibilityChange
		names := a.list("handle")
		for _, n := range names {
			cs = append(cs, &storepb.VisibilityChange{ReceiptHandle: h.handle(n, a), VisibilityTimeoutMs: a.ms("t", 0)})
		}
		r := h.apply(&storepb.Command{Op: &storepb.Command_ChangeVisibility{ChangeVisibility: &storepb.ChangeVisibility{Tenant: tenant, Queue: q, Changes: cs}}})
		if r.Err != nil {
			return errName(r.Err)
		}
		for i, e := range r.Entries {
			p("%s: %s", names[i], errName(e))
		}
		flags(r)
	case "cancel", "reschedule":
		// msg=#N names a sent message (msg=bogus: an id that is no id).
		id := a.str("msg", "")
		for mid, n := range h.ids {
			if fmt.Sprintf("#%d", n) == id {
				id = mid
			}
		}
		cmd := &storepb.Command{Op: &storepb.Command_CancelMessage{CancelMessage: &storepb.CancelMessage{Tenant: tenant, Queue: q, MessageId: id}}}
		if fields[0] == "reschedule" {
			op := &storepb.RescheduleMessage{Tenant: tenant, Queue: q, MessageId: id, DelayMs: a.ms("delay", 0), DeliverAtMs: a.ms("at", 0)}
			cmd.Op = &storepb.Command_RescheduleMessage{RescheduleMessage: op}
		}
		r := h.apply(cmd)
		if r.Err != nil {
			return errName(r.Err)
		}
		if fields[0] == "reschedule" {
			p("visible_at=%s", fmtMs(r.VisibleAtMs))
		} else {
			p("ok")
		}
		flags(r)
	case "tick":
		r := h.apply(&storepb.Command{Op: &storepb.Command_Tick{Tick: &storepb.Tick{Limit: int32(a.int("limit", 0))}}})
		p("removed=%d", r.Removed)
		flags(r)
	case "nack":
		h.nack(tenant, q, a, p, flags)
	case "needs-tick":
		need, err := h.s.NeedsTick(h.now)
		if err != nil {
			return errName(err)
		}
		p("%v", need)
	case "stats":
		qi, err := h.s.GetQueue(tenant, q, h.now)
		if err != nil {
			return errName(err)
		}
		st := qi.Stats
		p("visible=%d inflight=%d delayed=%d messages=%d bytes=%d", st.Visible, st.InFlight, st.Delayed, st.Messages, st.Bytes)
	case "peek":
		ready, next, err := h.s.Peek(tenant, q, h.filter(a), h.now, math.MaxInt64)
		switch {
		case err != nil:
			return errName(err)
		case ready:
			p("ready")
		case next > 0:
			p("next=%s", fmtMs(next))
		default:
			p("nothing")
		}
	case "outbox":
		es, err := h.s.PendingOutbox(0)
		if err != nil {
			return errName(err)
		}
		for _, e := range es {
			ret := ""
			if e.Returned {
				ret = " returned"
			}
			p("outbox %d -> %s/%s redrive=%v%s %s", e.Id, e.TargetTenant, e.TargetQueue, e.Redrive, ret, h.msgLine(e.Message))
		}
		if len(es) == 0 {
			p("empty")
		}
	case "deliver-again":
		// A stale relay repeats the delivery of an entry it relayed before.
		e := h.relayed[uint64(a.int("id", 0))]
		if e == nil {
			return "unknown entry"
		}
		r := h.apply(&storepb.Command{Op: &storepb.Command_DeliverOutbox{DeliverOutbox: &storepb.DeliverOutbox{Entries: []*storepb.OutboxEntry{e}}}})
		p("%s", errName(r.Entries[0]))
		flags(r)
	case "relay":
		// What the relay does: deliver every pending entry, then ack the
		// delivered ones and send the refused ones back. With ack=false it
		// skips the ack (to replay).
		es, err := h.s.PendingOutbox(0)
		if err != nil {
			return errName(err)
		}
		r := h.apply(&storepb.Command{Op: &storepb.Command_DeliverOutbox{DeliverOutbox: &storepb.DeliverOutbox{Entries: es}}})
		ack := &storepb.AckOutbox{}
		for i, e := range es {
			h.relayed[e.Id] = e
			p("outbox %d -> %s/%s: %s", e.Id, e.TargetTenant, e.TargetQueue, errName(r.Entries[i]))
			if r.Entries[i] == nil {
				ack.Ids = append(ack.Ids, e.Id)
			} else {
				ack.ReturnIds = append(ack.ReturnIds, e.Id)
			}
		}
		if len(es) == 0 {
			p("empty")
		}
		flags(r)
		if a.str("ack", "true") == "true" && len(ack.Ids)+len(ack.ReturnIds) > 0 {
			flags(h.apply(&storepb.Command{Op: &storepb.Command_AckOutbox{AckOutbox: ack}}))
		}
	case "redrive":
		r := h.apply(&storepb.Command{Op: &storepb.Command_Redrive{Redrive: &storepb.Redrive{Tenant: tenant, Queue: q, MaxMessages: int32(a.int("max", 0)),
			TargetQueue: a.str("target", ""), MissingSources: a.list("missing")}}})
		if r.Err != nil {
			return errName(r.Err)
		}
		p("moved=%d", r.Moved)
		flags(r)
	case "garbage":
		return errName(h.applyRaw([]byte{0xff, 0xff, 0xff}).Err)
	case "dump":
		// Keys only (values are protos): shows the layout a command left.
		it, err := h.db.NewIter(&pebble.IterOptions{LowerBound: keys.StatePrefix(1), UpperBound: keys.StateEnd(1)})
		if err != nil {
			h.t.Fatal(err)
		}
		var lines []string
		for ok := it.First(); ok; ok = it.Next() {
			lines = append(lines, keys.Pretty(it.Key()))
		}
		it.Close()
		for _, l := range lines {
			p("%s", l)
		}
	default:
		out, ok := h.runTopic(fields[0], a) // topics_script_test.go
		if !ok {
			h.t.Fatalf("unknown command %q", fields[0])
		}
		return out
	}
	return b.String()
}

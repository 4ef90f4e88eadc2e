package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	quorumq "github.com/quorumq/quorumq/sdk"
)

// outputFormat is the value of -o/--output: "table" (for people), "json"
// or "yaml" (for scripts; the same document either way).
type outputFormat string

const (
	outputTable outputFormat = "table"
	outputJSON  outputFormat = "json"
	outputYAML  outputFormat = "yaml"
)

// structured tells whether the format is a document (json or yaml).
func (o outputFormat) structured() bool { return o == outputJSON || o == outputYAML }

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "format" }

func (o *outputFormat) Set(s string) error {
	switch f := outputFormat(strings.ToLower(s)); f {
	case outputTable, outputJSON, outputYAML:
		*o = f
		return nil
	}
	return fmt.Errorf("%q is not an output format (table, json or yaml)", s)
}

// register adds -o/--output and the hidden, deprecated --json (the older
// spelling of -o json, kept so scripts do not break).
func (o *outputFormat) register(cmd *cobra.Command) {
	*o = outputTable
	f := cmd.Flags()
	f.VarP(o, "output", "o", "output format: table, json or yaml (JSON as the REST API prints it)")
	f.Var(jsonAlias{o}, "json", "same as -o json")
	f.Lookup("json").NoOptDefVal = "true"
	f.Lookup("json").Hidden = true
}

// jsonAlias is the boolean --json: true sets the format to json.
type jsonAlias struct{ o *outputFormat }

func (j jsonAlias) String() string { return strconv.FormatBool(j.o != nil && *j.o == outputJSON) }
func (j jsonAlias) Type() string   { return "bool" }

func (j jsonAlias) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	if v {
		*j.o = outputJSON
	} else if *j.o == outputJSON {
		*j.o = outputTable
	}
	return nil
}

// Exit codes of the client subcommands.
const (
	exitError    = 1 // any error
	exitNotFound = 2 // the queue or message does not exist
)

// exitStatusHelp ends the long help of every command (see withExitCodes);
// it is what main, runE and exitCode do.
const exitStatusHelp = `Exit codes:
  0  success
  1  an error, printed to standard error as "quorumq: ..." (or a usage error)
  2  the queue or message does not exist (NotFound)`

// clientLong is a client subcommand's long help: desc and the exit codes.
func clientLong(desc string) string {
	return strings.TrimSpace(desc) + "\n\n" + exitStatusHelp
}

// withExitCodes ends the long help of cmd and every command below it with
// the exit codes (once), so every help text lists them.
func withExitCodes(cmd *cobra.Command) {
	if !strings.Contains(cmd.Long, exitStatusHelp) {
		long := cmd.Long
		if long == "" {
			long = cmd.Short + "."
		}
		cmd.Long = strings.TrimSpace(long) + "\n\n" + exitStatusHelp
	}
	for _, c := range cmd.Commands() {
		withExitCodes(c)
	}
}

// osExit is os.Exit; tests replace it.
var osExit = os.Exit

// exitCode is the exit status for err: exitNotFound for a missing queue or
// message (SDK sentinels, or a bare NotFound status), exitError otherwise.
func exitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, quorumq.ErrQueueNotFound), errors.Is(err, quorumq.ErrMessageNotFound):
		return exitNotFound
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.NotFound {
		return exitNotFound
	}
	return exitError
}

// errorMessage is err's text without the "quorumq: " that SDK errors
// start with, at the start or wrapped (the CLI prints its own once).
func errorMessage(err error) string {
	return strings.ReplaceAll(strings.TrimPrefix(err.Error(), "quorumq: "), ": quorumq: ", ": ")
}

// runE wraps a client subcommand's RunE: an error is printed as
// "quorumq: ..." to standard error (instead of cobra's "Error: ...") and
// the process exits with exitCode(err); exit status 1 is left to main.
// Usage errors (bad flags or arguments) get the same prefix through
// SetErrPrefix.
func runE(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := fn(cmd, args)
		if err == nil {
			return nil
		}
		cmd.SilenceErrors = true
		fmt.Fprintln(cmd.ErrOrStderr(), "quorumq: "+errorMessage(err))
		if code := exitCode(err); code != exitError {
			osExit(code)
		}
		return err
	}
}

// jsonOptions match the REST gateway's: every field is printed, so an
// empty receive shows "messages": [] and zero counts show as 0.
var jsonOptions = protojson.MarshalOptions{EmitUnpopulated: true}

// writeJSON prints m as protojson, indented by two spaces. protojson's
// own whitespace is deliberately unstable; re-indenting makes the output
// byte-stable for a given message.
func writeJSON(w io.Writer, m proto.Message) error { return writeMessage(w, outputJSON, m) }

// writeMessage prints m as protojson (the REST API's shape) in format,
// json or yaml.
func writeMessage(w io.Writer, format outputFormat, m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return err
	}
	return writeDocument(w, format, b)
}

// writeDocument prints the JSON document doc indented (json), or as YAML
// with the same keys in the same order.
func writeDocument(w io.Writer, format outputFormat, doc []byte) error {
	var out bytes.Buffer
	if format == outputYAML {
		y, err := jsonToYAML(doc)
		if err != nil {
			return err
		}
		out.Write(y)
	} else {
		if err := json.Indent(&out, doc, "", "  "); err != nil {
			return err
		}
		out.WriteByte('\n')
	}
	_, err := w.Write(out.Bytes())
	return err
}

// jsonToYAML re-encodes a JSON document as block-style YAML. JSON is
// YAML, so it is parsed into a node tree (keeping key order) and only its
// flow style is dropped; strings that would read as numbers or booleans
// (protojson's int64s) stay quoted, since the encoder quotes any !!str
// that would resolve to another type.
func jsonToYAML(doc []byte) ([]byte, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(doc, &n); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	var plain func(*yaml.Node)
	plain = func(n *yaml.Node) {
		n.Style = 0
		for _, c := range n.Content {
			plain(c)
		}
	}
	plain(&n)
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	return out.Bytes(), nil
}

// --- SDK results as the API's messages, for -o json ---

func durProto(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func timeProto(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// queueProto is q as the API's Queue; stats are left out (null) unless
// withStats.
func queueProto(q *quorumq.QueueInfo, withStats bool) *qv1.Queue {
	a := q.Attributes
	out := &qv1.Queue{
		Name: q.Name, Tags: q.Tags, CreatedAt: timeProto(q.CreatedAt),
		Attributes: &qv1.QueueAttributes{
			VisibilityTimeout: durProto(a.VisibilityTimeout), MessageRetention: durProto(a.MessageRetention),
			DeliveryDelay: durProto(a.DeliveryDelay), ReceiveWait: durProto(a.ReceiveWait),
			MaxMessageSize: a.MaxMessageSize, Fifo: a.FIFO, ContentBasedDeduplication: a.ContentBasedDeduplication,
			Partitions: int32(a.Partitions), PriorityMode: a.PriorityMode, PriorityWeight: int32(a.PriorityWeight),
			Fairness: a.Fairness,
		},
	}
	if a.DeadLetterQueue != "" {
		out.Attributes.DeadLetter = &qv1.DeadLetterPolicy{Queue: a.DeadLetterQueue, MaxReceiveCount: int32(a.MaxReceiveCount)}
	}
	limitsProto(a, out.Attributes)
	if withStats {
		out.Stats = &qv1.QueueStats{Visible: q.Stats.Visible, InFlight: q.Stats.InFlight, Delayed: q.Stats.Delayed}
	}
	return out
}

// receiveProto is msgs as the API's ReceiveMessagesResponse:
// {"messages":[{"messageId","receiptHandle","body",…}]}.
func receiveProto(msgs []*quorumq.Message) *qv1.ReceiveMessagesResponse {
	out := &qv1.ReceiveMessagesResponse{Messages: make([]*qv1.ReceivedMessage, len(msgs))}
	for i, m := range msgs {
		out.Messages[i] = &qv1.ReceivedMessage{
			MessageId: m.ID, ReceiptHandle: m.ReceiptHandle, Body: m.Body, Attributes: m.Attributes, Tags: m.Tags,
			SentAt: timeProto(m.SentAt), FirstReceivedAt: timeProto(m.FirstReceivedAt), ReceiveCount: int32(m.ReceiveCount),
			GroupId: m.GroupID, Sequence: m.Sequence, DeadLetterSource: m.DeadLetterSource,
			FailedCount: int32(m.FailedCount), ReleasedCount: int32(m.ReleasedCount),
			DeadLetterReason: qv1.DeadLetterReason(qv1.DeadLetterReason_value["DEAD_LETTER_REASON_"+m.DeadLetterReason]),
			Priority:         int32(m.Priority),
		}
	}
	return out
}

// --- tables ---

// kv is a block of "label  value" lines with the values aligned; a value
// with newlines continues indented under itself.
type kv [][2]string

func (b *kv) add(label, value string) { *b = append(*b, [2]string{label, value}) }

// addContent adds what a message carries (the parts it has), the body last:
// received and peeked messages print it alike.
func (b *kv) addContent(group string, tags []string, attrs map[string]string, deadLetterSource, body string) {
	if group != "" {
		b.add("group", group)
	}
	if len(tags) > 0 {
		b.add("tags", strings.Join(tags, ", "))
	}
	if len(attrs) > 0 {
		b.add("attributes", fmtMap(attrs))
	}
	if deadLetterSource != "" {
		b.add("dead-letter source", deadLetterSource)
	}
	b.add("body", body)
}

func (b kv) write(w io.Writer) error {
	width := 0
	for _, p := range b {
		width = max(width, len(p[0]))
	}
	var s strings.Builder
	indent := strings.Repeat(" ", width+2)
	for _, p := range b {
		value := strings.ReplaceAll(p[1], "\n", "\n"+indent)
		fmt.Fprintf(&s, "%-*s  %s\n", width, p[0], value)
	}
	_, err := io.WriteString(w, s.String())
	return err
}

// fmtDur prints d without trailing zero units: 1m, 96h, 1m30s.
func fmtDur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fmtMap prints k=v pairs in key order, comma-separated.
func fmtMap(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}

// printQueue prints one queue as key/value lines.
func printQueue(w io.Writer, q *quorumq.QueueInfo, withStats bool) error {
	a := q.Attributes
	var b kv
	b.add("name", q.Name)
	b.add("fifo", yesNo(a.FIFO))
	if a.FIFO {
		b.add("content-based dedup", yesNo(a.ContentBasedDeduplication))
	}
	b.add("visibility timeout", fmtDur(a.VisibilityTimeout))
	b.add("retention", fmtDur(a.MessageRetention))
	b.add("delivery delay", fmtDur(a.DeliveryDelay))
	b.add("receive wait", fmtDur(a.ReceiveWait))
	b.add("max message size", strconv.FormatInt(a.MaxMessageSize, 10))
	parts := strconv.Itoa(a.Partitions)
	if len(q.PartitionShards) > 0 {
		shards := make([]string, len(q.PartitionShards))
		for i, s := range q.PartitionShards {
			shards[i] = strconv.FormatUint(s, 10)
		}
		parts += " (on shards " + strings.Join(shards, ",") + ")"
	}
	b.add("partitions", parts)
	dlq := "-"
	if a.DeadLetterQueue != "" {
		dlq = fmt.Sprintf("%s (after %d receives)", a.DeadLetterQueue, a.MaxReceiveCount)
	}
	b.add("dead-letter queue", dlq)
	b.addLimits(a)
	if a.PriorityMode == "weighted" {
		b.add("priorities", fmt.Sprintf("weighted (%d:1)", a.PriorityWeight))
	}
	if a.Fairness != "" {
		b.add("fairness", a.Fairness)
	}
	b.add("tags", fmtMap(q.Tags))
	b.add("created", fmtTime(q.CreatedAt))
	if withStats {
		b.add("visible", strconv.FormatInt(q.Stats.Visible, 10))
		b.add("in flight", strconv.FormatInt(q.Stats.InFlight, 10))
		b.add("delayed", strconv.FormatInt(q.Stats.Delayed, 10))
	}
	return b.write(w)
}

// printQueueTable prints queues one per row; the counts are "-" unless
// withStats.
func printQueueTable(w io.Writer, queues []*quorumq.QueueInfo, withStats bool) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVISIBLE\tINFLIGHT\tDELAYED\tFIFO\tDLQ\tVISIBILITY\tPARTITIONS")
	for _, q := range queues {
		visible, inFlight, delayed := "-", "-", "-"
		if withStats {
			visible = strconv.FormatInt(q.Stats.Visible, 10)
			inFlight = strconv.FormatInt(q.Stats.InFlight, 10)
			delayed = strconv.FormatInt(q.Stats.Delayed, 10)
		}
		a := q.Attributes
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", q.Name, visible, inFlight, delayed,
			yesNo(a.FIFO), orDash(a.DeadLetterQueue), fmtDur(a.VisibilityTimeout), a.Partitions)
	}
	return tw.Flush()
}

// printMessages prints one block per received message, separated by a
// blank line; the body comes last.
func printMessages(w io.Writer, msgs []*quorumq.Message) error {
	for i, m := range msgs {
		if i > 0 {
			if _, err := io.WriteString(w, "\n"); err != nil {
				return err
			}
		}
		var b kv
		b.add("message id", m.ID)
		b.add("receive count", strconv.Itoa(m.ReceiveCount))
		b.add("receipt handle", m.ReceiptHandle)
		b.add("sent at", fmtTime(m.SentAt))
		b.addCounters(m)
		b.addContent(m.GroupID, m.Tags, m.Attributes, m.DeadLetterSource, m.Body)
		if err := b.write(w); err != nil {
			return err
		}
	}
	return nil
}

// printSendResult prints a sent message's id and sequence.
func printSendResult(w io.Writer, r quorumq.SendResult) error {
	var b kv
	b.add("message id", r.MessageID)
	b.add("sequence", strconv.FormatUint(r.Sequence, 10))
	return b.write(w)
}

// --- bulk send progress ---

// sendSummary is the outcome of `send --file`.
type sendSummary struct {
	Sent    int64 `json:"sent"`
	Failed  int64 `json:"failed"`
	Skipped int64 `json:"skipped"` // empty lines
	// FailedLines are the line numbers of the failed messages, as
	// [first, last] ranges (omitted when none failed).
	FailedLines []lineRange `json:"failedLines,omitempty"`
	// NotSentFrom is the first line not sent when the send stopped early
	// (0: every line was read).
	NotSentFrom int           `json:"notSentFrom,omitempty"`
	Elapsed     time.Duration `json:"-"`
}

// lineRange is the input lines first to last, both included.
type lineRange [2]int

// addLine adds line (not below the last one) to ascending ranges.
func addLine(rs []lineRange, line int) []lineRange {
	if n := len(rs); n > 0 && rs[n-1][1]+1 >= line {
		rs[n-1][1] = max(rs[n-1][1], line)
		return rs
	}
	return append(rs, lineRange{line, line})
}

// maxListedRanges bounds the line ranges written out in a message.
const maxListedRanges = 20

// lineList writes ranges as "line 7" or "lines 3-5, 9", the first
// maxListedRanges of them.
func lineList(rs []lineRange) string {
	var b strings.Builder
	lines := 0
	for i, r := range rs {
		lines += r[1] - r[0] + 1
		if i >= maxListedRanges {
			continue
		}
		if i > 0 {
			b.WriteString(", ")
		}
		if r[0] == r[1] {
			fmt.Fprint(&b, r[0])
		} else {
			fmt.Fprintf(&b, "%d-%d", r[0], r[1])
		}
	}
	if len(rs) > maxListedRanges {
		fmt.Fprintf(&b, ", and %d more ranges", len(rs)-maxListedRanges)
	}
	if lines == 1 {
		return "line " + b.String()
	}
	return "lines " + b.String()
}

// outcome says what happened to the lines: "400 sent, 100 failed (lines
// 101-200), not sent from line 501".
func (s sendSummary) outcome() string {
	out := fmt.Sprintf("%d sent, %d failed", s.Sent, s.Failed)
	if len(s.FailedLines) > 0 {
		out += " (" + lineList(s.FailedLines) + ")"
	}
	if s.NotSentFrom > 0 {
		out += fmt.Sprintf(", not sent from line %d", s.NotSentFrom)
	}
	return out
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// progressLine is the progress report of a bulk send: the counts so far
// and the rate of the last interval.
func progressLine(sent, failed int64, perSecond float64) string {
	s := fmt.Sprintf("sent %d", sent)
	if failed > 0 {
		s += fmt.Sprintf(", failed %d", failed)
	}
	return s + fmt.Sprintf(" (%.0f msg/s)", perSecond)
}

// printSendSummary prints the outcome of a bulk send: one line, or with
// -o json {"sent":N,"failed":N,"skipped":N,"failedLines":[[first,last],…],
// "notSentFrom":N,"seconds":S} (failedLines only when some failed,
// notSentFrom only when the send stopped early).
func printSendSummary(w io.Writer, format outputFormat, s sendSummary) error {
	if format.structured() {
		b, err := json.Marshal(struct {
			sendSummary
			Seconds float64 `json:"seconds"`
		}{s, s.Elapsed.Round(time.Millisecond).Seconds()})
		if err != nil {
			return err
		}
		return writeDocument(w, format, b)
	}
	line := fmt.Sprintf("sent %d messages in %s (%.0f msg/s)", s.Sent, s.Elapsed.Round(time.Millisecond), rate(s.Sent, s.Elapsed))
	if s.Failed > 0 {
		line += fmt.Sprintf(", %d failed", s.Failed)
		if len(s.FailedLines) > 0 {
			line += " (" + lineList(s.FailedLines) + ")"
		}
	}
	if s.NotSentFrom > 0 {
		line += fmt.Sprintf(", not sent from line %d", s.NotSentFrom)
	}
	if s.Skipped > 0 {
		line += fmt.Sprintf(", %d empty lines skipped", s.Skipped)
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

// isTerminal reports whether w is a character device (a progress line can
// then be redrawn in place).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

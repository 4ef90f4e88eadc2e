package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	quorumq "github.com/quorumq/quorumq/sdk"
)

func newPeekCmd() *cobra.Command {
	var (
		c         clientCmd
		limit     int
		states    []string
		filter    quorumq.TagFilter
		attribute string
		minAge    time.Duration
		pageToken string
	)
	cmd := &cobra.Command{
		Use: "peek QUEUE", Short: "Browse messages without receiving them",
		Long: clientLong(`Browse up to --limit messages of a queue (visible, in flight and delayed)
without receiving them: no lease and no receive count changes, and no
receipt handle is shown. Pages go partition by partition in sequence order;
when more remain, the next page token is printed on standard error (with
-o json it is "nextPageToken") for --page-token. Needs scope messages:peek
or messages:receive.`),
		Example: `  quorumq peek jobs --state in_flight --limit 20
  quorumq peek jobs-dlq -o json | jq -r '.messages[].body'`,
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			opts := []quorumq.PeekOption{quorumq.PageSize(limit), quorumq.PageToken(pageToken)}
			var want []quorumq.MessageState
			for _, s := range states {
				st := quorumq.MessageState(strings.ToUpper(strings.ReplaceAll(s, "-", "_")))
				switch st {
				case quorumq.StateVisible, quorumq.StateInFlight, quorumq.StateDelayed:
					want = append(want, st)
				default:
					return fmt.Errorf("--state %q: want visible, in_flight or delayed", s)
				}
			}
			if len(want) > 0 {
				opts = append(opts, quorumq.PeekStates(want...))
			}
			if len(filter.All)+len(filter.Any)+len(filter.None) > 0 {
				opts = append(opts, quorumq.PeekFilter(filter))
			}
			if attribute != "" {
				k, v, ok := strings.Cut(attribute, "=")
				if !ok {
					return fmt.Errorf("--attribute %q: want key=value", attribute)
				}
				opts = append(opts, quorumq.PeekAttribute(k, v))
			}
			if minAge > 0 {
				opts = append(opts, quorumq.PeekMinAge(minAge))
			}
			return c.with(cmd, 0, func(ctx context.Context, client *quorumq.Client) error {
				page, err := client.Queue(args[0]).Peek(ctx, opts...)
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), peekProto(page))
				}
				if len(page.Messages) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "no messages")
				} else if err := printPeekTable(cmd.OutOrStdout(), page.Messages); err != nil {
					return err
				}
				if page.NextPageToken != "" {
					fmt.Fprintln(cmd.ErrOrStderr(), "next page: --page-token "+page.NextPageToken)
				}
				return nil
			})
		}),
	}
	c.register(cmd)
	f := cmd.Flags()
	f.IntVar(&limit, "limit", 10, "messages per page, 1 to 100")
	f.StringSliceVar(&states, "state", nil, "only messages in these states: visible, in_flight, delayed")
	f.StringSliceVar(&filter.All, "tag", nil, "only messages with all these tags")
	f.StringSliceVar(&filter.Any, "any", nil, "only messages with one of these tags")
	f.StringSliceVar(&filter.None, "none", nil, "only messages with none of these tags")
	f.StringVar(&attribute, "attribute", "", "only messages with this attribute, key=value")
	f.DurationVar(&minAge, "min-age", 0, "only messages sent at least this long ago")
	f.StringVar(&pageToken, "page-token", "", "continue from a previous page")
	return cmd
}

func newMessageGetCmd() *cobra.Command {
	var c clientCmd
	cmd := &cobra.Command{
		Use: "get QUEUE MESSAGE_ID", Short: "Show one message without receiving it", Args: cobra.ExactArgs(2),
		Long: clientLong(`Show one stored message by id without receiving it (exit status 2 when
the queue does not hold it). Needs scope messages:peek or messages:receive.`),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.with(cmd, 0, func(ctx context.Context, client *quorumq.Client) error {
				m, err := client.Queue(args[0]).GetMessage(ctx, args[1])
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), &qv1.GetMessageResponse{Message: peekedProto(*m)})
				}
				return printPeeked(cmd.OutOrStdout(), *m)
			})
		}),
	}
	c.register(cmd)
	return cmd
}

var stateProto = map[quorumq.MessageState]qv1.MessageState{
	quorumq.StateVisible:  qv1.MessageState_MESSAGE_STATE_VISIBLE,
	quorumq.StateInFlight: qv1.MessageState_MESSAGE_STATE_IN_FLIGHT,
	quorumq.StateDelayed:  qv1.MessageState_MESSAGE_STATE_DELAYED,
}

func peekedProto(m quorumq.PeekedMessage) *qv1.PeekedMessage {
	return &qv1.PeekedMessage{
		MessageId: m.ID, Body: m.Body, Attributes: m.Attributes, Tags: m.Tags, SentAt: timeProto(m.SentAt),
		ReceiveCount: int32(m.ReceiveCount), FirstReceivedAt: timeProto(m.FirstReceivedAt), VisibleAt: timeProto(m.VisibleAt),
		State: stateProto[m.State], GroupId: m.GroupID, Sequence: m.Sequence, DeadLetterSource: m.DeadLetterSource,
		Partition: int32(m.Partition), Priority: int32(m.Priority),
	}
}

// peekProto is page as the API's PeekMessagesResponse.
func peekProto(page *quorumq.PeekPage) *qv1.PeekMessagesResponse {
	out := &qv1.PeekMessagesResponse{NextPageToken: page.NextPageToken, Messages: make([]*qv1.PeekedMessage, len(page.Messages))}
	for i, m := range page.Messages {
		out.Messages[i] = peekedProto(m)
	}
	return out
}

// printPeekTable prints one row per message; long bodies are cut.
func printPeekTable(w io.Writer, msgs []quorumq.PeekedMessage) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "MESSAGE ID\tSTATE\tRECEIVES\tVISIBLE AT\tPARTITION\tSEQ\tBODY")
	for _, m := range msgs {
		body := strings.ReplaceAll(m.Body, "\n", " ")
		if r := []rune(body); len(r) > 40 {
			body = string(r[:39]) + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%s\n", m.ID, m.State, m.ReceiveCount, fmtTime(m.VisibleAt), m.Partition, m.Sequence, body)
	}
	return tw.Flush()
}

// printPeeked prints one message as key/value lines, the body last.
func printPeeked(w io.Writer, m quorumq.PeekedMessage) error {
	var b kv
	b.add("message id", m.ID)
	b.add("state", string(m.State))
	b.add("receive count", strconv.Itoa(m.ReceiveCount))
	b.add("sent at", fmtTime(m.SentAt))
	b.add("first received", fmtTime(m.FirstReceivedAt))
	b.add("visible at", fmtTime(m.VisibleAt))
	b.add("partition", strconv.Itoa(m.Partition))
	b.add("sequence", strconv.FormatUint(m.Sequence, 10))
	b.addContent(m.GroupID, m.Tags, m.Attributes, m.DeadLetterSource, m.Body)
	return b.write(w)
}

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	quorumq "github.com/quorumq/quorumq/sdk"
)

// clientFlags are shared by the client subcommands.
type clientFlags struct {
	endpoint string
	timeout  time.Duration
	token    string
	caFile   string
}

func (c *clientFlags) register(cmd *cobra.Command) {
	registerEndpoint(cmd, &c.endpoint)
	cmd.Flags().DurationVar(&c.timeout, "timeout", 30*time.Second, "deadline of the command's calls, retries included")
	cmd.Flags().StringVar(&c.token, "token", "", "bearer token (JWT); also QUORUMQ_TOKEN")
	registerTLS(cmd, &c.caFile)
}

// registerEndpoint adds --endpoint (a comma-separated list of nodes) and
// its hidden, deprecated older spelling --endpoints, to the same value.
func registerEndpoint(cmd *cobra.Command, endpoint *string) {
	f := cmd.Flags()
	f.StringVar(endpoint, "endpoint", defaultEndpoint, "gRPC address of a node, or a comma-separated list of nodes")
	f.StringVar(endpoint, "endpoints", defaultEndpoint, "same as --endpoint")
	f.Lookup("endpoints").Hidden = true
}

// defaultEndpoint is the gRPC address of `quorumq serve`'s defaults.
const defaultEndpoint = "127.0.0.1:9090"

// registerTLS adds --ca-file.
func registerTLS(cmd *cobra.Command, caFile *string) {
	cmd.Flags().StringVar(caFile, "ca-file", "", "CA (PEM) to verify the server's TLS certificate; empty: plain TCP")
}

// splitEndpoints splits a comma-separated --endpoint.
func splitEndpoints(list string) ([]string, error) {
	var eps []string
	for e := range strings.SplitSeq(list, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	if len(eps) == 0 {
		return nil, errors.New("--endpoint: no address")
	}
	return eps, nil
}

// endpoints splits --endpoint.
func (c *clientFlags) endpoints() ([]string, error) { return splitEndpoints(c.endpoint) }

// transportCredentials are what --ca-file asks for.
func (c *clientFlags) transportCredentials() (credentials.TransportCredentials, error) {
	return transportCredentials(c.caFile)
}

// transportCredentials verify the server against caFile (PEM), or are
// plain TCP when it is empty.
func transportCredentials(caFile string) (credentials.TransportCredentials, error) {
	if caFile == "" {
		return insecure.NewCredentials(), nil
	}
	creds, err := credentials.NewClientTLSFromFile(caFile, "")
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	return creds, nil
}

// dial makes an SDK client of the flags: every endpoint, TLS with
// --ca-file, the bearer token of --token.
func (c *clientFlags) dial(ctx context.Context) (*quorumq.Client, error) {
	eps, err := c.endpoints()
	if err != nil {
		return nil, err
	}
	creds, err := c.transportCredentials()
	if err != nil {
		return nil, err
	}
	opts := []quorumq.Option{quorumq.WithTransportCredentials(creds)}
	if c.token != "" {
		opts = append(opts, quorumq.WithTokenSource(quorumq.StaticToken(c.token)))
	}
	return quorumq.Dial(ctx, eps, opts...)
}

// with runs fn with an SDK client under the --timeout deadline lengthened
// by extra (a receive's long-poll wait).
func (c *clientFlags) with(cmd *cobra.Command, extra time.Duration, fn func(ctx context.Context, client *quorumq.Client) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout+extra)
	defer cancel()
	client, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	return fn(ctx, client)
}

// rpc runs fn on a plain gRPC connection under the call deadline, for
// the services the SDK does not cover (cluster status). The endpoints are
// tried in turn while they are unavailable; a gRPC error comes back as
// "Code: message" that keeps its status (a NotFound exits 2).
func (c *clientFlags) rpc(cmd *cobra.Command, fn func(ctx context.Context, conn *grpc.ClientConn) error) error {
	eps, err := c.endpoints()
	if err != nil {
		return err
	}
	creds, err := c.transportCredentials()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	if c.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	}
	for i, ep := range eps {
		err = c.rpcOne(ctx, ep, creds, fn)
		if err == nil || status.Code(err) != codes.Unavailable || i == len(eps)-1 || ctx.Err() != nil {
			break
		}
	}
	if st, ok := status.FromError(err); ok && err != nil {
		return statusError{st}
	}
	return err
}

// statusError prints a gRPC status as "Code: message" and still is that
// status for status.FromError.
type statusError struct{ st *status.Status }

func (e statusError) Error() string              { return fmt.Sprintf("%s: %s", e.st.Code(), e.st.Message()) }
func (e statusError) GRPCStatus() *status.Status { return e.st }

func (c *clientFlags) rpcOne(ctx context.Context, ep string, creds credentials.TransportCredentials, fn func(ctx context.Context, conn *grpc.ClientConn) error) error {
	conn, err := grpc.NewClient(ep, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("dial %s: %w", ep, err)
	}
	defer conn.Close()
	return fn(ctx, conn)
}

// clientCmd is what every client subcommand has: the connection flags
// and -o.
type clientCmd struct {
	clientFlags
	output outputFormat
}

func (c *clientCmd) register(cmd *cobra.Command) {
	c.clientFlags.register(cmd)
	c.output.register(cmd)
	cmd.SetErrPrefix("quorumq:")
}

// structured tells whether -o asks for a document (json or yaml).
func (c *clientCmd) structured() bool { return c.output.structured() }

// write prints m as -o asks (json or yaml).
func (c *clientCmd) write(w io.Writer, m proto.Message) error { return writeMessage(w, c.output, m) }

func newQueueCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "queue", Short: "Manage queues", Long: clientLong("Manage queues.")}
	cmd.AddCommand(newQueueCreateCmd(), newQueueGetCmd(), newQueueListCmd(), newQueueDeleteCmd(), newQueuePurgeCmd(), newQueueUpdateCmd(), newQueueRedriveCmd())
	return cmd
}

func newQueueCreateCmd() *cobra.Command {
	var (
		c      clientCmd
		attrs  quorumq.QueueAttributes
		tags   map[string]string
		limits limitFlags
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a queue (same attributes again: returns it)",
		Long: clientLong(`Create a queue and print it. Creating an existing queue with the same
attributes returns it; other attributes fail (QUEUE_ALREADY_EXISTS).
Unset attributes take the server's defaults.`),
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if attrs.DeadLetterQueue == "" {
				attrs.MaxReceiveCount = 0
			}
			if err := limits.apply(cmd.Flags(), &attrs); err != nil {
				return err
			}
			return c.with(cmd, 0, func(ctx context.Context, client *quorumq.Client) error {
				q, err := client.CreateQueue(ctx, args[0], attrs, tags)
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), queueProto(q, false))
				}
				return printQueue(cmd.OutOrStdout(), q, false)
			})
		}),
	}
	c.register(cmd)
	f := cmd.Flags()
	f.DurationVar(&attrs.VisibilityTimeout, "visibility-timeout", 0, "lease of received messages (default 30s)")
	f.DurationVar(&attrs.MessageRetention, "retention", 0, "message retention (default 96h)")
	f.DurationVar(&attrs.DeliveryDelay, "delay", 0, "delivery delay of every message (default 0)")
	f.DurationVar(&attrs.ReceiveWait, "receive-wait", 0, "default long-poll wait (default 0)")
	f.Int64Var(&attrs.MaxMessageSize, "max-message-size", 0, "bytes (default 1 MiB)")
	f.IntVar(&attrs.Partitions, "partitions", 0, "partitions, 1 to 64 (default 1)")
	f.StringVar(&attrs.DeadLetterQueue, "dead-letter-queue", "", "dead-letter queue name")
	f.IntVar(&attrs.MaxReceiveCount, "max-receive-count", 5, "receives before dead-lettering")
	f.BoolVar(&attrs.FIFO, "fifo", false, "FIFO queue (name must end in .fifo)")
	f.BoolVar(&attrs.ContentBasedDeduplication, "content-based-deduplication", false, "FIFO: deduplicate by body hash")
	f.StringVar(&attrs.PriorityMode, "priority-mode", "", `"strict" (default: the highest priority first) or "weighted"`)
	f.IntVar(&attrs.PriorityWeight, "priority-weight", 0, "weighted mode: of every N+1 messages one is the oldest of any priority (default 10)")
	f.StringVar(&attrs.Fairness, "fairness", "", `"group": favour message groups with few messages in flight (fixed at creation)`)
	f.StringToStringVar(&tags, "tag", nil, "queue label key=value (repeatable)")
	limits.register(f)
	return cmd
}

func newQueueGetCmd() *cobra.Command {
	var c clientCmd
	cmd := &cobra.Command{
		Use: "get NAME", Short: "Show a queue with its message counts", Args: cobra.ExactArgs(1),
		Long: clientLong("Show a queue's attributes and its approximate message counts."),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.with(cmd, 0, func(ctx context.Context, client *quorumq.Client) error {
				q, err := client.GetQueue(ctx, args[0])
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), queueProto(q, true))
				}
				return printQueue(cmd.OutOrStdout(), q, true)
			})
		}),
	}
	c.register(cmd)
	return cmd
}

// statsConcurrency bounds the GetQueue calls of `queue list` in flight.
const statsConcurrency = 8

func newQueueListCmd() *cobra.Command {
	var (
		c      clientCmd
		prefix string
		stats  bool
	)
	cmd := &cobra.Command{
		Use: "list", Short: "List queues with their message counts", Args: cobra.NoArgs,
		Long: clientLong(`List the queues (every page), in name order, with their approximate
message counts (one GetQueue per queue; --stats=false skips them).`),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return c.with(cmd, 0, func(ctx context.Context, client *quorumq.Client) error {
				queues, err := client.ListQueues(ctx, prefix)
				if err != nil {
					return err
				}
				if stats {
					if queues, err = withStats(ctx, client, queues); err != nil {
						return err
					}
				}
				if c.structured() {
					resp := &qv1.ListQueuesResponse{Queues: make([]*qv1.Queue, len(queues))}
					for i, q := range queues {
						resp.Queues[i] = queueProto(q, stats)
					}
					return c.write(cmd.OutOrStdout(), resp)
				}
				if len(queues) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "no queues")
					return nil
				}
				return printQueueTable(cmd.OutOrStdout(), queues, stats)
			})
		}),
	}
	c.register(cmd)
	cmd.Flags().StringVar(&prefix, "prefix", "", "only names with this prefix")
	cmd.Flags().BoolVar(&stats, "stats", true, "fetch each queue's message counts")
	return cmd
}

// withStats replaces each queue by its GetQueue answer (with counts); a
// queue deleted meanwhile is left out.
func withStats(ctx context.Context, client *quorumq.Client, queues []*quorumq.QueueInfo) ([]*quorumq.QueueInfo, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make([]*quorumq.QueueInfo, len(queues))
	var (
		wg       sync.WaitGroup
		failOnce sync.Once
		failed   error // the first error, not the cancellations it caused
	)
	sem := make(chan struct{}, statsConcurrency)
	for i, q := range queues {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			info, err := client.GetQueue(ctx, q.Name)
			switch {
			case err == nil:
				out[i] = info
			case !errors.Is(err, quorumq.ErrQueueNotFound):
				failOnce.Do(func() {
					failed = fmt.Errorf("queue %s: %w", q.Name, err)
					cancel()
				})
			}
		})
	}
	wg.Wait()
	if failed != nil {
		return nil, failed
	}
	kept := out[:0]
	for _, q := range out {
		if q != nil {
			kept = append(kept, q)
		}
	}
	return kept, nil
}

func newQueueDeleteCmd() *cobra.Command {
	var c clientCmd
	cmd := &cobra.Command{
		Use: "delete NAME", Short: "Delete a queue and its messages", Args: cobra.ExactArgs(1),
		Long: clientLong("Delete a queue and its messages."),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.with(cmd, 0, func(ctx context.Context, client *quorumq.Client) error {
				if err := client.DeleteQueue(ctx, args[0]); err != nil {
					return err
				}
				return c.done(cmd, &qv1.DeleteQueueResponse{}, "deleted queue "+args[0])
			})
		}),
	}
	c.register(cmd)
	return cmd
}

func newQueuePurgeCmd() *cobra.Command {
	var c clientCmd
	cmd := &cobra.Command{
		Use: "purge NAME", Short: "Remove every message of a queue", Args: cobra.ExactArgs(1),
		Long: clientLong("Remove every message of a queue: visible, in flight and delayed."),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.with(cmd, 0, func(ctx context.Context, client *quorumq.Client) error {
				if err := client.PurgeQueue(ctx, args[0]); err != nil {
					return err
				}
				return c.done(cmd, &qv1.PurgeQueueResponse{}, "purged queue "+args[0])
			})
		}),
	}
	c.register(cmd)
	return cmd
}

// done prints the answer of a call that returns nothing: resp ({}) with
// -o json or yaml, else the line.
func (c *clientCmd) done(cmd *cobra.Command, resp proto.Message, line string) error {
	if c.structured() {
		return c.write(cmd.OutOrStdout(), resp)
	}
	_, err := fmt.Fprintln(cmd.OutOrStdout(), line)
	return err
}

func newSendCmd() *cobra.Command {
	var (
		c           clientCmd
		body, file  string
		m           quorumq.OutgoingMessage
		concurrency int
		priority    int
	)
	cmd := &cobra.Command{
		Use:   "send QUEUE [BODY]",
		Short: "Send a message, or one message per line of a file (--file -: standard input)",
		Long: clientLong(`Send a message: BODY, --body, or else all of standard input as one body.

With --file PATH (- for standard input) every non-empty line is a message,
sent in batches through the SDK's producer; --tag, --attr, --delay,
--group-id and --priority apply to each. A progress line (count, rate) goes to standard
error, a summary to standard output. A message that fails (too large,
invalid) is reported with its line number and the rest go on; an error that
would fail every message (no such queue, no permission, cluster
unavailable) stops reading. The summary counts the messages sent and names
the failed lines and the first line not sent; the exit status is non-zero
when any line failed or was not sent.`),
		Example: `  quorumq send jobs 'hello' --tag urgent
  quorumq send jobs 'page the on-call' --priority 9
  seq 1 1000 | quorumq send jobs --file -
  quorumq send jobs --file events.txt -o json`,
		Args: cobra.RangeArgs(1, 2),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if f.Changed("priority") {
				m.Priority = quorumq.Priority(priority)
			}
			if f.Changed("file") {
				switch {
				case len(args) == 2 || f.Changed("body"):
					return errors.New("--file takes no BODY or --body")
				case m.IdempotencyKey != "":
					return errors.New("--idempotency-key would make every line the same message; --file gives each its own")
				}
				return c.sendFile(cmd, args[0], file, m, concurrency)
			}
			switch {
			case len(args) == 2:
				m.Body = args[1]
			case f.Changed("body"):
				m.Body = body
			default:
				b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20+1))
				if err != nil {
					return err
				}
				m.Body = strings.TrimSuffix(string(b), "\n")
			}
			return c.with(cmd, 0, func(ctx context.Context, client *quorumq.Client) error {
				res, err := client.Queue(args[0]).Send(ctx, m)
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), &qv1.SendMessageResponse{MessageId: res.MessageID, Sequence: res.Sequence})
				}
				return printSendResult(cmd.OutOrStdout(), res)
			})
		}),
	}
	c.register(cmd)
	f := cmd.Flags()
	f.StringVar(&body, "body", "", "message body")
	f.StringVarP(&file, "file", "f", "", "send each line of this file as a message (-: standard input)")
	f.IntVar(&concurrency, "concurrency", 1, "with --file: batches in flight (1 keeps the input order)")
	f.StringSliceVar(&m.Tags, "tag", nil, "tag (repeat or comma-separate)")
	f.StringToStringVar(&m.Attributes, "attr", nil, "attribute key=value (repeatable)")
	f.DurationVar(&m.Delay, "delay", 0, "deliver after this delay")
	f.DurationVar(&m.TTL, "ttl", 0, "expire this long after the send (default: the queue's message ttl)")
	f.StringVar(&m.GroupID, "group-id", "", "FIFO group; on a fair queue, the tenant")
	f.IntVar(&priority, "priority", 4, "0 (lowest) to 9 (highest); receives take the highest first")
	f.StringVar(&m.DeduplicationID, "deduplication-id", "", "FIFO deduplication id")
	f.StringVar(&m.IdempotencyKey, "idempotency-key", "", "retry-safe key (default: a random one, kept across the SDK's retries)")
	return cmd
}

// sendFile sends each line of path (or standard input) through a Producer.
func (c *clientCmd) sendFile(cmd *cobra.Command, queue, path string, tmpl quorumq.OutgoingMessage, concurrency int) error {
	in := cmd.InOrStdin()
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	ctx := cmd.Context()
	client, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	progress := cmd.ErrOrStderr()
	interval, tty := time.Second, isTerminal(progress)
	if tty {
		interval = 200 * time.Millisecond
	}
	b := bulkSend{
		q: client.Queue(queue), tmpl: tmpl, concurrency: concurrency, timeout: c.timeout,
		progress: progress, interval: interval, redraw: tty, errOut: cmd.ErrOrStderr(),
	}
	sum, err := b.run(ctx, in)
	if perr := printSendSummary(cmd.OutOrStdout(), c.output, sum); err == nil {
		err = perr
	}
	return err
}

// bulkSend sends one message per input line through a Producer, reports
// progress and the failed lines.
type bulkSend struct {
	q           *quorumq.Queue
	tmpl        quorumq.OutgoingMessage
	concurrency int
	// timeout bounds each wait for room in the producer's buffer and the
	// final flush.
	timeout time.Duration
	// progress gets a line every interval; redraw rewrites it in place
	// (a terminal).
	progress io.Writer
	interval time.Duration
	redraw   bool
	errOut   io.Writer

	sent, failed atomic.Int64
	stopOnce     sync.Once
	stop         chan struct{} // closed on an error that every further message would get
	mu           sync.Mutex
	fatal        error
	reported     int
	failedLines  []lineRange // ascending: outcomes are collected in input order
}

// maxLine is the longest input line (the largest message is 1 MiB).
const maxLine = 4 << 20

// maxReported is how many failed lines are printed one by one.
const maxReported = 10

type pendingLine struct {
	line int
	f    *quorumq.Future
}

// perMessage tells whether err concerns one message only (the others may
// succeed); any other error stops the send.
func perMessage(err error) bool {
	return errors.Is(err, quorumq.ErrMessageTooLarge) || errors.Is(err, quorumq.ErrInvalidArgument)
}

func (b *bulkSend) run(ctx context.Context, in io.Reader) (sendSummary, error) {
	b.stop = make(chan struct{})
	start := time.Now()
	// A stream may commit a standard queue's batches out of order, so the
	// input order that --concurrency 1 promises needs calls, one at a time.
	p := b.q.NewProducer(quorumq.ProducerOptions{Concurrency: b.concurrency, Unary: b.concurrency == 1})
	pending := make(chan pendingLine, 1024)
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		b.collect(pending)
	}()
	stopProgress := b.startProgress()

	var sum sendSummary
	readErr := b.read(ctx, in, p, pending, &sum)
	close(pending)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.timeout)
	closeErr := p.Close(cctx)
	cancel()
	<-collected
	stopProgress()

	sum.Sent, sum.Failed, sum.Elapsed = b.sent.Load(), b.failed.Load(), time.Since(start)
	b.mu.Lock()
	fatal, unreported := b.fatal, sum.Failed-int64(b.reported)
	sum.FailedLines = b.failedLines
	b.mu.Unlock()
	if unreported > 0 {
		fmt.Fprintf(b.errOut, "quorumq: ... and %d more failed lines\n", unreported)
	}
	switch {
	case fatal != nil:
		return sum, fmt.Errorf("stopped (%s): %w", sum.outcome(), fatal)
	case readErr != nil:
		return sum, fmt.Errorf("%w (%s)", readErr, sum.outcome())
	case closeErr != nil:
		return sum, fmt.Errorf("waiting for the last sends (%s): %w", sum.outcome(), closeErr)
	case sum.Failed > 0:
		return sum, fmt.Errorf("%d of %d messages failed (%s), %d sent", sum.Failed, sum.Sent+sum.Failed, lineList(sum.FailedLines), sum.Sent)
	}
	return sum, nil
}

// read publishes every non-empty line until the input ends or a fatal
// error stops the send.
func (b *bulkSend) read(ctx context.Context, in io.Reader, p *quorumq.Producer, pending chan<- pendingLine, sum *sendSummary) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	line := 0
	for sc.Scan() {
		line++
		select {
		case <-b.stop:
			sum.NotSentFrom = line
			return nil
		default:
		}
		text := strings.TrimSuffix(sc.Text(), "\r")
		if text == "" {
			sum.Skipped++
			continue
		}
		m := b.tmpl
		m.Body = text
		pctx, cancel := context.WithTimeout(ctx, b.timeout)
		f, err := p.Publish(pctx, m)
		cancel()
		if err != nil {
			sum.NotSentFrom = line
			return fmt.Errorf("line %d: waiting for the producer: %w", line, err)
		}
		pending <- pendingLine{line, f}
	}
	if err := sc.Err(); err != nil {
		sum.NotSentFrom = line + 1
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("line %d: longer than %d MiB", line+1, maxLine>>20)
		}
		return fmt.Errorf("reading input: %w", err)
	}
	return nil
}

// collect waits for each message's outcome, in publish order.
func (b *bulkSend) collect(pending <-chan pendingLine) {
	for pl := range pending {
		_, err := pl.f.Wait(context.Background()) // Close answers every future
		if err == nil {
			b.sent.Add(1)
			continue
		}
		b.failed.Add(1)
		b.mu.Lock()
		b.failedLines = addLine(b.failedLines, pl.line)
		if !perMessage(err) {
			if b.fatal == nil {
				b.fatal = err
				b.stopOnce.Do(func() { close(b.stop) })
			}
		} else if b.reported < maxReported {
			b.reported++
			fmt.Fprintf(b.errOut, "quorumq: line %d: %s\n", pl.line, errorMessage(err))
		}
		b.mu.Unlock()
	}
	b.mu.Lock()
	if b.fatal != nil {
		b.reported = int(b.failed.Load()) // one error says it all
	}
	b.mu.Unlock()
}

// startProgress prints the progress line every interval until the
// returned func is called.
func (b *bulkSend) startProgress() func() {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(b.interval)
		defer t.Stop()
		last, lastAt := int64(0), time.Now()
		for {
			select {
			case <-done:
				if b.redraw {
					fmt.Fprint(b.progress, "\r\033[K")
				}
				return
			case now := <-t.C:
				sent := b.sent.Load()
				line := progressLine(sent, b.failed.Load(), rate(sent-last, now.Sub(lastAt)))
				last, lastAt = sent, now
				if b.redraw {
					fmt.Fprint(b.progress, "\r\033[K"+line)
				} else {
					fmt.Fprintln(b.progress, line)
				}
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

func newReceiveCmd() *cobra.Command {
	var (
		c         clientCmd
		max       int
		vis, wait time.Duration
		filter    quorumq.TagFilter
	)
	cmd := &cobra.Command{
		Use: "receive QUEUE", Short: "Receive (lease) messages",
		Long: clientLong(`Receive (lease) up to --max messages and print them: one block per
message (id, receive count, receipt handle, body), or with -o json
{"messages":[{"messageId","receiptHandle","body",…}]}. --wait long-polls
until a message arrives (default: the queue's receive wait). A received
message becomes visible again after its visibility timeout unless deleted
with "quorumq delete QUEUE RECEIPT_HANDLE".`),
		Example: `  quorumq receive jobs --max 10 --wait 5s
  quorumq receive jobs -o json | jq -r '.messages[].receiptHandle'`,
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			opts := []quorumq.ReceiveOption{quorumq.MaxMessages(max)}
			f := cmd.Flags()
			if f.Changed("visibility-timeout") {
				opts = append(opts, quorumq.VisibilityTimeout(vis))
			}
			extra := time.Duration(0)
			if f.Changed("wait") {
				opts = append(opts, quorumq.WaitTime(wait))
				extra = wait
			}
			if len(filter.All)+len(filter.Any)+len(filter.None) > 0 {
				opts = append(opts, quorumq.Filter(filter))
			}
			return c.with(cmd, extra, func(ctx context.Context, client *quorumq.Client) error {
				msgs, err := client.Queue(args[0]).Receive(ctx, opts...)
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), receiveProto(msgs))
				}
				if len(msgs) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "no messages")
					return nil
				}
				return printMessages(cmd.OutOrStdout(), msgs)
			})
		}),
	}
	c.register(cmd)
	f := cmd.Flags()
	f.IntVar(&max, "max", 1, "messages to receive, 1 to 100")
	f.DurationVar(&vis, "visibility-timeout", 0, "lease (default: the queue's)")
	f.DurationVar(&wait, "wait", 0, "long-poll up to this long (max 20s; default: the queue's receive wait)")
	f.StringSliceVar(&filter.All, "all", nil, "only messages with all these tags")
	f.StringSliceVar(&filter.Any, "any", nil, "only messages with one of these tags")
	f.StringSliceVar(&filter.None, "none", nil, "only messages with none of these tags")
	return cmd
}

func newDeleteCmd() *cobra.Command {
	var c clientCmd
	cmd := &cobra.Command{
		Use: "delete QUEUE RECEIPT_HANDLE...", Short: "Delete received messages", Args: cobra.MinimumNArgs(2),
		Long: clientLong(`Delete received messages by their receipt handles. Deleting a deleted
message succeeds; a handle superseded by a later receive fails
(STALE_RECEIPT_HANDLE).`),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.with(cmd, 0, func(ctx context.Context, client *quorumq.Client) error {
				q, handles := client.Queue(args[0]), args[1:]
				var err error
				if len(handles) == 1 {
					err = q.Delete(ctx, handles[0])
				} else {
					err = q.DeleteBatch(ctx, handles)
				}
				if err != nil {
					return err
				}
				line := "deleted 1 message"
				if len(handles) > 1 {
					line = fmt.Sprintf("deleted %d messages", len(handles))
				}
				return c.done(cmd, &qv1.DeleteMessageResponse{}, line)
			})
		}),
	}
	c.register(cmd)
	return cmd
}

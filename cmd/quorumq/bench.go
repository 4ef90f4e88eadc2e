package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	quorumq "github.com/quorumq/quorumq/sdk"
	"github.com/quorumq/quorumq/server/router"
)

// Attributes the bench stamps on every message it sends.
const (
	benchAttrTime = "bench-ts"  // intended send time, Unix nanoseconds
	benchAttrRun  = "bench-run" // run id: end-to-end latency counts only this run's messages
)

// Limits of the API the flags are checked against before any call.
const (
	benchMaxBatch        = 100
	benchMaxRequestBytes = 4 << 20
	benchMaxBody         = 1 << 20
	benchCallTimeout     = 10 * time.Second
	benchReceiveWait     = time.Second
	benchErrorBackoff    = 20 * time.Millisecond
	// Latencies are recorded in microseconds, 1 µs to 10 min, 3 digits.
	benchHistMaxMicros = int64(10 * time.Minute / time.Microsecond)
)

// benchOptions are the flags of `quorumq bench`.
type benchOptions struct {
	endpoint     string   // --endpoint, comma-separated
	endpoints    []string // endpoint split (by validate)
	caFile       string
	output       outputFormat
	queue        string
	topic        string // bench_topic.go: publish to it, consume its subscribed queue
	partitions   int
	producers    int
	consumers    int
	size         int
	batch        int
	inflight     int
	duration     time.Duration
	messages     int64
	rate         float64
	receiveBatch int
	create       bool
	token        string
	drainTimeout time.Duration
	visibility   time.Duration
	tag          string
	tagEvery     int
	filterTag    string
	progress     time.Duration
	unary        bool
}

func defaultBenchOptions() benchOptions {
	return benchOptions{
		endpoint: defaultEndpoint, endpoints: []string{defaultEndpoint}, queue: "bench", partitions: 1, producers: 8, consumers: 8,
		size: 1024, batch: 10, inflight: 1, duration: 30 * time.Second,
		drainTimeout: 30 * time.Second, progress: time.Second,
	}
}

func newBenchCmd() *cobra.Command {
	o := defaultBenchOptions()
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load a queue with producers and consumers; report throughput and latency percentiles",
		Long: `Runs P producers and C consumers against the given endpoints (any node
forwards to the leader). Producers send --size byte messages, --batch per
request, with up to --inflight unconfirmed requests each: as fast as
confirmed (closed loop), or at --rate messages/s in total (open loop; latency
is measured from each request's intended start, so a stalled server is not
hidden). Producers are the Go SDK's Producer (one SendStream each, the
server coalescing what the --inflight senders publish); consumers are the
Go SDK's Consumer with its defaults (a Consume stream: messages pushed
against a prefetch credit, deletes batched asynchronously): what a user of
the SDK gets. --unary sends with SendMessage / SendMessageBatch calls
instead and consumes with receive and delete calls. Each message carries its intended send time, so end-to-end latency is
receive time minus that.

The run stops sending after --duration and/or --messages, then drains:
consumers go on until as many messages were received as were sent, or
--drain-timeout. With --producers 0 it only receives (from a backlog) until
--duration or --messages. A progress line each second goes to stderr; the
summary to stdout (one JSON object per line with -o json, a YAML document
with -o yaml). Failed calls are counted in the summary; only an error that
stops the run makes the exit status non-zero.`,
		Example: `  quorumq bench --endpoint 127.0.0.1:9091,127.0.0.1:9092,127.0.0.1:9093 --queue b1 --create --duration 15s
  quorumq bench --queue b2 --create --batch 1 --inflight 500 --producers 4 --consumers 4
  quorumq bench --queue b3 --create --rate 5000 --batch 1 --inflight 100 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := runBench(ctx, o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if o.output.structured() {
				return writeBenchDocument(cmd.OutOrStdout(), o.output, res)
			}
			return writeBenchText(cmd.OutOrStdout(), res)
		},
	}
	registerEndpoint(cmd, &o.endpoint)
	cmd.Flag("endpoint").Usage = "gRPC addresses of the nodes to load, comma-separated (clients spread over them)"
	registerTLS(cmd, &o.caFile)
	o.output.register(cmd)
	f := cmd.Flags()
	f.StringVar(&o.queue, "queue", o.queue, "queue name")
	f.StringVar(&o.topic, "topic", "", "publish to this topic instead (with --create: made, with --partitions, and subscribed by --queue); consumers read --queue")
	f.IntVar(&o.partitions, "partitions", o.partitions, "partitions of the queue when --create makes it (1-64)")
	f.IntVar(&o.producers, "producers", o.producers, "producers, each with its own connection (0: receive only)")
	f.IntVar(&o.consumers, "consumers", o.consumers, "consumers, each with its own connection (0: send only)")
	f.IntVar(&o.size, "size", o.size, "message body size in bytes")
	f.IntVar(&o.batch, "batch", o.batch, "messages a sender publishes before it waits for their outcomes (--unary: per request; 1: SendMessage, more: SendMessageBatch)")
	f.IntVar(&o.inflight, "inflight", o.inflight, "senders per producer, each with --batch unconfirmed messages")
	f.DurationVar(&o.duration, "duration", o.duration, "how long to send (0: until --messages)")
	f.Int64Var(&o.messages, "messages", 0, "messages to send, or with --producers 0 to receive (0: until --duration)")
	f.Float64Var(&o.rate, "rate", 0, "open loop: messages/s over all producers (0: closed loop, as fast as confirmed)")
	f.IntVar(&o.receiveBatch, "receive-batch", o.receiveBatch, "with --unary: most messages per receive (1-100; 0: the SDK Consumer's default)")
	f.BoolVar(&o.create, "create", false, "create the queue first (same attributes again is a no-op)")
	f.StringVar(&o.token, "token", "", "bearer token for a secured cluster (default: none, dev mode)")
	f.DurationVar(&o.drainTimeout, "drain-timeout", o.drainTimeout, "how long consumers go on after sending stops")
	f.DurationVar(&o.visibility, "visibility-timeout", 0, "lease of received messages (default: the queue's)")
	f.StringVar(&o.tag, "tag", "", "tag sent messages with this tag")
	f.IntVar(&o.tagEvery, "tag-every", 0, "with --tag: tag only every N-th message (100 = 1%; 0: all)")
	f.StringVar(&o.filterTag, "filter-tag", "", "consumers receive only messages with this tag")
	f.DurationVar(&o.progress, "progress-interval", o.progress, "progress line period on stderr (0: none)")
	f.BoolVar(&o.unary, "unary", false, "send and consume with unary calls instead of the SDK's streams")
	return cmd
}

// validate checks the flags against each other and the API's limits.
func (o *benchOptions) validate() error {
	eps, err := splitEndpoints(o.endpoint)
	if err != nil {
		return err
	}
	for _, e := range eps {
		if _, _, err := net.SplitHostPort(e); err != nil {
			return fmt.Errorf("--endpoint %q: %w", e, err)
		}
	}
	o.endpoints = eps
	switch {
	case o.queue == "":
		return errors.New("--queue is required")
	case o.partitions < 1 || o.partitions > 64:
		return fmt.Errorf("--partitions %d: must be 1-64", o.partitions)
	case o.producers < 0 || o.consumers < 0:
		return errors.New("--producers and --consumers must not be negative")
	case o.producers == 0 && o.consumers == 0:
		return errors.New("--producers and --consumers are both 0: nothing to do")
	case o.size < 1 || o.size > benchMaxBody:
		return fmt.Errorf("--size %d: must be 1-%d bytes", o.size, benchMaxBody)
	case o.batch < 1 || o.batch > benchMaxBatch:
		return fmt.Errorf("--batch %d: must be 1-%d", o.batch, benchMaxBatch)
	case o.batch*o.size > benchMaxRequestBytes:
		return fmt.Errorf("--batch %d × --size %d exceeds the 4 MiB request limit", o.batch, o.size)
	case o.inflight < 1:
		return fmt.Errorf("--inflight %d: must be at least 1", o.inflight)
	case o.receiveBatch < 0 || o.receiveBatch > benchMaxBatch:
		return fmt.Errorf("--receive-batch %d: must be 0-%d (0: the SDK Consumer's default)", o.receiveBatch, benchMaxBatch)
	case o.duration < 0 || o.messages < 0 || o.drainTimeout < 0 || o.visibility < 0 || o.progress < 0:
		return errors.New("--duration, --messages, --drain-timeout, --visibility-timeout and --progress-interval must not be negative")
	case o.duration == 0 && o.messages == 0:
		return errors.New("unbounded run: give --duration and/or --messages")
	case o.rate < 0:
		return fmt.Errorf("--rate %v: must not be negative", o.rate)
	case o.rate > 0 && o.producers == 0:
		return errors.New("--rate needs producers")
	case o.tagEvery < 0:
		return fmt.Errorf("--tag-every %d: must not be negative", o.tagEvery)
	case o.tagEvery > 0 && o.tag == "":
		return errors.New("--tag-every needs --tag")
	}
	return nil
}

// latencyRecorder is an HDR histogram of the whole run and one of the
// current progress interval, safe for concurrent use. Values are in
// microseconds; values beyond the range are clamped to its top.
type latencyRecorder struct {
	mu       sync.Mutex
	total    *hdrhistogram.Histogram
	interval *hdrhistogram.Histogram
}

func newLatencyRecorder() *latencyRecorder {
	return &latencyRecorder{
		total:    hdrhistogram.New(1, benchHistMaxMicros, 3),
		interval: hdrhistogram.New(1, benchHistMaxMicros, 3),
	}
}

// record adds n observations of d.
func (l *latencyRecorder) record(d time.Duration, n int64) {
	us := min(max(d.Microseconds(), 1), benchHistMaxMicros)
	l.mu.Lock()
	_ = l.total.RecordValues(us, n) // cannot fail: us is within range
	_ = l.interval.RecordValues(us, n)
	l.mu.Unlock()
}

// takeInterval returns the summary of the interval since the last call and
// starts a new one.
func (l *latencyRecorder) takeInterval() latencySummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := summarize(l.interval)
	l.interval.Reset()
	return s
}

func (l *latencyRecorder) summary() latencySummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	return summarize(l.total)
}

// latencySummary is a histogram's percentiles in milliseconds.
type latencySummary struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

func summarize(h *hdrhistogram.Histogram) latencySummary {
	if h.TotalCount() == 0 {
		return latencySummary{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return latencySummary{
		Count: h.TotalCount(),
		Mean:  h.Mean() / 1000,
		P50:   ms(h.ValueAtPercentile(50)),
		P90:   ms(h.ValueAtPercentile(90)),
		P99:   ms(h.ValueAtPercentile(99)),
		P999:  ms(h.ValueAtPercentile(99.9)),
		Max:   ms(h.Max()),
	}
}

// errorCounts counts failures by gRPC code name (batch entries report
// theirs by name too).
type errorCounts struct {
	mu sync.Mutex
	m  map[string]int64
}

func (e *errorCounts) add(code string, n int64) {
	e.mu.Lock()
	if e.m == nil {
		e.m = map[string]int64{}
	}
	e.m[code] += n
	e.mu.Unlock()
}

func (e *errorCounts) addErr(err error) { e.add(status.Code(err).String(), 1) }

func (e *errorCounts) snapshot() map[string]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int64, len(e.m))
	for k, v := range e.m {
		out[k] = v
	}
	return out
}

func (e *errorCounts) total() int64 {
	var n int64
	for _, v := range e.snapshot() {
		n += v
	}
	return n
}

// benchConfig is the run's configuration as the JSON output shows it.
type benchConfig struct {
	Endpoints    []string `json:"endpoints"`
	Queue        string   `json:"queue"`
	Partitions   int      `json:"partitions"`
	Producers    int      `json:"producers"`
	Consumers    int      `json:"consumers"`
	Size         int      `json:"size"`
	Batch        int      `json:"batch"`
	Inflight     int      `json:"inflight"`
	Duration     string   `json:"duration"`
	Messages     int64    `json:"messages"`
	Rate         float64  `json:"rate"`
	ReceiveBatch int      `json:"receiveBatch"`
	Tag          string   `json:"tag,omitempty"`
	TagEvery     int      `json:"tagEvery,omitempty"`
	FilterTag    string   `json:"filterTag,omitempty"`
	Unary        bool     `json:"unary,omitempty"`
}

// benchResult is what a run measured; --json prints it as one object.
type benchResult struct {
	Config  benchConfig `json:"config"`
	RunID   string      `json:"runId"`
	Mode    string      `json:"mode"` // "closed" or "open"
	Elapsed float64     `json:"elapsedSec"`
	// SendElapsed is the send phase; ReceiveElapsed runs from the start
	// to the last consumer's end (drain included), or, receive-only with
	// --messages, to the handling of the last of them (ReceivedPerSec
	// divides by it; DeletedPerSec by the consumers' end, when the
	// deletes are confirmed).
	SendElapsed       float64          `json:"sendElapsedSec"`
	ReceiveElapsed    float64          `json:"receiveElapsedSec"`
	Sent              int64            `json:"sent"`
	SendFailed        int64            `json:"sendFailed"`
	Received          int64            `json:"received"`
	Deleted           int64            `json:"deleted"`
	SentPerSec        float64          `json:"sentPerSec"`
	ReceivedPerSec    float64          `json:"receivedPerSec"`
	DeletedPerSec     float64          `json:"deletedPerSec"`
	Drained           bool             `json:"drained"`
	SendLatency       latencySummary   `json:"sendLatencyMs"`
	EndToEndLatency   latencySummary   `json:"endToEndLatencyMs"`
	Errors            map[string]int64 `json:"errors"`
	ProgressIntervals int              `json:"progressIntervals"`
}

// benchRun is the shared state of one run.
type benchRun struct {
	o     benchOptions
	runID string
	body  string
	start time.Time

	claimed atomic.Int64 // messages handed to senders (--messages bound, tag-every index)
	slot    atomic.Int64 // open loop: next request's index in the schedule

	sent, sendFailed, received, deleted atomic.Int64
	// lastAt: receive-only with --messages, when the last of them was
	// handled (nanoseconds since start; 0: not yet).
	lastAt          atomic.Int64
	sendLat, e2eLat *latencyRecorder
	errs            errorCounts

	sendStop        chan struct{} // closed: start no more sends
	stopSendOnce    sync.Once
	sendsDone       atomic.Bool // every sender has returned
	cancelConsumers context.CancelFunc
}

func (r *benchRun) stopSending() { r.stopSendOnce.Do(func() { close(r.sendStop) }) }

func (r *benchRun) sendingStopped() bool {
	select {
	case <-r.sendStop:
		return true
	default:
		return false
	}
}

// checkDone ends the consumers once there is nothing left for them: with
// producers, when sending is over and as many messages were received as
// sent; receive-only, when --messages were received.
func (r *benchRun) checkDone() {
	if r.o.producers > 0 {
		if r.sendsDone.Load() && r.received.Load() >= r.sent.Load() {
			r.cancelConsumers()
		}
	} else if r.o.messages > 0 && r.received.Load() >= r.o.messages {
		r.cancelConsumers()
	}
}

// claim reserves the messages of the next send request: up to --batch,
// fewer at the end of --messages, 0 when there are none left. It returns
// the index of the first one.
func (r *benchRun) claim() (first int64, n int) {
	n = r.o.batch
	end := r.claimed.Add(int64(n))
	if r.o.messages > 0 && end > r.o.messages {
		n -= int(end - r.o.messages)
	}
	if n <= 0 {
		return 0, 0
	}
	return end - int64(r.o.batch), n
}

// bearer sends a token on every call (loopback dev clusters have no TLS).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

func (o *benchOptions) dial(ep string) (*grpc.ClientConn, error) {
	creds, err := transportCredentials(o.caFile)
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if o.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(o.token)))
	}
	conn, err := grpc.NewClient(ep, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", ep, err)
	}
	return conn, nil
}

// dialSDK is an SDK client of the endpoints for client i, its calls
// starting at endpoint i (the SDK spreads them over all).
func (o *benchOptions) dialSDK(i int) (*quorumq.Client, error) {
	creds, err := transportCredentials(o.caFile)
	if err != nil {
		return nil, err
	}
	n := len(o.endpoints)
	eps := make([]string, n)
	for k := range eps {
		eps[k] = o.endpoints[(i+k)%n]
	}
	opts := []quorumq.Option{quorumq.WithTransportCredentials(creds)}
	if o.token != "" {
		opts = append(opts, quorumq.WithTokenSource(quorumq.StaticToken(o.token)))
	}
	return quorumq.Dial(context.Background(), eps, opts...)
}

// prepareQueueSDK is prepareQueue for a receive-only run.
func prepareQueueSDK(ctx context.Context, o benchOptions, c *quorumq.Client) error {
	ctx, cancel := context.WithTimeout(ctx, benchCallTimeout)
	defer cancel()
	if o.create {
		var attrs quorumq.QueueAttributes
		if o.partitions > 1 {
			attrs.Partitions = o.partitions
		}
		if _, err := c.CreateQueue(ctx, o.queue, attrs, nil); err != nil {
			return fmt.Errorf("create queue %s: %w", o.queue, err)
		}
		return nil
	}
	if _, err := c.GetQueue(ctx, o.queue); err != nil {
		if errors.Is(err, quorumq.ErrQueueNotFound) {
			return fmt.Errorf("queue %s does not exist (use --create): %w", o.queue, err)
		}
		return fmt.Errorf("get queue %s: %w", o.queue, err)
	}
	return nil
}

// runBench runs the load described by o (already validated) and returns
// what it measured. Progress lines go to progress. Cancelling ctx ends the
// run early with the figures so far.
func runBench(ctx context.Context, o benchOptions, progress io.Writer) (*benchResult, error) {
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	producers := make([]*benchProducer, o.producers)
	for i := range producers {
		producers[i] = &benchProducer{}
		for k := range o.endpoints {
			c, err := o.dial(o.endpoints[(i+k)%len(o.endpoints)])
			if err != nil {
				return nil, err
			}
			conns = append(conns, c)
			producers[i].apis = append(producers[i].apis, qv1.NewQueueServiceClient(c))
			producers[i].topics = append(producers[i].topics, qv1.NewTopicServiceClient(c))
		}
	}
	var clients []*quorumq.Client // the consumers', each its own connections
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	for i := 0; i < o.consumers; i++ {
		c, err := o.dialSDK(o.producers + i)
		if err != nil {
			return nil, err
		}
		clients = append(clients, c)
	}
	if err := prepareQueue(ctx, o, conns, clients); err != nil {
		return nil, err
	}
	if !o.unary {
		for i, p := range producers {
			c, err := o.dialSDK(i)
			if err != nil {
				return nil, err
			}
			defer c.Close()
			// Room for every message its senders may have unconfirmed.
			p.prod = c.Queue(o.queue).NewProducer(quorumq.ProducerOptions{BufferSize: o.inflight * o.batch})
		}
	}

	idb := make([]byte, 6)
	_, _ = rand.Read(idb)
	r := &benchRun{o: o, runID: hex.EncodeToString(idb), body: strings.Repeat("x", o.size),
		sendLat: newLatencyRecorder(), e2eLat: newLatencyRecorder(), sendStop: make(chan struct{})}
	consCtx, cancelCons := context.WithCancel(ctx)
	defer cancelCons()
	r.cancelConsumers = cancelCons
	r.start = time.Now()
	if o.producers == 0 {
		r.stopSending()
		r.sendsDone.Store(true)
	}

	// The send phase ends at --duration, after --messages, or on ctx.
	if o.duration > 0 {
		t := time.AfterFunc(o.duration, r.stopSending)
		defer t.Stop()
	}
	stopOnCtx := context.AfterFunc(ctx, r.stopSending)
	defer stopOnCtx()

	var sendWG, consWG sync.WaitGroup
	for _, p := range producers {
		for w := 0; w < o.inflight; w++ {
			sendWG.Add(1)
			go func() {
				defer sendWG.Done()
				r.sender(ctx, p)
			}()
		}
	}
	var consEnd atomic.Int64 // nanoseconds since start of the last consumer's end
	for _, c := range clients {
		consWG.Add(1)
		go func() {
			defer consWG.Done()
			r.consumer(consCtx, c)
			for d := int64(time.Since(r.start)); ; {
				cur := consEnd.Load()
				if d <= cur || consEnd.CompareAndSwap(cur, d) {
					break
				}
			}
		}()
	}
	// Receive-only runs end at --duration too.
	if o.producers == 0 && o.duration > 0 {
		t := time.AfterFunc(o.duration, cancelCons)
		defer t.Stop()
	}

	progDone := make(chan struct{})
	intervals := 0
	if o.progress > 0 {
		go func() {
			defer close(progDone)
			intervals = r.reportProgress(consCtx, progress)
		}()
	} else {
		close(progDone)
	}

	sendWG.Wait()
	sendElapsed := time.Since(r.start)
	for _, p := range producers {
		if p.prod != nil {
			_ = p.prod.Close(ctx) // every send is answered already
		}
	}
	if o.producers > 0 {
		r.sendsDone.Store(true)
		drain := time.AfterFunc(o.drainTimeout, cancelCons)
		defer drain.Stop()
	}
	if o.consumers == 0 {
		cancelCons()
	}
	r.checkDone()
	consWG.Wait()
	cancelCons()
	<-progDone
	elapsed := time.Since(r.start)
	if o.producers == 0 {
		sendElapsed = 0
	}
	return r.result(elapsed, sendElapsed, time.Duration(consEnd.Load()), intervals), nil
}

// prepareQueue creates the queue with --create, or checks that it exists,
// through the first producer's connection or else the first consumer's.
func prepareQueue(ctx context.Context, o benchOptions, conns []*grpc.ClientConn, clients []*quorumq.Client) error {
	if len(conns) == 0 {
		return prepareQueueSDK(ctx, o, clients[0])
	}
	q := qv1.NewQueueServiceClient(conns[0])
	ctx, cancel := context.WithTimeout(ctx, benchCallTimeout)
	defer cancel()
	if o.create {
		req := &qv1.CreateQueueRequest{Name: o.queue}
		if o.partitions > 1 {
			req.Attributes = &qv1.QueueAttributes{Partitions: int32(o.partitions)}
		}
		if _, err := q.CreateQueue(ctx, req); err != nil {
			return fmt.Errorf("create queue %s: %w", o.queue, err)
		}
		return prepareTopic(ctx, o, conns[0])
	}
	if _, err := q.GetQueue(ctx, &qv1.GetQueueRequest{Name: o.queue}); err != nil {
		if status.Code(err) == codes.NotFound {
			return fmt.Errorf("queue %s does not exist (use --create): %w", o.queue, err)
		}
		return fmt.Errorf("get queue %s: %w", o.queue, err)
	}
	return nil
}

// sender is one of a producer's --inflight send loops. Closed loop: the
// next request starts when the last is confirmed. Open loop: request k is
// due at start + k·batch/rate and its latency counts from then, however
// late it actually starts (no coordinated omission).
func (r *benchRun) sender(ctx context.Context, q *benchProducer) {
	var interval time.Duration
	if r.o.rate > 0 {
		interval = time.Duration(float64(r.o.batch) / r.o.rate * float64(time.Second))
	}
	for !r.sendingStopped() {
		intended := time.Now()
		if interval > 0 {
			intended = r.start.Add(time.Duration(r.slot.Add(1)-1) * interval)
			if r.o.duration > 0 && intended.Sub(r.start) >= r.o.duration {
				return
			}
			if wait := time.Until(intended); wait > 0 && !r.waitOrStop(wait) {
				return
			}
		}
		first, n := r.claim()
		if n == 0 {
			r.stopSending()
			return
		}
		if err := r.send(ctx, q, first, n, intended); err != nil {
			r.errs.addErr(err)
			r.sendFailed.Add(int64(n))
			if interval == 0 && !r.waitOrStop(benchErrorBackoff) {
				return
			}
		}
	}
}

// benchProducer is one producer's connections, one per endpoint. Its sends
// go to the endpoint that last served one without forwarding it (the
// queue's shard leader), as the SDK's calls do.
type benchProducer struct {
	apis   []qv1.QueueServiceClient
	topics []qv1.TopicServiceClient // same connections, for --topic
	cur    atomic.Int64
	// prod, unless --unary: the SDK Producer its senders publish to.
	prod *quorumq.Producer
}

func (p *benchProducer) api() (int, qv1.QueueServiceClient) {
	k := int(p.cur.Load())
	return k, p.apis[k]
}

// served moves the producer to the next endpoint when the reply of
// endpoint k says the call was forwarded.
func (p *benchProducer) served(k int, md metadata.MD) {
	if len(md.Get(router.ForwardedToHeader)) > 0 {
		p.cur.CompareAndSwap(int64(k), int64((k+1)%len(p.apis)))
	}
}

// waitOrStop waits d; false when sending stopped meanwhile.
func (r *benchRun) waitOrStop(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.sendStop:
		return false
	}
}

func (r *benchRun) entry(idx int64, i int, stamp string) *qv1.SendMessageBatchEntry {
	e := &qv1.SendMessageBatchEntry{
		Id: strconv.Itoa(i), Body: r.body,
		Attributes: map[string]string{benchAttrTime: stamp, benchAttrRun: r.runID},
	}
	if r.o.tag != "" && (r.o.tagEvery <= 1 || idx%int64(r.o.tagEvery) == 0) {
		e.Tags = []string{r.o.tag}
	}
	return e
}

// send sends messages first..first+n-1 in one request. In-flight requests
// finish after sending stops (their outcome counts); only ctx cuts them.
func (r *benchRun) send(ctx context.Context, p *benchProducer, first int64, n int, intended time.Time) error {
	if r.o.topic != "" {
		return r.publishTopic(ctx, p, first, n, intended)
	}
	stamp := strconv.FormatInt(intended.UnixNano(), 10)
	ctx, cancel := context.WithTimeout(ctx, benchCallTimeout)
	defer cancel()
	if p.prod != nil {
		return r.publish(ctx, p.prod, first, n, intended, stamp)
	}
	k, q := p.api()
	var md metadata.MD
	defer func() { p.served(k, md) }()
	ok := int64(n)
	if r.o.batch == 1 {
		e := r.entry(first, 0, stamp)
		_, err := q.SendMessage(ctx, &qv1.SendMessageRequest{Queue: r.o.queue, Body: e.Body, Attributes: e.Attributes, Tags: e.Tags}, grpc.Header(&md))
		if err != nil {
			return err
		}
	} else {
		entries := make([]*qv1.SendMessageBatchEntry, n)
		for i := range entries {
			entries[i] = r.entry(first+int64(i), i, stamp)
		}
		resp, err := q.SendMessageBatch(ctx, &qv1.SendMessageBatchRequest{Queue: r.o.queue, Entries: entries}, grpc.Header(&md))
		if err != nil {
			return err
		}
		for _, f := range resp.GetFailed() {
			r.errs.add(f.GetCode(), 1)
		}
		ok = int64(len(resp.GetSuccessful()))
		r.sendFailed.Add(int64(len(resp.GetFailed())))
	}
	r.sent.Add(ok)
	r.sendLat.record(time.Since(intended), ok)
	return nil
}

// publish sends messages first..first+n-1 with the SDK Producer and
// waits for their outcomes.
func (r *benchRun) publish(ctx context.Context, p *quorumq.Producer, first int64, n int, intended time.Time, stamp string) error {
	futures := make([]*quorumq.Future, 0, n)
	for i := range n {
		e := r.entry(first+int64(i), i, stamp)
		f, err := p.Publish(ctx, quorumq.OutgoingMessage{Body: e.Body, Attributes: e.Attributes, Tags: e.Tags})
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	var ok int64
	var errs []error
	for _, f := range futures {
		if _, err := f.Wait(ctx); err != nil {
			errs = append(errs, err)
			continue
		}
		ok++
	}
	if ok == 0 && len(errs) > 0 {
		return errs[0] // the caller counts the n failures
	}
	for _, err := range errs {
		r.errs.add(sdkCode(err), 1)
	}
	r.sendFailed.Add(int64(len(errs)))
	r.sent.Add(ok)
	r.sendLat.record(time.Since(intended), ok)
	return nil
}

// errBenchSurplus is a handler's answer for a message past --messages
// of a receive-only run: it goes back to the queue at once.
var errBenchSurplus = errors.New("past --messages")

// consumer runs the SDK's Consumer, with its defaults, until consCtx
// ends: what the bench measures is what a user of the SDK gets. Each
// handled message is deleted (batched, asynchronously, by the Consumer).
func (r *benchRun) consumer(consCtx context.Context, c *quorumq.Client) {
	o := quorumq.ConsumerOptions{
		MaxMessages: r.o.receiveBatch, VisibilityTimeout: r.o.visibility,
		Unary: r.o.unary,
		OnError: func(_ *quorumq.Message, err error) {
			if !errors.Is(err, errBenchSurplus) {
				r.errs.add(sdkCode(err), 1)
			}
		},
		NackBackoff: func(m *quorumq.Message, err error) time.Duration {
			if errors.Is(err, errBenchSurplus) {
				return 0
			}
			return quorumq.DefaultNackBackoff(m, err)
		},
	}
	if r.o.filterTag != "" {
		o.Filter = &quorumq.TagFilter{All: []string{r.o.filterTag}}
	}
	cons := c.Queue(r.o.queue).NewConsumer(o)
	limit := int64(0)
	if r.o.producers == 0 {
		limit = r.o.messages
	}
	err := cons.Run(consCtx, func(_ context.Context, m *quorumq.Message) error {
		now := time.Now()
		switch n := r.received.Add(1); {
		case limit > 0 && n > limit:
			r.received.Add(-1)
			r.cancelConsumers()
			return errBenchSurplus
		case limit > 0 && n == limit:
			r.lastAt.Store(int64(now.Sub(r.start)))
		}
		if m.Attributes[benchAttrRun] == r.runID {
			if ns, err := strconv.ParseInt(m.Attributes[benchAttrTime], 10, 64); err == nil {
				r.e2eLat.record(now.Sub(time.Unix(0, ns)), 1)
			}
		}
		r.checkDone()
		return nil
	})
	if err != nil {
		r.errs.add(sdkCode(err), 1)
	}
	r.deleted.Add(cons.Stats().Deleted)
}

// sdkCode is the gRPC code name of an SDK error.
func sdkCode(err error) string {
	var e *quorumq.Error
	if errors.As(err, &e) {
		return e.Code.String()
	}
	return status.Code(err).String()
}

// reportProgress prints a line each --progress-interval until ctx ends;
// it returns how many it printed.
func (r *benchRun) reportProgress(ctx context.Context, w io.Writer) int {
	t := time.NewTicker(r.o.progress)
	defer t.Stop()
	lines := 0
	var lastSent, lastRecv int64
	last := r.start
	for {
		select {
		case <-ctx.Done():
			return lines
		case now := <-t.C:
			sent, recv := r.sent.Load(), r.received.Load()
			secs := now.Sub(last).Seconds()
			sl, el := r.sendLat.takeInterval(), r.e2eLat.takeInterval()
			fmt.Fprintf(w, "%6.1fs  sent %9d %8.0f/s  recv %9d %8.0f/s  send p50 %7.2f p99 %7.2f ms  e2e p50 %7.2f p99 %7.2f ms  errors %d\n",
				now.Sub(r.start).Seconds(), sent, float64(sent-lastSent)/secs, recv, float64(recv-lastRecv)/secs,
				sl.P50, sl.P99, el.P50, el.P99, r.errs.total())
			lastSent, lastRecv, last = sent, recv, now
			lines++
		}
	}
}

func (r *benchRun) result(elapsed, sendElapsed, recvElapsed time.Duration, intervals int) *benchResult {
	o := r.o
	consEnd := recvElapsed
	if at := time.Duration(r.lastAt.Load()); at > 0 {
		// Receive-only: the rate of receiving --messages, not counting
		// the consumers' shutdown after them (a long poll that found
		// nothing more ends first: up to 2 s once a filter is drained).
		recvElapsed = at
	}
	res := &benchResult{
		Config: benchConfig{Endpoints: o.endpoints, Queue: o.queue, Partitions: o.partitions, Producers: o.producers,
			Consumers: o.consumers, Size: o.size, Batch: o.batch, Inflight: o.inflight, Duration: o.duration.String(),
			Messages: o.messages, Rate: o.rate, ReceiveBatch: o.receiveBatch, Tag: o.tag, TagEvery: o.tagEvery,
			FilterTag: o.filterTag, Unary: o.unary},
		RunID: r.runID, Mode: "closed",
		Elapsed: elapsed.Seconds(), SendElapsed: sendElapsed.Seconds(), ReceiveElapsed: recvElapsed.Seconds(),
		Sent: r.sent.Load(), SendFailed: r.sendFailed.Load(), Received: r.received.Load(), Deleted: r.deleted.Load(),
		SendLatency: r.sendLat.summary(), EndToEndLatency: r.e2eLat.summary(), Errors: r.errs.snapshot(),
		ProgressIntervals: intervals,
	}
	if o.rate > 0 {
		res.Mode = "open"
	}
	res.SentPerSec = perSec(res.Sent, sendElapsed)
	res.ReceivedPerSec = perSec(res.Received, recvElapsed)
	res.DeletedPerSec = perSec(res.Deleted, consEnd)
	res.Drained = o.producers == 0 || o.consumers == 0 || res.Received >= res.Sent
	return res
}

func perSec(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

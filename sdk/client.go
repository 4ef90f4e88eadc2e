// Package quorumq is the Go client of quorumq, an SQS-style message queue
// replicated with Raft.
//
// A Client talks gRPC to one or many nodes (any node serves any call; it
// forwards to the leader), spreads calls over them and fails over when one
// is down. A queue's calls settle on the node that serves them without
// forwarding (the shard leader's), told by the x-quorumq-forwarded-to
// header of forwarded answers. Calls that may safely be repeated are retried with exponential
// backoff and full jitter (see RetryPolicy); sends carry an idempotency
// key that is kept across retries, so a send retried across a leader
// change is stored once.
//
// On top of the per-call API (Queue.Send, Queue.Receive, Queue.Delete, …)
// sit a batching Producer and a Consumer that runs handlers concurrently,
// keeps their messages' leases alive, deletes on success, nacks on error
// and shuts down without leaving messages invisible. For topics, a
// Publisher publishes and a GroupConsumer is a member of a consumer group
// (heartbeats, rebalance callbacks, commit after handling).
//
// Every error the server answers is an *Error; match it with errors.Is
// against the sentinels (ErrQueueNotFound, ErrStaleReceipt, …).
package quorumq

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// TokenSource returns the bearer token for a call. It is called before
// every attempt, so it may refresh tokens; it should cache them.
type TokenSource func(ctx context.Context) (string, error)

// StaticToken is a TokenSource that always returns token.
func StaticToken(token string) TokenSource {
	return func(context.Context) (string, error) { return token, nil }
}

// Option configures Dial.
type Option func(*options)

type options struct {
	creds    credentials.TransportCredentials
	tokens   TokenSource
	retry    RetryPolicy
	log      *slog.Logger
	dialOpts []grpc.DialOption
}

// WithTLS connects with TLS using cfg (nil: the system roots). Without it
// (or WithTransportCredentials) the connection is plaintext, as for a dev
// node on loopback.
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) { o.creds = credentials.NewTLS(cfg) }
}

// WithTransportCredentials sets the gRPC transport credentials.
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return func(o *options) { o.creds = c }
}

// WithTokenSource sends "authorization: Bearer <token>" on every call.
// Use it with TLS: over plaintext the token travels in the clear.
func WithTokenSource(ts TokenSource) Option {
	return func(o *options) { o.tokens = ts }
}

// WithRetryPolicy replaces DefaultRetryPolicy (zero fields keep their
// defaults).
func WithRetryPolicy(p RetryPolicy) Option {
	return func(o *options) { o.retry = p }
}

// WithLogger logs retries and the consumer's troubles (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// WithDialOptions adds gRPC dial options (interceptors, keepalive, …).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// Client is a connection to a quorumq cluster. It is safe for concurrent
// use; make one per process and Close it at the end.
type Client struct {
	eps    []*endpoint
	next   atomic.Uint64
	routes sync.Map // queue name -> *route
	tokens TokenSource
	retry  RetryPolicy
	log    *slog.Logger
	closed atomic.Bool
}

// endpoint is one node's address and connection.
type endpoint struct {
	addr      string
	conn      *grpc.ClientConn
	api       qv1.QueueServiceClient
	topics    qv1.TopicServiceClient
	downUntil atomic.Int64 // unix nanos: skipped until then after a transport failure
}

// downFor is how long an endpoint that could not be reached is skipped
// while others are up.
const downFor = 2 * time.Second

// Dial connects to a cluster through endpoints ("host:port" of the gRPC
// API of any nodes). Connections are made lazily: Dial fails only on bad
// options, not on unreachable nodes. Calls start at the endpoints in turn
// and a retry moves to the next one.
func Dial(ctx context.Context, endpoints []string, opts ...Option) (*Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("quorumq: dial: no endpoints")
	}
	o := options{retry: DefaultRetryPolicy}
	for _, opt := range opts {
		opt(&o)
	}
	if o.creds == nil {
		o.creds = insecure.NewCredentials()
	}
	if o.log == nil {
		o.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Client{tokens: o.tokens, retry: o.retry.withDefaults(), log: o.log}
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(o.creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)),
		grpc.WithChainUnaryInterceptor(noteForwarded),
	}, o.dialOpts...)
	for _, addr := range endpoints {
		if err := ctx.Err(); err != nil {
			c.Close()
			return nil, err
		}
		conn, err := grpc.NewClient(addr, dialOpts...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("quorumq: dial %s: %w", addr, err)
		}
		c.eps = append(c.eps, &endpoint{addr: addr, conn: conn, api: qv1.NewQueueServiceClient(conn),
			topics: qv1.NewTopicServiceClient(conn)})
	}
	return c, nil
}

// Close closes the connections. Calls in progress fail; later calls
// return ErrClosed. Close Producers and stop Consumers first.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	var errs []error
	for _, ep := range c.eps {
		errs = append(errs, ep.conn.Close())
	}
	return errors.Join(errs...)
}

// pick returns the endpoint of an attempt and its index: the first
// attempt of a call takes the start endpoint, each retry the one after,
// skipping endpoints that recently could not be reached (unless all are
// down).
func (c *Client) pick(start uint64, attempt int) (*endpoint, uint64) {
	n := uint64(len(c.eps))
	now := time.Now().UnixNano()
	for i := range n {
		k := (start + uint64(attempt-1) + i) % n
		if c.eps[k].downUntil.Load() <= now {
			return c.eps[k], k
		}
	}
	k := (start + uint64(attempt-1)) % n
	return c.eps[k], k
}

// forwardedToHeader is the response header a node sets when it forwarded
// (part of) a call to the leader of the queue's shard on another node.
const forwardedToHeader = "x-quorumq-forwarded-to"

// route is where a queue's calls start: the endpoint that last served
// one without forwarding it (the shard leader's node), so that calls skip
// the forwarding hop. A call that was forwarded moves it to the next
// endpoint; a queue whose partitions have leaders on several nodes keeps
// moving, which spreads its calls as plain round robin would.
type route struct {
	home atomic.Uint64 // endpoint index + 1; 0: none learnt yet
}

func (c *Client) routeOf(queue string) *route {
	if v, ok := c.routes.Load(queue); ok {
		return v.(*route)
	}
	v, _ := c.routes.LoadOrStore(queue, &route{})
	return v.(*route)
}

type routeKey struct{}

// withRoute makes the calls under ctx start at (and teach) rt.
func withRoute(ctx context.Context, rt *route) context.Context {
	return context.WithValue(ctx, routeKey{}, rt)
}

// attemptInfo is what the interceptor learnt of one call attempt.
type attemptInfo struct{ forwarded bool }

type attemptKey struct{}

// noteForwarded records whether the node forwarded the call, for the
// calls that carry an attempt (those of a queue).
func noteForwarded(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	a, ok := ctx.Value(attemptKey{}).(*attemptInfo)
	if !ok {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	var md metadata.MD
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&md))...)
	a.forwarded = len(md.Get(forwardedToHeader)) > 0
	return err
}

// call runs one API call under the retry policy. extra lengthens each
// attempt's timeout (a long poll's wait).
func call[T any](ctx context.Context, c *Client, op string, extra time.Duration, fn func(context.Context, qv1.QueueServiceClient) (T, error)) (T, error) {
	return callWith(ctx, c, c.retry, op, extra, fn)
}

// callOnce runs a call that is not safe to repeat in a single attempt: an
// attempt that failed or timed out may have been applied, and doing it
// again could do more than asked.
func callOnce[T any](ctx context.Context, c *Client, op string, fn func(context.Context, qv1.QueueServiceClient) (T, error)) (T, error) {
	p := c.retry
	p.MaxAttempts = 1
	return callWith(ctx, c, p, op, 0, fn)
}

func callWith[T any](ctx context.Context, c *Client, p RetryPolicy, op string, extra time.Duration, fn func(context.Context, qv1.QueueServiceClient) (T, error)) (T, error) {
	return callEndpoint(ctx, c, p, op, extra, func(ctx context.Context, ep *endpoint) (T, error) { return fn(ctx, ep.api) })
}

// callEndpoint is callWith for a call of any service of the endpoint.
func callEndpoint[T any](ctx context.Context, c *Client, p RetryPolicy, op string, extra time.Duration, fn func(context.Context, *endpoint) (T, error)) (T, error) {
	var zero T
	if c.closed.Load() {
		return zero, ErrClosed
	}
	rt, _ := ctx.Value(routeKey{}).(*route)
	var start uint64
	if h := routeHome(rt); h != 0 {
		start = h - 1
	} else {
		start = c.next.Add(1) - 1
	}
	var lastErr error
	for attempt := 1; ; attempt++ {
		ep, k := c.pick(start, attempt)
		actx, cancel := context.WithTimeout(ctx, p.AttemptTimeout+extra)
		var seen attemptInfo
		if rt != nil {
			actx = context.WithValue(actx, attemptKey{}, &seen)
		}
		var (
			res T
			err error
		)
		actx, err = c.authorize(actx)
		if err == nil {
			res, err = fn(actx, ep)
		} else {
			err = fmt.Errorf("quorumq: token source: %w", err)
		}
		timedOut := err != nil && actx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			if rt != nil {
				if seen.forwarded {
					k = (k + 1) % uint64(len(c.eps))
				}
				rt.home.Store(k + 1)
			}
			if attempt > 1 {
				c.log.Debug("quorumq: call succeeded after retries", "op", op, "attempts", attempt, "endpoint", ep.addr)
			}
			return res, nil
		}
		err = asError(err)
		if ctx.Err() != nil {
			if lastErr == nil { // else keep the more telling error of an earlier attempt
				lastErr = err
			}
			return zero, fmt.Errorf("quorumq: %s: %w (last error: %w)", op, ctx.Err(), lastErr)
		}
		lastErr = err
		if transportFailure(err) && len(c.eps) > 1 {
			ep.downUntil.Store(time.Now().Add(downFor).UnixNano())
		}
		ok, atLeast := retryable(err, timedOut)
		if !ok || attempt >= p.MaxAttempts {
			if ok { // retries used up
				return zero, fmt.Errorf("quorumq: %s: giving up after %d attempts: %w", op, attempt, err)
			}
			return zero, err
		}
		wait := max(p.backoff(attempt), atLeast)
		c.log.Debug("quorumq: retrying", "op", op, "attempt", attempt, "endpoint", ep.addr, "wait", wait, "err", err)
		if err := sleepCtx(ctx, wait); err != nil {
			return zero, fmt.Errorf("quorumq: %s: %w (last error: %w)", op, err, lastErr)
		}
	}
}

func routeHome(rt *route) uint64 {
	if rt == nil {
		return 0
	}
	return rt.home.Load()
}

// authorize adds the bearer token to the outgoing metadata.
func (c *Client) authorize(ctx context.Context) (context.Context, error) {
	if c.tokens == nil {
		return ctx, nil
	}
	tok, err := c.tokens(ctx)
	if err != nil {
		return ctx, err
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), nil
}

// Queue returns a handle on the queue name. It makes no call; a queue
// that does not exist shows up as ErrQueueNotFound on use.
func (c *Client) Queue(name string) *Queue {
	return &Queue{c: c, name: name, rt: c.routeOf(name)}
}

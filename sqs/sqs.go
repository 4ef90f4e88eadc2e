// Package sqs serves the Amazon SQS wire protocols (AWS JSON 1.0 and the
// Query protocol) on top of quorumq's QueueService. It holds no queue rule
// of its own: every action becomes one or more QueueService calls made
// through the node's own gRPC interceptors (auth principal, tracing,
// metrics, panic recovery, error mapping), and their gRPC statuses are
// translated into SQS error codes. See README.md for the mapping and limits.
package sqs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/metadata"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

// Authenticator verifies an SQS request (AWS SigV4 in the Authorization
// header or the query string) and returns the caller. body is the full
// request body (already read, bounded). Errors should be *AuthError; any
// other error is answered as an internal failure.
type Authenticator interface {
	AuthenticateSQS(r *http.Request, body []byte) (*server.Principal, error)
}

// AuthError is a refused SQS request, answered with SQS's code and status.
type AuthError struct {
	// Code is the SQS error code: "InvalidClientTokenId",
	// "SignatureDoesNotMatch", "IncompleteSignature",
	// "MissingAuthenticationToken", "RequestExpired", "AccessDenied", …
	Code string
	// HTTPStatus is the status of the answer (0: 403).
	HTTPStatus int
	// Message is shown to the caller.
	Message string
}

func (e *AuthError) Error() string { return e.Code + ": " + e.Message }

// DevAuthenticator accepts every request, signed or not, as tenant
// "default" with every scope: dev mode, where the node binds to loopback.
type DevAuthenticator struct{}

// AuthenticateSQS implements Authenticator.
func (DevAuthenticator) AuthenticateSQS(*http.Request, []byte) (*server.Principal, error) {
	return &server.Principal{Tenant: server.DevTenant, Scopes: map[string]bool{
		server.ScopeQueuesAdmin: true, server.ScopeMessagesSend: true, server.ScopeMessagesReceive: true,
		server.ScopeMessagesPeek: true,
	}}, nil
}

// Config configures a Handler.
type Config struct {
	// Client reaches the node's QueueService through its interceptors
	// (NewInProcess). Required.
	Client qv1.QueueServiceClient
	// Auth verifies callers. Required (DevAuthenticator in dev mode).
	Auth Authenticator
	// Region is the region in queue ARNs (default "us-east-1").
	Region string
	// TagsAttribute names the message attribute (String, comma-separated)
	// that carries a message's quorumq tags; empty: DefaultTagsAttribute.
	TagsAttribute string
	// Scheme of the queue URLs handed out ("http" or "https"; default http).
	Scheme string
	// Logger logs internal failures (default slog.Default()).
	Logger *slog.Logger
	// TracerProvider makes one span per SQS request; nil: none.
	TracerProvider trace.TracerProvider
	// MeterProvider records sqs.request.duration per request (action,
	// protocol, SQS error code), requests refused before any QueueService
	// call included; nil: none.
	MeterProvider metric.MeterProvider
}

// DefaultRegion is the region of queue ARNs unless configured.
const DefaultRegion = "us-east-1"

// DefaultTagsAttribute is the message attribute that maps to message tags.
const DefaultTagsAttribute = "quorumq.tags"

// maxRequestBytes bounds an HTTP request body: a batch of SQS's largest
// messages (1 MiB in all) with base64 binary attributes and form or JSON
// escaping fits; anything longer is refused unread.
const maxRequestBytes = 3 << 20

// Handler serves the SQS protocols over HTTP.
type Handler struct {
	cfg      Config
	tracer   trace.Tracer
	duration metric.Float64Histogram
	tasks    *moveTasks
}

// durationBuckets (seconds) reach past the 20 s of the longest long poll.
var durationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 21, 30}

// New returns a Handler. Call Close to stop its message move tasks.
func New(cfg Config) (*Handler, error) {
	if cfg.Client == nil || cfg.Auth == nil {
		return nil, errors.New("sqs: Client and Auth are required")
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if cfg.TagsAttribute == "" {
		cfg.TagsAttribute = DefaultTagsAttribute
	}
	if cfg.Scheme == "" {
		cfg.Scheme = "http"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	mp := cfg.MeterProvider
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	duration, err := mp.Meter("github.com/quorumq/quorumq/sqs").Float64Histogram("sqs.request.duration", metric.WithUnit("s"),
		metric.WithDescription("SQS endpoint requests by action, protocol (json, query) and SQS error code (empty: success)"),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		return nil, fmt.Errorf("sqs: request histogram: %w", err)
	}
	return &Handler{cfg: cfg, tracer: tp.Tracer("github.com/quorumq/quorumq/sqs"), duration: duration, tasks: newMoveTasks()}, nil
}

// Close cancels running message move tasks and waits for them.
func (h *Handler) Close() { h.tasks.close() }

// call is one SQS request being served.
type call struct {
	h       *Handler
	ctx     context.Context // carries the principal to the gRPC call
	action  string
	tenant  string
	host    string // Host header: the base of queue URLs
	path    string // request path (Query protocol: may be the queue URL)
	reqID   string
	scopes  map[string]bool
	jsonAPI bool
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := newRequestID()
	jsonAPI := strings.HasPrefix(r.Header.Get("X-Amz-Target"), "AmazonSQS.")
	c := &call{h: h, host: r.Host, path: r.URL.Path, reqID: reqID, jsonAPI: jsonAPI}
	start := time.Now()
	ctx, span := h.tracer.Start(r.Context(), "sqs.request", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	out, err := h.serve(ctx, c, r)
	if c.action != "" {
		span.SetName("sqs." + c.action)
		span.SetAttributes(attribute.String("sqs.action", c.action), attribute.Bool("sqs.json", jsonAPI))
	}
	code := ""
	if err != nil {
		ae := asAPIError(err)
		if ae.status >= 500 {
			h.cfg.Logger.ErrorContext(ctx, "sqs request failed", "action", c.action, "err", err)
		}
		span.SetStatus(codes.Error, ae.code)
		c.writeError(w, ae)
		code = ae.code
	} else {
		c.writeResult(w, out)
	}
	// Label values come from fixed sets: an unknown action is "unknown".
	action, protocol := c.action, "query"
	if _, ok := actions[action]; !ok {
		action = "unknown"
	}
	if jsonAPI {
		protocol = "json"
	}
	h.duration.Record(context.WithoutCancel(ctx), time.Since(start).Seconds(), metric.WithAttributes(
		attribute.String("sqs.action", action), attribute.String("sqs.protocol", protocol), attribute.String("sqs.error_code", code)))
}

// serve reads, authenticates and dispatches one request.
func (h *Handler) serve(ctx context.Context, c *call, r *http.Request) (any, error) {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		return nil, errInvalidAction("the SQS endpoint takes POST (or a Query GET)")
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxRequestBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &apiError{status: http.StatusRequestEntityTooLarge, shape: "RequestEntityTooLarge", code: "RequestEntityTooLarge",
				msg: fmt.Sprintf("the request body is longer than %d bytes", maxRequestBytes)}
		}
		return nil, errInvalidParameter("could not read the request body: %v", err)
	}
	var in []byte // the request as JSON, whichever protocol carried it
	if c.jsonAPI {
		c.action = strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "AmazonSQS.")
		if in, err = decodeJSON(body); err != nil {
			return nil, err
		}
	} else {
		if c.action, in, err = decodeQuery(r, body); err != nil {
			return nil, err
		}
	}
	act, ok := actions[c.action]
	if !ok {
		return nil, errInvalidAction(fmt.Sprintf("the action %q is not valid for this endpoint", c.action))
	}
	p, err := h.cfg.Auth.AuthenticateSQS(r, body)
	if err != nil {
		return nil, err
	}
	c.tenant, c.scopes = p.Tenant, p.Scopes
	c.ctx = withPrincipal(ctx, p)
	return act(c, in)
}

// Principal travels to the in-process gRPC server in these metadata keys;
// only InProcessAuthenticator reads them, on a listener no one else reaches.
const (
	mdTenant = "x-quorumq-sqs-tenant"
	mdScopes = "x-quorumq-sqs-scopes"
)

func withPrincipal(ctx context.Context, p *server.Principal) context.Context {
	scopes := make([]string, 0, len(p.Scopes))
	for s, ok := range p.Scopes {
		if ok {
			scopes = append(scopes, s)
		}
	}
	sort.Strings(scopes)
	return metadata.NewOutgoingContext(ctx, metadata.Pairs(mdTenant, p.Tenant, mdScopes, strings.Join(scopes, " ")))
}

// InProcessAuthenticator is the authenticator of the in-process gRPC
// server behind the SQS endpoint: it trusts the principal the Handler put
// in the call's metadata. Never use it on a network listener.
type InProcessAuthenticator struct{}

// Authenticate implements server.Authenticator.
func (InProcessAuthenticator) Authenticate(ctx context.Context) (*server.Principal, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	t := md.Get(mdTenant)
	if len(t) != 1 || t[0] == "" {
		return nil, fmt.Errorf("%w: no SQS principal", server.ErrUnauthenticated)
	}
	p := &server.Principal{Tenant: t[0], Scopes: map[string]bool{}}
	if s := md.Get(mdScopes); len(s) == 1 {
		for _, sc := range strings.Fields(s[0]) {
			p.Scopes[sc] = true
		}
	}
	return p, nil
}

func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	s := hex.EncodeToString(b)
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

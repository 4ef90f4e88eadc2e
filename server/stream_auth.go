package server

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// StreamInterceptor does for streaming calls what StripInternalHeaders and
// UnaryInterceptor do for unary ones: it drops the routing headers only
// routers may set, authenticates the caller when the stream starts,
// recovers from panics and maps the error to a status. The stream keeps
// the authenticator, so a long-lived stream checks its token again (see
// reauthenticate) and ends once the token has expired or been revoked.
func StreamInterceptor(auth Authenticator, log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				log.ErrorContext(ss.Context(), "panic in stream handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				err = StatusError(codes.Internal, ReasonInternal, "internal error", nil)
			}
		}()
		if isPublicMethod(info.FullMethod) {
			return handler(srv, ss)
		}
		ctx := withoutInternalHeaders(ss.Context())
		p, err := auth.Authenticate(ctx)
		if err != nil {
			return ToStatus(err)
		}
		ctx = context.WithValue(ctx, PrincipalKey{}, p)
		ctx = context.WithValue(ctx, streamAuthKey{}, &streamAuth{auth: auth, checked: time.Now()})
		return ToStatus(handler(srv, &ctxStream{ServerStream: ss, ctx: ctx}))
	}
}

// withoutInternalHeaders drops the routing headers of an incoming call
// (as StripInternalHeaders does for unary calls).
func withoutInternalHeaders(ctx context.Context) context.Context {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	for _, h := range InternalHeaders {
		if len(md.Get(h)) > 0 {
			md = md.Copy()
			for _, h := range InternalHeaders {
				delete(md, h)
			}
			return metadata.NewIncomingContext(ctx, md)
		}
	}
	return ctx
}

// ctxStream is a server stream with another context.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

type streamAuthKey struct{}

// reauthEvery is how often a stream's token is checked again.
const reauthEvery = time.Second

// streamAuth re-checks the token a stream started with.
type streamAuth struct {
	auth    Authenticator
	mu      sync.Mutex
	checked time.Time
}

// Reauthenticate checks, at most once per reauthEvery, that the token the
// stream of ctx started with is still good (not expired, key not
// revoked); a stream that no interceptor authenticated fails.
func Reauthenticate(ctx context.Context) error {
	a, _ := ctx.Value(streamAuthKey{}).(*streamAuth)
	if a == nil {
		return StatusError(codes.Unauthenticated, ReasonUnauthenticated, "no credentials", nil)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if time.Since(a.checked) < reauthEvery {
		return nil
	}
	if _, err := a.auth.Authenticate(ctx); err != nil {
		return ToStatus(err)
	}
	a.checked = time.Now()
	return nil
}

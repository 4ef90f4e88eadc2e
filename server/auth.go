package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// Scopes a token may grant (DESIGN §6).
const (
	ScopeQueuesAdmin     = "queues:admin"
	ScopeMessagesSend    = "messages:send"
	ScopeMessagesReceive = "messages:receive"
	// ScopeMessagesPeek browses messages (PeekMessages, GetMessage) without
	// receiving them; messages:receive allows that too.
	ScopeMessagesPeek = "messages:peek"
	ScopeClusterAdmin = "cluster:admin"
)

// DevTenant is the tenant of every call in dev mode (no auth configured).
const DevTenant = "default"

// Principal is who makes a call: the tenant and the scopes of its token.
type Principal struct {
	Tenant string
	Scopes map[string]bool
}

// Authenticator turns a call's metadata into a Principal.
type Authenticator interface {
	Authenticate(ctx context.Context) (*Principal, error)
}

// DevAuthenticator grants every call tenant "default" and every scope. Only
// for dev mode, where the server binds to loopback.
type DevAuthenticator struct{}

// Authenticate implements Authenticator.
func (DevAuthenticator) Authenticate(context.Context) (*Principal, error) {
	return &Principal{Tenant: DevTenant, Scopes: map[string]bool{
		ScopeQueuesAdmin: true, ScopeMessagesSend: true, ScopeMessagesReceive: true, ScopeMessagesPeek: true, ScopeClusterAdmin: true,
	}}, nil
}

type PrincipalKey struct{}

// PrincipalFrom returns the caller that UnaryInterceptor authenticated (nil
// outside it), for interceptors and services outside this package.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(PrincipalKey{}).(*Principal)
	return p
}

// Require returns the caller's tenant if it holds any of the scopes.
func Require(ctx context.Context, anyOf ...string) (string, error) {
	p := PrincipalFrom(ctx)
	if p == nil {
		return "", StatusError(codes.Unauthenticated, ReasonUnauthenticated, "no credentials", nil)
	}
	for _, s := range anyOf {
		if p.Scopes[s] {
			return p.Tenant, nil
		}
	}
	return "", StatusError(codes.PermissionDenied, ReasonPermissionDenied, fmt.Sprintf("token lacks scope %v", anyOf), nil)
}

// UnaryInterceptor authenticates each call, recovers from panics (a bug
// must not take the node down with it) and maps every error to a gRPC status
// with an ErrorInfo reason.
func UnaryInterceptor(auth Authenticator, log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.ErrorContext(ctx, "panic in handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				resp, err = nil, StatusError(codes.Internal, ReasonInternal, "internal error", nil)
			}
		}()
		if isPublicMethod(info.FullMethod) {
			// Probes and tools (grpcurl, load balancers) call without a token.
			return handler(ctx, req)
		}
		if isPeerMethod(info.FullMethod) {
			// Node to node, on the peer listener only, where
			// PeerAuthInterceptors checked the caller's certificate.
			return handler(ctx, req)
		}
		p, err := auth.Authenticate(ctx)
		if err != nil {
			return nil, ToStatus(err)
		}
		resp, err = handler(context.WithValue(ctx, PrincipalKey{}, p), req)
		return resp, ToStatus(err)
	}
}

// isPublicMethod reports whether a method is served without credentials:
// gRPC health checking and server reflection (whose calls are streams, so
// this interceptor never sees them; listed for the day a stream
// interceptor authenticates). Nothing else.
func isPublicMethod(m string) bool {
	return strings.HasPrefix(m, "/grpc.health.v1.Health/") || strings.HasPrefix(m, "/grpc.reflection.")
}

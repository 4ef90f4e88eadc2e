package shardserver

import (
	"context"

	"github.com/quorumq/quorumq/server"
)

// Test hooks for the external tests of the outbox relay and the
// reconciler (compiled into the test binary only).

// DelivererForTest returns the relay's current deliverer.
func (s *Server) DelivererForTest() Deliverer {
	if d := s.hk.deliver.Load(); d != nil {
		return *d
	}
	return s.DeliverOutbox
}

// AsTenantForTest makes ctx a call of tenant with every scope, to call one
// shard's Server directly (skipping the router's fan-out, as a fan-out
// that stopped half way would).
func AsTenantForTest(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, server.PrincipalKey{}, &server.Principal{Tenant: tenant, Scopes: map[string]bool{
		server.ScopeQueuesAdmin: true, server.ScopeMessagesSend: true, server.ScopeMessagesReceive: true,
	}})
}

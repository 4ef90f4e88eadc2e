package router

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/quorumq/quorumq/server/shardserver"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// AccessKeyGrant is what a SigV4 verifier learns of an access key: its
// tenant and scopes, and the signing key of one credential scope (date,
// region, service). The secret itself stays on the metadata shard.
type AccessKeyGrant struct {
	Tenant     string
	Scopes     []string
	SigningKey []byte
}

// Cache bounds of AccessKeys.
const (
	// DefaultAccessKeyTTL is how long a node trusts a looked-up key: a
	// revoked key is refused on every node at most this long after the
	// revoke committed (on the node that served the revoke: at once).
	DefaultAccessKeyTTL = 5 * time.Second
	// accessKeyMissTTL is how long an unknown key id is remembered, so a
	// client spraying made-up ids costs the metadata leader one lookup
	// per id per second, while a new key works within a second on a node
	// that saw it unknown.
	accessKeyMissTTL = time.Second
	// maxAccessKeyEntries bounds the cache (one entry per key id, day,
	// region and service asked).
	maxAccessKeyEntries = 10_000
)

// AccessKeys resolves access keys for the SigV4 verifier of this node,
// through the metadata shard's leader, with a short cache. It is safe for
// concurrent use.
type AccessKeys struct {
	fetch   func(context.Context, *storepb.AccessKeyLookup) (*storepb.AccessKeyGrant, error)
	ttl     time.Duration
	missTTL time.Duration
	now     func() time.Time

	mu       sync.Mutex
	entries  map[grantKey]grantEntry
	inflight map[grantKey]*flight // lookups under way: callers of one key wait for one
}

// flight is one lookup that concurrent callers of the same key share, so
// an expiring hot key costs the metadata leader one lookup, not one per
// request in flight.
type flight struct {
	done  chan struct{}
	grant *AccessKeyGrant
	err   error
}

type grantKey struct{ id, date, region, service string }

type grantEntry struct {
	grant   *AccessKeyGrant // nil: the key is unknown
	expires time.Time
}

// AccessKeysConfig tunes AccessKeys; zero values take the defaults.
type AccessKeysConfig struct {
	// TTL is how long a found key is trusted (DefaultAccessKeyTTL).
	TTL time.Duration
	// Now is the cache's clock (tests).
	Now func() time.Time
}

// NewAccessKeys returns the lookup of a node whose router is r.
func NewAccessKeys(r *Router, cfg AccessKeysConfig) *AccessKeys {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultAccessKeyTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &AccessKeys{fetch: r.accessKeyGrant, ttl: cfg.TTL, missTTL: min(accessKeyMissTTL, cfg.TTL), now: cfg.Now,
		entries: map[grantKey]grantEntry{}, inflight: map[grantKey]*flight{}}
}

// AccessKeyGrant returns the grant of key id for a credential scope, or an
// error wrapping ErrUnknownAccessKey, or the error of an unanswered lookup
// (not cached). The grant is shared: callers must not modify it.
func (a *AccessKeys) AccessKeyGrant(ctx context.Context, id, date, region, service string) (*AccessKeyGrant, error) {
	k := grantKey{id, date, region, service}
	now := a.now()
	a.mu.Lock()
	if e, ok := a.entries[k]; ok && now.Before(e.expires) {
		a.mu.Unlock()
		if e.grant == nil {
			return nil, shardserver.ErrUnknownAccessKey
		}
		return e.grant, nil
	}
	if f, ok := a.inflight[k]; ok {
		a.mu.Unlock()
		select {
		case <-f.done:
			return f.grant, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f := &flight{done: make(chan struct{})}
	a.inflight[k] = f
	a.mu.Unlock()

	// Shared by every waiter: not cancelled with this caller (the router
	// bounds it by its own timeout).
	out, err := a.fetch(context.WithoutCancel(ctx), &storepb.AccessKeyLookup{AccessKeyId: id, Date: date, Region: region, Service: service})
	ttl := a.ttl
	switch {
	case errors.Is(err, shardserver.ErrUnknownAccessKey):
		ttl = a.missTTL
	case err == nil:
		f.grant = &AccessKeyGrant{Tenant: out.GetTenant(), Scopes: out.GetScopes(), SigningKey: out.GetSigningKey()}
	}
	f.err = err
	a.mu.Lock()
	// Not cached if Forget dropped the flight: a revoke through this node
	// committed while the lookup ran.
	if a.inflight[k] == f {
		if err == nil || errors.Is(err, shardserver.ErrUnknownAccessKey) {
			a.putLocked(k, grantEntry{grant: f.grant, expires: now.Add(ttl)})
		}
		delete(a.inflight, k)
	}
	a.mu.Unlock()
	close(f.done)
	return f.grant, f.err
}

// putLocked caches e under k; a.mu is held.
func (a *AccessKeys) putLocked(k grantKey, e grantEntry) {
	if len(a.entries) >= maxAccessKeyEntries {
		now := a.now()
		for k, old := range a.entries {
			if !now.Before(old.expires) {
				delete(a.entries, k)
			}
		}
		if len(a.entries) >= maxAccessKeyEntries {
			clear(a.entries)
		}
	}
	a.entries[k] = e
}

// Forget drops every cached grant of key id (a revoke through this node),
// and keeps lookups of it under way from caching what they find.
func (a *AccessKeys) Forget(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k := range a.entries {
		if k.id == id {
			delete(a.entries, k)
		}
	}
	for k := range a.inflight {
		if k.id == id {
			delete(a.inflight, k)
		}
	}
}

package server

import (
	"context"
	"errors"
	"sync"
	"time"

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

	mu      sync.Mutex
	entries map[grantKey]grantEntry
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
		entries: map[grantKey]grantEntry{}}
}

// AccessKeyGrant returns the grant of key id for a credential scope, or an
// error wrapping ErrUnknownAccessKey, or the error of an unanswered lookup
// (not cached). The grant is shared: callers must not modify it.
func (a *AccessKeys) AccessKeyGrant(ctx context.Context, id, date, region, service string) (*AccessKeyGrant, error) {
	k := grantKey{id, date, region, service}
	now := a.now()
	a.mu.Lock()
	e, ok := a.entries[k]
	a.mu.Unlock()
	if ok && now.Before(e.expires) {
		if e.grant == nil {
			return nil, ErrUnknownAccessKey
		}
		return e.grant, nil
	}
	out, err := a.fetch(ctx, &storepb.AccessKeyLookup{AccessKeyId: id, Date: date, Region: region, Service: service})
	var g *AccessKeyGrant
	ttl := a.ttl
	switch {
	case errors.Is(err, ErrUnknownAccessKey):
		ttl = a.missTTL
	case err != nil:
		return nil, err
	default:
		g = &AccessKeyGrant{Tenant: out.GetTenant(), Scopes: out.GetScopes(), SigningKey: out.GetSigningKey()}
	}
	a.put(k, grantEntry{grant: g, expires: now.Add(ttl)})
	if g == nil {
		return nil, err
	}
	return g, nil
}

func (a *AccessKeys) put(k grantKey, e grantEntry) {
	a.mu.Lock()
	defer a.mu.Unlock()
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

// Forget drops every cached grant of key id (a revoke through this node).
func (a *AccessKeys) Forget(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k := range a.entries {
		if k.id == id {
			delete(a.entries, k)
		}
	}
}

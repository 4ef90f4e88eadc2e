// Package auth verifies the JWT bearer token of every API call (DESIGN §6)
// and turns it into a server.Principal.
//
// Verification is local: keys come from files (an HS256 secret, PEM public
// keys or a JWKS document) that an operator or a sidecar rotates, so the
// request path never waits on an identity provider. The files are re-read
// when they change; a file that turns bad keeps the last good keys, because
// refusing every call is a worse failure than verifying a little longer
// against keys that were valid a moment ago.
//
// Each key verifies exactly one algorithm, fixed by its type (HS256 for the
// secret, RS256 for RSA, ES256 for P-256, EdDSA for Ed25519). The token's
// alg header only has to agree with it; it never chooses how a key is used,
// which is what rules out "none" and HS256-with-a-public-key confusion.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/metadata"

	"github.com/quorumq/quorumq/server"
)

// Defaults of Config.
const (
	DefaultLeeway         = 30 * time.Second
	DefaultReloadInterval = 5 * time.Second
)

// maxHeaderBytes bounds the authorization value we are willing to parse:
// every input is bounded (DESIGN §6) and real tokens are a few KiB at most.
const maxHeaderBytes = 16 << 10

// tenantPattern is the charset of the tenant claim. The tenant becomes part
// of storage keys and metric labels, so it is kept short and plain.
var tenantPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// knownScopes are the scopes of DESIGN §6; any other scope in a token is
// dropped so that a typo can never grant something.
var knownScopes = map[string]bool{
	server.ScopeQueuesAdmin:     true,
	server.ScopeMessagesSend:    true,
	server.ScopeMessagesReceive: true,
	server.ScopeMessagesPeek:    true,
	server.ScopeClusterAdmin:    true,
}

// Config selects the keys and the claims checks. Exactly one key source
// kind (HS256SecretFile, PublicKeyFiles or JWKSFile) must be set: mixing a
// shared secret with public keys would let anyone holding the secret mint
// tokens a public-key deployment believes only the issuer can make.
type Config struct {
	// HS256SecretFile holds the shared secret (at least 32 bytes; one
	// trailing "\n" or "\r\n" is ignored).
	HS256SecretFile string
	// PublicKeyFiles are PEM public keys, one per file ("PUBLIC KEY" or
	// "RSA PUBLIC KEY"): RSA (2048 bits or more) verifies RS256, ECDSA
	// P-256 verifies ES256, Ed25519 verifies EdDSA. A key's kid is its
	// file name without the extension ("keys/2025-06.pem" → "2025-06").
	PublicKeyFiles []string
	// JWKSFile is a JSON Web Key Set of public keys (kty RSA, EC P-256 or
	// OKP Ed25519). Keys for other algorithms or uses are skipped.
	JWKSFile string
	// Issuer and Audience, when set, must match the iss and aud claims.
	Issuer, Audience string
	// Leeway is the clock skew allowed on exp, nbf and iat. Zero means
	// DefaultLeeway.
	Leeway time.Duration
	// ReloadInterval is how often the key files are checked for a new
	// mtime or size. Zero means DefaultReloadInterval; negative disables
	// the check (Reload still works).
	ReloadInterval time.Duration
	// Now is the clock (tests inject one). Nil means time.Now.
	Now func() time.Time
	// Logger receives reload results. Nil means slog.Default().
	Logger *slog.Logger

	// onReload, when set (tests only), is called after every reload
	// attempt of the background watcher with its result.
	onReload func(error)
}

// Authenticator verifies bearer tokens against the configured keys. It is
// safe for concurrent use; Authenticate never blocks on a reload.
type Authenticator struct {
	cfg  Config
	log  *slog.Logger
	opts []jwt.ParserOption // claim checks shared by every key set

	keys atomic.Pointer[keySet] // the last good keys; never nil after New

	mu     sync.Mutex  // serialises reloads
	stamps []fileStamp // what the watcher last saw; guarded by mu

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ server.Authenticator = (*Authenticator)(nil)

// New loads the keys and, unless cfg.ReloadInterval is negative, starts a
// goroutine that reloads them when their files change; Close stops it. A
// configuration or key file that does not load is an error here, since a
// server that starts without valid keys can only refuse every call.
func New(cfg Config) (*Authenticator, error) {
	sources := 0
	for _, set := range []bool{cfg.HS256SecretFile != "", len(cfg.PublicKeyFiles) > 0, cfg.JWKSFile != ""} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return nil, errors.New("auth: configure exactly one of an HS256 secret file, public key files or a JWKS file")
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("auth: leeway %v is negative", cfg.Leeway)
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = DefaultReloadInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Authenticator{cfg: cfg, log: cfg.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	if a.log == nil {
		a.log = slog.Default()
	}
	a.opts = []jwt.ParserOption{
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(cfg.Now),
	}
	if cfg.Issuer != "" {
		a.opts = append(a.opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		a.opts = append(a.opts, jwt.WithAudience(cfg.Audience))
	}
	a.stamps = stampFiles(a.files())
	ks, err := a.load()
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	a.keys.Store(ks)
	if cfg.ReloadInterval > 0 {
		go a.watch()
	} else {
		close(a.done)
	}
	return a, nil
}

// Close stops the reload goroutine and waits for it to exit. The
// Authenticator keeps verifying with its last keys. Close is idempotent.
func (a *Authenticator) Close() {
	a.closeOnce.Do(func() { close(a.stop) })
	<-a.done
}

// Reload re-reads the key files now, whether or not they changed. On
// error the previous keys stay in use and the error is logged and
// returned.
func (a *Authenticator) Reload() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stamps = stampFiles(a.files())
	return a.reloadLocked()
}

// reloadLocked loads the files and swaps the key set in. a.mu is held.
func (a *Authenticator) reloadLocked() error {
	ks, err := a.load()
	if err != nil {
		a.log.Error("auth: reloading keys failed; keeping the previous keys", "err", err)
		return fmt.Errorf("auth: reload: %w", err)
	}
	a.keys.Store(ks)
	a.log.Info("auth: keys reloaded", "keys", ks.describe())
	return nil
}

// watch polls the files' mtime and size. Polling (rather than inotify)
// also sees the symlink swaps Kubernetes uses to update mounted secrets.
// A stamp is recorded before the read, so a write that races the read is
// seen on the next tick, and a bad file is reported once, not every tick.
func (a *Authenticator) watch() {
	defer close(a.done)
	t := time.NewTicker(a.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
		a.mu.Lock()
		now := stampFiles(a.files())
		if equalStamps(now, a.stamps) {
			a.mu.Unlock()
			continue
		}
		a.stamps = now
		err := a.reloadLocked()
		a.mu.Unlock()
		if a.cfg.onReload != nil {
			a.cfg.onReload(err)
		}
	}
}

// files lists the configured key files.
func (a *Authenticator) files() []string {
	switch {
	case a.cfg.HS256SecretFile != "":
		return []string{a.cfg.HS256SecretFile}
	case a.cfg.JWKSFile != "":
		return []string{a.cfg.JWKSFile}
	}
	return a.cfg.PublicKeyFiles
}

// claims are the claims quorumq reads. Tenant and Scope are decoded as
// any so that a wrongly typed claim gets its own reason rather than a
// generic decode error.
type claims struct {
	jwt.RegisteredClaims
	Tenant any `json:"tenant"`
	Scope  any `json:"scope"`
}

// Authenticate implements server.Authenticator. It reads the one
// "authorization: Bearer <token>" metadata value (grpc-gateway forwards the
// HTTP Authorization header under that key). Every error wraps
// server.ErrUnauthenticated and carries a short reason that never quotes
// the token.
func (a *Authenticator) Authenticate(ctx context.Context) (*server.Principal, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	switch {
	case len(vals) == 0:
		return nil, reject("missing authorization header")
	case len(vals) > 1:
		return nil, reject("more than one authorization header")
	case len(vals[0]) > maxHeaderBytes:
		return nil, reject("authorization header too long")
	}
	scheme, raw, ok := strings.Cut(vals[0], " ")
	raw = strings.TrimSpace(raw)
	if !ok || !strings.EqualFold(scheme, "Bearer") || raw == "" {
		return nil, reject("authorization header is not \"Bearer <token>\"")
	}

	ks := a.keys.Load()
	var c claims
	tok, err := ks.parser.ParseWithClaims(raw, &c, ks.keyFor)
	if err != nil {
		return nil, reject(a.reason(err, tok, ks, &c))
	}

	tenant, ok := c.Tenant.(string)
	switch {
	case c.Tenant == nil:
		return nil, reject("missing tenant claim")
	case !ok:
		return nil, reject("tenant claim is not a string")
	case !tenantPattern.MatchString(tenant):
		return nil, reject("tenant claim is not 1-64 characters of [A-Za-z0-9_.-]")
	}
	var scopes map[string]bool
	switch s := c.Scope.(type) {
	case nil:
		scopes = map[string]bool{}
	case string:
		scopes, _ = ParseScopes(s)
	default:
		return nil, reject("scope claim is not a space-separated string")
	}
	return &server.Principal{Tenant: tenant, Scopes: scopes}, nil
}

// ParseScopes splits a scope claim into the known scopes, which a
// Principal grants, and the unknown ones, which the server ignores (the
// token command warns about them).
func ParseScopes(scope string) (known map[string]bool, unknown []string) {
	known = map[string]bool{}
	for _, s := range strings.Fields(scope) {
		if knownScopes[s] {
			known[s] = true
		} else {
			unknown = append(unknown, s)
		}
	}
	return known, unknown
}

// reject wraps server.ErrUnauthenticated with a reason.
func reject(reason string) error {
	return fmt.Errorf("%w: %s", server.ErrUnauthenticated, reason)
}

// keyError is a refusal from keyFor; its text is the reason as is.
type keyError struct{ reason string }

func (e *keyError) Error() string { return e.reason }

// reason turns a jwt error into a short, token-free reason. The jwt
// library joins several errors; the most specific one wins.
func (a *Authenticator) reason(err error, tok *jwt.Token, ks *keySet, c *claims) string {
	var ke *keyError
	switch {
	case errors.As(err, &ke):
		return ke.reason
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		// The parser refuses an alg outside the key set's methods with
		// this same error, before any key is looked at.
		if tok != nil && tok.Method != nil && !ks.methods[tok.Method.Alg()] {
			return fmt.Sprintf("algorithm %s not allowed", tok.Method.Alg())
		}
		return "bad signature"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "missing or unsupported algorithm"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		switch {
		case c.ExpiresAt == nil:
			return "missing exp claim"
		case a.cfg.Issuer != "" && c.Issuer == "":
			return "missing iss claim"
		default:
			return "missing aud claim"
		}
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	}
	return "invalid token"
}

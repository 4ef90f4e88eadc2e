package auth

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quorumq/quorumq/server"
)

func TestJWKSRotationWithReload(t *testing.T) {
	path := writeFile(t, t.TempDir(), "jwks.json", jwks(t, jwkOf(t, "old", rsaKey().Public())))
	a := newAuth(t, Config{JWKSFile: path})
	oldTok := mint(t, "RS256", rsaKey(), "old", validClaims())
	newTok := mint(t, "RS256", rsaKey2(), "new", validClaims())

	mustAccept(t, a, oldTok)
	mustReject(t, a, newTok, "unknown key id")

	// The issuer publishes the next key next to the current one.
	replaceFile(t, path, jwks(t, jwkOf(t, "old", rsaKey().Public()), jwkOf(t, "new", rsaKey2().Public())))
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	mustAccept(t, a, oldTok)
	mustAccept(t, a, newTok)

	// Then retires the old one.
	replaceFile(t, path, jwks(t, jwkOf(t, "new", rsaKey2().Public())))
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	mustReject(t, a, oldTok, "unknown key id")
	mustAccept(t, a, newTok)
}

// TestJWKSRotationByWatcher lets the background watcher notice the file
// change; the onReload hook replaces sleeping.
func TestJWKSRotationByWatcher(t *testing.T) {
	path := writeFile(t, t.TempDir(), "jwks.json", jwks(t, jwkOf(t, "a", ecKey().Public())))
	reloads := make(chan error, 64)
	a := newAuth(t, Config{JWKSFile: path, ReloadInterval: time.Millisecond, onReload: func(err error) {
		select {
		case reloads <- err:
		default:
		}
	}})
	tokB := mint(t, "ES256", ecKey2(), "b", validClaims())
	mustReject(t, a, tokB, "unknown key id")

	replaceFile(t, path, jwks(t, jwkOf(t, "a", ecKey().Public()), jwkOf(t, "b", ecKey2().Public())))
	waitFor(t, reloads, func() bool { _, err := a.Authenticate(bearer(tokB)); return err == nil })

	replaceFile(t, path, jwks(t, jwkOf(t, "b", ecKey2().Public())))
	tokA := mint(t, "ES256", ecKey(), "a", validClaims())
	waitFor(t, reloads, func() bool { _, err := a.Authenticate(bearer(tokA)); return err != nil })
	mustAccept(t, a, tokB)
}

// waitFor re-checks cond after each watcher reload until it holds.
func waitFor(t *testing.T, reloads <-chan error, cond func() bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-reloads:
		case <-timeout:
			t.Fatal("condition not met after 10s of reloads")
		}
	}
}

func TestReloadKeepsLastGoodKeys(t *testing.T) {
	var logs syncBuffer
	path := writeFile(t, t.TempDir(), "jwks.json", jwks(t, jwkOf(t, "k", ecKey().Public())))
	a := newAuth(t, Config{JWKSFile: path, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	tok := mint(t, "ES256", ecKey(), "k", validClaims())

	for name, breakIt := range map[string]func(){
		"garbage": func() { replaceFile(t, path, []byte(`{"keys": [`)) },
		"malformed key": func() {
			replaceFile(t, path, []byte(`{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"!!","y":"!!"}]}`))
		},
		"empty set": func() { replaceFile(t, path, []byte(`{"keys":[]}`)) },
		"deleted": func() {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		},
	} {
		breakIt()
		if err := a.Reload(); err == nil {
			t.Fatalf("%s: Reload succeeded", name)
		}
		mustAccept(t, a, tok)
	}
	if !strings.Contains(logs.String(), "keeping the previous keys") {
		t.Fatalf("no log of the failed reload:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), tok) {
		t.Fatal("log contains a token")
	}

	replaceFile(t, path, jwks(t, jwkOf(t, "k2", ecKey2().Public())))
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	mustReject(t, a, tok, "unknown key id")
	mustAccept(t, a, mint(t, "ES256", ecKey2(), "k2", validClaims()))
}

// TestPEMAndSecretRotation: replacing a key file's content swaps the key.
func TestPEMAndSecretRotation(t *testing.T) {
	dir := t.TempDir()
	pemPath := writeFile(t, dir, "signing.pem", pemPublic(t, rsaKey().Public()))
	a := newAuth(t, Config{PublicKeyFiles: []string{pemPath}})
	mustAccept(t, a, mint(t, "RS256", rsaKey(), "signing", validClaims()))
	replaceFile(t, pemPath, pemPublic(t, rsaKey2().Public()))
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	mustReject(t, a, mint(t, "RS256", rsaKey(), "signing", validClaims()), "bad signature")
	mustAccept(t, a, mint(t, "RS256", rsaKey2(), "signing", validClaims()))

	secretPath := writeFile(t, dir, "secret", testSecret)
	h := newAuth(t, Config{HS256SecretFile: secretPath})
	next := []byte(strings.Repeat("n", 32))
	replaceFile(t, secretPath, append(next, '\n'))
	if err := h.Reload(); err != nil {
		t.Fatal(err)
	}
	mustReject(t, h, mint(t, "HS256", testSecret, "", validClaims()), "bad signature")
	mustAccept(t, h, mint(t, "HS256", next, "", validClaims()))
	replaceFile(t, secretPath, []byte("short\n"))
	if err := h.Reload(); err == nil {
		t.Fatal("a short secret was accepted on reload")
	}
	mustAccept(t, h, mint(t, "HS256", next, "", validClaims()))
}

// TestConcurrentAuthenticateAndReload is for the race detector.
func TestConcurrentAuthenticateAndReload(t *testing.T) {
	path := writeFile(t, t.TempDir(), "jwks.json", jwks(t, jwkOf(t, "k", edKey().Public())))
	a := newAuth(t, Config{JWKSFile: path, ReloadInterval: time.Millisecond})
	tok := mint(t, "EdDSA", edKey(), "k", validClaims())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				if _, err := a.Authenticate(bearer(tok)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 20 {
		if err := a.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}

func TestCloseStopsWatcher(t *testing.T) {
	a, err := New(Config{
		HS256SecretFile: writeFile(t, t.TempDir(), "s", testSecret),
		ReloadInterval:  time.Millisecond,
		Now:             fixedNow,
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	a.Close() // idempotent
	select {
	case <-a.done:
	default:
		t.Fatal("watcher still running after Close")
	}
	if _, err := a.Authenticate(bearer(mint(t, "HS256", testSecret, "", validClaims()))); err != nil {
		t.Fatalf("Authenticate after Close: %v", err)
	}
}

func mustAccept(t *testing.T, a *Authenticator, tok string) {
	t.Helper()
	if _, err := a.Authenticate(bearer(tok)); err != nil {
		t.Fatalf("rejected: %v", err)
	}
}

func mustReject(t *testing.T, a *Authenticator, tok, reason string) {
	t.Helper()
	_, err := a.Authenticate(bearer(tok))
	if !errors.Is(err, server.ErrUnauthenticated) || !strings.Contains(err.Error(), reason) {
		t.Fatalf("err = %v, want unauthenticated: %s", err, reason)
	}
}

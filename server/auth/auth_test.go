package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/metadata"

	"github.com/quorumq/quorumq/server"
)

func TestAcceptsValidTokens(t *testing.T) {
	dir := t.TempDir()
	secret := writeFile(t, dir, "secret", testSecret)
	rsaPEM := writeFile(t, dir, "rsa-1.pem", pemPublic(t, rsaKey().Public()))
	ecPEM := writeFile(t, dir, "ec-1.pem", pemPublic(t, ecKey().Public()))
	edPEM := writeFile(t, dir, "ed-1.pem", pemPublic(t, edKey().Public()))
	set := writeFile(t, dir, "jwks.json", jwks(t,
		jwkOf(t, "r", rsaKey().Public()), jwkOf(t, "e", ecKey().Public()), jwkOf(t, "d", edKey().Public())))

	for _, tc := range []struct {
		name string
		cfg  Config
		alg  string
		key  any
		kid  string
	}{
		{"HS256", Config{HS256SecretFile: secret}, "HS256", testSecret, ""},
		{"HS256 with a kid", Config{HS256SecretFile: secret}, "HS256", testSecret, "any"},
		{"RS256", Config{PublicKeyFiles: []string{rsaPEM}}, "RS256", rsaKey(), ""},
		{"ES256", Config{PublicKeyFiles: []string{ecPEM}}, "ES256", ecKey(), ""},
		{"EdDSA", Config{PublicKeyFiles: []string{edPEM}}, "EdDSA", edKey(), ""},
		{"PEM set by kid", Config{PublicKeyFiles: []string{rsaPEM, ecPEM, edPEM}}, "ES256", ecKey(), "ec-1"},
		{"JWKS RS256", Config{JWKSFile: set}, "RS256", rsaKey(), "r"},
		{"JWKS ES256", Config{JWKSFile: set}, "ES256", ecKey(), "e"},
		{"JWKS EdDSA", Config{JWKSFile: set}, "EdDSA", edKey(), "d"},
		{"iss and aud", Config{HS256SecretFile: secret, Issuer: "idp", Audience: "quorumq"}, "HS256", testSecret, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAuth(t, tc.cfg)
			c := validClaims()
			c["scope"] = "messages:send  queues:admin no:such-scope"
			c["iss"], c["aud"] = "idp", []string{"other", "quorumq"}
			p, err := a.Authenticate(bearer(mint(t, tc.alg, tc.key, tc.kid, c)))
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			want := map[string]bool{server.ScopeMessagesSend: true, server.ScopeQueuesAdmin: true}
			if p.Tenant != "acme" || !maps.Equal(p.Scopes, want) {
				t.Fatalf("principal = %+v, want tenant acme scopes %v", p, want)
			}
		})
	}
}

func TestAcceptsWithinLeeway(t *testing.T) {
	a := newAuth(t, Config{HS256SecretFile: writeFile(t, t.TempDir(), "s", testSecret)})
	for name, c := range map[string]jwt.MapClaims{
		"expired 29s ago":   with("exp", testNow.Add(-29*time.Second).Unix()),
		"nbf in 29s":        with("nbf", testNow.Add(29*time.Second).Unix()),
		"iat in 29s":        with("iat", testNow.Add(29*time.Second).Unix()),
		"no scope":          with("scope", nil),
		"tenant charset ok": with("tenant", "Team_1.eu-west"),
	} {
		if _, err := a.Authenticate(bearer(mint(t, "HS256", testSecret, "", c))); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestRejects(t *testing.T) {
	dir := t.TempDir()
	hsCfg := Config{HS256SecretFile: writeFile(t, dir, "secret", testSecret), Issuer: "idp", Audience: "quorumq"}
	rsaPub := pemPublic(t, rsaKey().Public())
	rsCfg := Config{PublicKeyFiles: []string{writeFile(t, dir, "rsa.pem", rsaPub)}}
	mixedCfg := Config{JWKSFile: writeFile(t, dir, "jwks.json", jwks(t,
		jwkOf(t, "r", rsaKey().Public()), jwkOf(t, "e", ecKey().Public())))}
	hs, rs, mixed := newAuth(t, hsCfg), newAuth(t, rsCfg), newAuth(t, mixedCfg)

	hsOK := func(kv ...any) jwt.MapClaims { return with(append([]any{"iss", "idp", "aud", "quorumq"}, kv...)...) }
	hsTok := func(c jwt.MapClaims) string { return mint(t, "HS256", testSecret, "", c) }
	noneTok := must(jwt.NewWithClaims(jwt.SigningMethodNone, hsOK()).SignedString(jwt.UnsafeAllowNoneSignatureType))
	valid := hsTok(hsOK())
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + jwtSeg(t, hsOK("tenant", "evil")) + "." + parts[2]

	for _, tc := range []struct {
		name   string
		a      *Authenticator
		ctx    context.Context
		reason string
	}{
		{"no metadata", hs, context.Background(), "missing authorization header"},
		{"no authorization key", hs, metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-other", "1")), "missing authorization header"},
		{"two headers", hs, metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+valid, "authorization", "Bearer "+valid)), "more than one"},
		{"basic scheme", hs, header("Basic dXNlcjpwYXNz"), "not \"Bearer <token>\""},
		{"scheme only", hs, header("Bearer"), "not \"Bearer <token>\""},
		{"empty token", hs, header("Bearer   "), "not \"Bearer <token>\""},
		{"no scheme", hs, header(valid), "not \"Bearer <token>\""},
		{"too long", hs, bearer(strings.Repeat("a", maxHeaderBytes)), "too long"},
		{"not a jwt", hs, bearer("not-a-jwt"), "malformed token"},
		{"two segments", hs, bearer(parts[0] + "." + parts[1]), "malformed token"},
		{"unknown alg", hs, bearer(rawToken(t, `{"alg":"XX256","typ":"JWT"}`, hsOK())), "missing or unsupported algorithm"},
		{"no alg", hs, bearer(rawToken(t, `{"typ":"JWT"}`, hsOK())), "missing or unsupported algorithm"},
		{"none alg vs HS256", hs, bearer(noneTok), "algorithm none not allowed"},
		{"none alg vs RS256", rs, bearer(noneTok), "algorithm none not allowed"},
		{"HS256 signed with the RSA public key", rs, bearer(mint(t, "HS256", rsaPub, "", validClaims())), "algorithm HS256 not allowed"},
		{"RS256 token vs HS256 secret", hs, bearer(mint(t, "RS256", rsaKey(), "", hsOK())), "algorithm RS256 not allowed"},
		{"ES256 token with the RSA key's kid", mixed, bearer(mint(t, "ES256", ecKey(), "r", validClaims())), "algorithm ES256 not allowed for this key"},
		{"unknown kid", mixed, bearer(mint(t, "ES256", ecKey(), "zzz", validClaims())), "unknown key id"},
		{"no kid among several keys", mixed, bearer(mint(t, "ES256", ecKey(), "", validClaims())), "no kid"},
		{"non-string kid", mixed, bearer(mintHeader(t, ecKey(), map[string]any{"kid": 7})), "kid header is not a string"},
		{"bad signature", hs, bearer(mint(t, "HS256", []byte("another-secret-of-more-than-32-bytes!!"), "", hsOK())), "bad signature"},
		{"tampered payload", hs, bearer(tampered), "bad signature"},
		{"other RSA key", rs, bearer(mint(t, "RS256", rsaKey2(), "", validClaims())), "bad signature"},
		{"expired", hs, bearer(hsTok(hsOK("exp", testNow.Add(-31*time.Second).Unix()))), "token expired"},
		{"no exp", hs, bearer(hsTok(hsOK("exp", nil))), "missing exp claim"},
		{"nbf beyond leeway", hs, bearer(hsTok(hsOK("nbf", testNow.Add(31*time.Second).Unix()))), "token not valid yet"},
		{"iat in the future", hs, bearer(hsTok(hsOK("iat", testNow.Add(time.Hour).Unix()))), "token issued in the future"},
		{"wrong aud", hs, bearer(hsTok(hsOK("aud", "someone-else"))), "wrong audience"},
		{"no aud", hs, bearer(hsTok(hsOK("aud", nil))), "missing aud claim"},
		{"wrong iss", hs, bearer(hsTok(hsOK("iss", "mallory"))), "wrong issuer"},
		{"no iss", hs, bearer(hsTok(hsOK("iss", nil))), "missing iss claim"},
		{"no tenant", hs, bearer(hsTok(hsOK("tenant", nil))), "missing tenant claim"},
		{"empty tenant", hs, bearer(hsTok(hsOK("tenant", ""))), "tenant claim is not 1-64"},
		{"tenant with a slash", hs, bearer(hsTok(hsOK("tenant", "a/b"))), "tenant claim is not 1-64"},
		{"tenant with a space", hs, bearer(hsTok(hsOK("tenant", "a b"))), "tenant claim is not 1-64"},
		{"tenant with unicode", hs, bearer(hsTok(hsOK("tenant", "tenañt"))), "tenant claim is not 1-64"},
		{"tenant too long", hs, bearer(hsTok(hsOK("tenant", strings.Repeat("t", 65)))), "tenant claim is not 1-64"},
		{"numeric tenant", hs, bearer(hsTok(hsOK("tenant", 42))), "tenant claim is not a string"},
		{"scope array", hs, bearer(hsTok(hsOK("scope", []string{"queues:admin"}))), "scope claim is not"},
		{"exp as string", hs, bearer(hsTok(hsOK("exp", "tomorrow"))), "malformed token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.a.Authenticate(tc.ctx)
			if err == nil {
				t.Fatalf("accepted: %+v", p)
			}
			if !errors.Is(err, server.ErrUnauthenticated) {
				t.Fatalf("error %v does not wrap server.ErrUnauthenticated", err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("error %q, want reason %q", err, tc.reason)
			}
			if md, ok := metadata.FromIncomingContext(tc.ctx); ok {
				for _, v := range md.Get("authorization") {
					if tok := strings.TrimPrefix(v, "Bearer "); len(tok) > 8 && strings.Contains(err.Error(), tok) {
						t.Fatalf("error quotes the token: %q", err)
					}
				}
			}
		})
	}
}

// jwtSeg is the base64url JSON segment of claims.
func jwtSeg(t *testing.T, c jwt.MapClaims) string {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// rawToken builds header.claims.sig with a literal header and a junk
// signature, for headers Mint refuses to produce.
func rawToken(t *testing.T, hdr string, c jwt.MapClaims) string {
	t.Helper()
	return base64.RawURLEncoding.EncodeToString([]byte(hdr)) + "." + jwtSeg(t, c) + ".c2ln"
}

// mintHeader signs validClaims with ES256 and extra header fields.
func mintHeader(t *testing.T, k *ecdsa.PrivateKey, hdr map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, validClaims())
	maps.Copy(tok.Header, hdr)
	return must(tok.SignedString(k))
}

func TestSecretFileTrailingNewline(t *testing.T) {
	for name, content := range map[string]string{
		"LF": string(testSecret) + "\n", "CRLF": string(testSecret) + "\r\n", "none": string(testSecret),
	} {
		t.Run(name, func(t *testing.T) {
			a := newAuth(t, Config{HS256SecretFile: writeFile(t, t.TempDir(), "s", []byte(content))})
			if _, err := a.Authenticate(bearer(mint(t, "HS256", testSecret, "", validClaims()))); err != nil {
				t.Fatalf("token signed without the newline: %v", err)
			}
			if name != "none" {
				_, err := a.Authenticate(bearer(mint(t, "HS256", []byte(content), "", validClaims())))
				if !errors.Is(err, server.ErrUnauthenticated) {
					t.Fatalf("token signed with the newline: err = %v, want rejected", err)
				}
			}
		})
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	secret := writeFile(t, dir, "secret", testSecret)
	rsaPEM := writeFile(t, dir, "rsa.pem", pemPublic(t, rsaKey().Public()))
	p384 := must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
	rsa1024 := must(rsa.GenerateKey(rand.Reader, 1024))
	privDER := must(x509.MarshalPKCS8PrivateKey(ecKey()))
	twoKeys := append(pemPublic(t, ecKey().Public()), pemPublic(t, edKey().Public())...)
	dupKids := jwks(t, jwkOf(t, "k", ecKey().Public()), jwkOf(t, "k", edKey().Public()))
	noKid := jwks(t, jwkOf(t, "", ecKey().Public()), jwkOf(t, "b", edKey().Public()))
	onlySkipped := []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}`)
	badPoint := []byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}`)

	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no source", Config{}, "exactly one"},
		{"two sources", Config{HS256SecretFile: secret, PublicKeyFiles: []string{rsaPEM}}, "exactly one"},
		{"negative leeway", Config{HS256SecretFile: secret, Leeway: -time.Second}, "negative"},
		{"missing file", Config{HS256SecretFile: dir + "/nope"}, "no such file"},
		{"short secret", Config{HS256SecretFile: writeFile(t, dir, "short", []byte(strings.Repeat("x", 31)+"\n"))}, "need at least 32"},
		{"private key", Config{PublicKeyFiles: []string{writeFile(t, dir, "priv.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))}}, "private key"},
		{"P-384", Config{PublicKeyFiles: []string{writeFile(t, dir, "p384.pem", pemPublic(t, p384.Public()))}}, "P-256"},
		{"RSA 1024", Config{PublicKeyFiles: []string{writeFile(t, dir, "r1024.pem", pemPublic(t, rsa1024.Public()))}}, "at least 2048"},
		{"two keys in a PEM file", Config{PublicKeyFiles: []string{writeFile(t, dir, "two.pem", twoKeys)}}, "more than one key"},
		{"no PEM", Config{PublicKeyFiles: []string{writeFile(t, dir, "empty.pem", []byte("hello"))}}, "no PEM public key"},
		{"same kid twice", Config{PublicKeyFiles: []string{rsaPEM, rsaPEM}}, "duplicate kid"},
		{"JWKS duplicate kids", Config{JWKSFile: writeFile(t, dir, "dup.json", dupKids)}, "duplicate kid"},
		{"JWKS key without kid", Config{JWKSFile: writeFile(t, dir, "nokid.json", noKid)}, "no kid"},
		{"JWKS not JSON", Config{JWKSFile: writeFile(t, dir, "bad.json", []byte("{"))}, "not JSON"},
		{"JWKS without keys", Config{JWKSFile: writeFile(t, dir, "nokeys.json", []byte(`{}`))}, `no "keys"`},
		{"JWKS only unusable keys", Config{JWKSFile: writeFile(t, dir, "skip.json", onlySkipped)}, "no usable keys"},
		{"JWKS point off the curve", Config{JWKSFile: writeFile(t, dir, "point.json", badPoint)}, "key 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.ReloadInterval = -1
			tc.cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			a, err := New(tc.cfg)
			if err == nil {
				a.Close()
				t.Fatal("New accepted the config")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
		})
	}
}

func TestMint(t *testing.T) {
	for _, alg := range []string{"none", "HS512", "PS256", ""} {
		if _, err := Mint(alg, testSecret, "", validClaims()); err == nil {
			t.Errorf("Mint(%q) succeeded", alg)
		}
	}
	p384 := must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
	if _, err := Mint("ES256", p384, "", validClaims()); err == nil {
		t.Error("Mint ES256 with a P-384 key succeeded")
	}
	if _, err := Mint("RS256", testSecret, "", validClaims()); err == nil {
		t.Error("Mint RS256 with a []byte key succeeded")
	}
	tok := mint(t, "EdDSA", edKey(), "k1", validClaims())
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil || parsed.Header["kid"] != "k1" || parsed.Header["alg"] != "EdDSA" {
		t.Fatalf("header = %v (err %v)", parsed.Header, err)
	}
}

func TestParseScopes(t *testing.T) {
	known, unknown := ParseScopes(" cluster:admin  messages:receive bogus messages:receive x")
	if want := map[string]bool{server.ScopeClusterAdmin: true, server.ScopeMessagesReceive: true}; !maps.Equal(known, want) {
		t.Errorf("known = %v, want %v", known, want)
	}
	if !slices.Equal(unknown, []string{"bogus", "x"}) {
		t.Errorf("unknown = %v", unknown)
	}
}

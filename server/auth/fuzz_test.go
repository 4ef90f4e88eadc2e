package auth

import (
	"errors"
	"testing"
	"time"

	"github.com/quorumq/quorumq/server"
)

// FuzzAuthenticate feeds arbitrary authorization values to an HS256 and a
// JWKS Authenticator. None may panic or accept: the seeds (in code and in
// testdata/fuzz/FuzzAuthenticate) are near misses signed with the fixed
// test secret (expired, no tenant) so mutations start deep in the parser,
// and no mutation can forge a signature.
func FuzzAuthenticate(f *testing.F) {
	hs := newAuth(f, Config{HS256SecretFile: writeFile(f, f.TempDir(), "s", testSecret), Audience: "quorumq"})
	set := newAuth(f, Config{JWKSFile: writeFile(f, f.TempDir(), "jwks.json",
		jwks(f, jwkOf(f, "e", ecKey().Public()), jwkOf(f, "d", edKey().Public())))})

	f.Add("Bearer " + mint(f, "HS256", testSecret, "", with("exp", testNow.Add(-time.Hour).Unix(), "aud", "quorumq")))
	f.Add("Bearer " + mint(f, "HS256", testSecret, "", with("tenant", nil, "aud", "quorumq")))
	f.Add("Bearer " + mint(f, "ES256", ecKey(), "e", with("tenant", "bad/tenant")))
	f.Add("Bearer " + mint(f, "EdDSA", edKey(), "d", with("nbf", testNow.Add(time.Hour).Unix())))
	f.Add("bearer a.b.c")
	f.Add("")

	f.Fuzz(func(t *testing.T, v string) {
		for _, a := range []*Authenticator{hs, set} {
			p, err := a.Authenticate(header(v))
			if err == nil || p != nil {
				t.Fatalf("accepted %q: %+v", v, p)
			}
			if !errors.Is(err, server.ErrUnauthenticated) {
				t.Fatalf("error %v does not wrap server.ErrUnauthenticated", err)
			}
		}
	})
}

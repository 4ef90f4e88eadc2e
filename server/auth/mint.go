package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// mintMethods are the algorithms Mint signs with: the ones Authenticate
// can verify, so Mint never produces a token no server would take.
var mintMethods = map[string]jwt.SigningMethod{
	algHS256: jwt.SigningMethodHS256,
	algRS256: jwt.SigningMethodRS256,
	algES256: jwt.SigningMethodES256,
	algEdDSA: jwt.SigningMethodEdDSA,
}

// Mint signs claims with alg ("HS256", "RS256", "ES256" or "EdDSA") and
// key ([]byte, *rsa.PrivateKey, *ecdsa.PrivateKey on P-256 or
// ed25519.PrivateKey), setting the kid header when kid is not empty. It is
// for the token command and tests; production tokens come from an
// identity provider. Mint does not add exp or any other claim.
func Mint(alg string, key any, kid string, claims jwt.MapClaims) (string, error) {
	m, ok := mintMethods[alg]
	if !ok {
		return "", fmt.Errorf("auth: mint: algorithm %q not supported", alg)
	}
	if k, ok := key.(*ecdsa.PrivateKey); ok && alg == algES256 && k.Curve != elliptic.P256() {
		return "", fmt.Errorf("auth: mint: ES256 needs a P-256 key, got %s", k.Curve.Params().Name)
	}
	t := jwt.NewWithClaims(m, claims)
	if kid != "" {
		t.Header["kid"] = kid
	}
	s, err := t.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("auth: mint %s: %w", alg, err)
	}
	return s, nil
}

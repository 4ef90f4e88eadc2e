package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
)

// jwk is the subset of RFC 7517/7518/8037 fields a public signing key
// needs. D is read only to warn that a private key was published.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
	D   string `json:"d"`
}

// errSkip marks a key quorumq cannot use (another algorithm, an encryption
// key): identity providers publish those next to signing keys, so they are
// skipped, not fatal.
var errSkip = errors.New("skipped")

// parseJWKS parses a JWKS document. Unusable keys are skipped and logged;
// a malformed key fails the whole document, because a half-broken file is
// most likely being written or mis-generated and the last good set is the
// safer one to keep.
func parseJWKS(data []byte, log *slog.Logger) ([]key, error) {
	var doc struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`no "keys" array`)
	}
	var keys []key
	for i, j := range doc.Keys {
		k, err := j.toKey()
		if errors.Is(err, errSkip) {
			log.Warn("auth: JWKS key skipped", "index", i, "kid", j.Kid, "why", err)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("key %d (kid %q): %w", i, j.Kid, err)
		}
		if j.D != "" {
			log.Warn("auth: JWKS key contains private key material; publish only the public key", "kid", j.Kid)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// toKey converts a JWK into a key whose alg follows from kty and crv; a
// JWK "alg" that disagrees means the key is meant for something else.
func (j jwk) toKey() (key, error) {
	if j.Use != "" && j.Use != "sig" {
		return key{}, fmt.Errorf("%w: use %q", errSkip, j.Use)
	}
	k := key{kid: j.Kid}
	switch j.Kty {
	case "RSA":
		if j.Alg != "" && j.Alg != algRS256 {
			return key{}, fmt.Errorf("%w: alg %q", errSkip, j.Alg)
		}
		n, err := b64(j.N, "n", 0)
		if err != nil {
			return key{}, err
		}
		e, err := b64(j.E, "e", 0)
		if err != nil {
			return key{}, err
		}
		if len(e) > 4 {
			return key{}, errors.New("e is too large")
		}
		exp := int(new(big.Int).SetBytes(e).Int64())
		if exp < 3 || exp%2 == 0 {
			return key{}, errors.New("e is not an odd integer above 1")
		}
		k.pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	case "EC":
		if j.Crv != "P-256" {
			return key{}, fmt.Errorf("%w: curve %q", errSkip, j.Crv)
		}
		if j.Alg != "" && j.Alg != algES256 {
			return key{}, fmt.Errorf("%w: alg %q", errSkip, j.Alg)
		}
		x, err := b64(j.X, "x", 32)
		if err != nil {
			return key{}, err
		}
		y, err := b64(j.Y, "y", 32)
		if err != nil {
			return key{}, err
		}
		// Parsing the uncompressed point checks it is on the curve.
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return key{}, err
		}
		k.pub = pub
	case "OKP":
		if j.Crv != "Ed25519" {
			return key{}, fmt.Errorf("%w: curve %q", errSkip, j.Crv)
		}
		// "Ed25519" is the fully specified name of RFC 9864.
		if j.Alg != "" && j.Alg != algEdDSA && j.Alg != "Ed25519" {
			return key{}, fmt.Errorf("%w: alg %q", errSkip, j.Alg)
		}
		x, err := b64(j.X, "x", ed25519.PublicKeySize)
		if err != nil {
			return key{}, err
		}
		k.pub = ed25519.PublicKey(x)
	case "oct":
		return key{}, fmt.Errorf("%w: symmetric keys do not belong in a JWKS; use the HS256 secret file", errSkip)
	default:
		return key{}, fmt.Errorf("%w: kty %q", errSkip, j.Kty)
	}
	alg, err := algFor(k.pub)
	if err != nil {
		return key{}, err
	}
	k.alg = alg
	return k, nil
}

// b64 decodes a base64url member (RFC 7515 §2: no padding); size > 0
// requires that exact length.
func b64(s, name string, size int) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("missing %s", name)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%s is not base64url: %w", name, err)
	}
	if size > 0 && len(b) != size {
		return nil, fmt.Errorf("%s is %d bytes, want %d", name, len(b), size)
	}
	return b, nil
}

package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Algorithms, one per key type.
const (
	algHS256 = "HS256"
	algRS256 = "RS256"
	algES256 = "ES256"
	algEdDSA = "EdDSA"
)

const (
	// minSecretBytes is the HS256 secret floor: RFC 7518 §3.2 requires a
	// key at least as long as the hash output (256 bits).
	minSecretBytes = 32
	// minRSABits refuses RSA keys that are factorable in practice.
	minRSABits = 2048
	// maxKeyFileBytes bounds a key file read; real ones are a few KiB.
	maxKeyFileBytes = 1 << 20
)

// key is one verification key. Its alg is fixed by its type when it is
// loaded; a token must name that alg to be verified with it.
type key struct {
	kid string // "" only for the HS256 secret or a lone JWKS key
	alg string
	pub any // []byte, *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// keySet is an immutable snapshot of the keys and the parser that only
// admits their algorithms. Reload builds a new one and swaps it in.
type keySet struct {
	keys    []key
	methods map[string]bool
	parser  *jwt.Parser
}

// newKeySet checks kids (unique; every key has one when there are several,
// or a token could not select it) and builds the parser.
func newKeySet(keys []key, opts []jwt.ParserOption) (*keySet, error) {
	if len(keys) == 0 {
		return nil, errors.New("no usable keys")
	}
	ks := &keySet{keys: keys, methods: map[string]bool{}}
	seen := map[string]bool{}
	for _, k := range keys {
		if k.kid == "" && len(keys) > 1 {
			return nil, fmt.Errorf("a key has no kid among %d keys", len(keys))
		}
		if seen[k.kid] {
			return nil, fmt.Errorf("duplicate kid %q", k.kid)
		}
		seen[k.kid] = true
		ks.methods[k.alg] = true
	}
	methods := make([]string, 0, len(ks.methods))
	for m := range ks.methods {
		methods = append(methods, m)
	}
	slices.Sort(methods)
	ks.parser = jwt.NewParser(append(slices.Clip(opts), jwt.WithValidMethods(methods))...)
	return ks, nil
}

// keyFor is the jwt.Keyfunc: the token's kid selects the key (a lone key
// without a kid matches any token), and the token's alg must be the one
// that key verifies. The parser has already refused algs no key uses;
// this check stops an alg meant for one key type reaching another.
func (ks *keySet) keyFor(t *jwt.Token) (any, error) {
	var k *key
	switch kid, ok := t.Header["kid"]; {
	case len(ks.keys) == 1 && ks.keys[0].kid == "":
		k = &ks.keys[0]
	case !ok:
		if len(ks.keys) != 1 {
			return nil, &keyError{"token has no kid and several keys are configured"}
		}
		k = &ks.keys[0]
	default:
		s, isString := kid.(string)
		if !isString {
			return nil, &keyError{"kid header is not a string"}
		}
		for i := range ks.keys {
			if ks.keys[i].kid == s {
				k = &ks.keys[i]
				break
			}
		}
		if k == nil {
			return nil, &keyError{"unknown key id"}
		}
	}
	if alg := t.Method.Alg(); alg != k.alg {
		return nil, &keyError{fmt.Sprintf("algorithm %s not allowed for this key", alg)}
	}
	return k.pub, nil
}

// describe lists the keys for the reload log: kid and alg, never material.
func (ks *keySet) describe() []string {
	out := make([]string, 0, len(ks.keys))
	for _, k := range ks.keys {
		out = append(out, k.alg+":"+k.kid)
	}
	return out
}

// load reads the configured source into a new key set.
func (a *Authenticator) load() (*keySet, error) {
	var keys []key
	switch {
	case a.cfg.HS256SecretFile != "":
		secret, err := LoadHS256Secret(a.cfg.HS256SecretFile)
		if err != nil {
			return nil, err
		}
		keys = []key{{alg: algHS256, pub: secret}}
	case a.cfg.JWKSFile != "":
		data, err := readKeyFile(a.cfg.JWKSFile)
		if err != nil {
			return nil, err
		}
		if keys, err = parseJWKS(data, a.log); err != nil {
			return nil, fmt.Errorf("JWKS %s: %w", a.cfg.JWKSFile, err)
		}
	default:
		for _, path := range a.cfg.PublicKeyFiles {
			k, err := loadPEMKey(path)
			if err != nil {
				return nil, err
			}
			keys = append(keys, k)
		}
	}
	return newKeySet(keys, a.opts)
}

// LoadHS256Secret reads an HS256 secret file, dropping one trailing "\n"
// or "\r\n" (what echo and editors add), and refuses secrets shorter than
// 32 bytes. The server and the token command share it so that both see
// the same key.
func LoadHS256Secret(path string) ([]byte, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	if b, ok := bytes.CutSuffix(data, []byte("\r\n")); ok {
		data = b
	} else {
		data, _ = bytes.CutSuffix(data, []byte("\n"))
	}
	if len(data) < minSecretBytes {
		return nil, fmt.Errorf("HS256 secret %s: %d bytes, need at least %d", path, len(data), minSecretBytes)
	}
	return data, nil
}

// readKeyFile reads at most maxKeyFileBytes of a key file.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxKeyFileBytes {
		return nil, fmt.Errorf("key file %s is larger than %d bytes", path, maxKeyFileBytes)
	}
	return data, nil
}

// loadPEMKey reads a file holding exactly one PEM public key; its kid is
// the file name without the extension, so rotating means adding a file.
func loadPEMKey(path string) (key, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return key{}, err
	}
	var pub any
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var p any
		switch {
		case block.Type == "PUBLIC KEY":
			p, err = x509.ParsePKIXPublicKey(block.Bytes)
		case block.Type == "RSA PUBLIC KEY":
			p, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case strings.Contains(block.Type, "PRIVATE KEY"):
			// Do not silently accept a private key: the server needs
			// only the public half, and the file is probably misplaced.
			return key{}, fmt.Errorf("%s holds a private key; configure its public key", path)
		default:
			continue
		}
		if err != nil {
			return key{}, fmt.Errorf("%s: %w", path, err)
		}
		if pub != nil {
			return key{}, fmt.Errorf("%s holds more than one key; use one file per key (the file name is the kid)", path)
		}
		pub = p
	}
	if pub == nil {
		return key{}, fmt.Errorf("%s holds no PEM public key", path)
	}
	alg, err := algFor(pub)
	if err != nil {
		return key{}, fmt.Errorf("%s: %w", path, err)
	}
	base := filepath.Base(path)
	return key{kid: strings.TrimSuffix(base, filepath.Ext(base)), alg: alg, pub: pub}, nil
}

// algFor is the one algorithm a public key verifies.
func algFor(pub any) (string, error) {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if n := p.N.BitLen(); n < minRSABits {
			return "", fmt.Errorf("RSA key of %d bits, need at least %d", n, minRSABits)
		}
		return algRS256, nil
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return "", fmt.Errorf("ECDSA curve %s not supported (ES256 needs P-256)", p.Curve.Params().Name)
		}
		return algES256, nil
	case ed25519.PublicKey:
		return algEdDSA, nil
	}
	return "", fmt.Errorf("unsupported key type %T", pub)
}

// fileStamp is what the watcher compares to notice a changed file.
type fileStamp struct {
	size    int64
	modTime time.Time
	err     string // a missing or unreadable file is a state too
}

func stampFiles(paths []string) []fileStamp {
	out := make([]fileStamp, len(paths))
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			out[i] = fileStamp{err: err.Error()}
			continue
		}
		out[i] = fileStamp{size: fi.Size(), modTime: fi.ModTime()}
	}
	return out
}

func equalStamps(a, b []fileStamp) bool {
	return slices.EqualFunc(a, b, func(x, y fileStamp) bool {
		return x.size == y.size && x.modTime.Equal(y.modTime) && x.err == y.err
	})
}

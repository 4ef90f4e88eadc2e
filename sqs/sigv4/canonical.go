package sigv4

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// canonicalRequest builds the canonical request of r as AWS defines it
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html)
// and as aws-sdk-go-v2's signer builds it:
//
//	METHOD \n URI \n QUERY \n HEADERS \n SIGNED-HEADERS \n PAYLOAD-HASH
//
// URI: the path as sent, each byte outside A-Z a-z 0-9 - . _ ~ / percent-
// encoded again (services other than S3 encode twice). QUERY: every
// parameter but X-Amz-Signature, names and values percent-encoded (space as
// %20), sorted after encoding by name then value. HEADERS: the signed
// headers in the order signed, "name:value\n", values trimmed with inner
// runs of spaces squeezed and repeated headers joined by ','.
func canonicalRequest(r *http.Request, query url.Values, s *signature, payloadHash string) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	b.WriteString(canonicalURI(r.URL))
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(query, s.presigned))
	b.WriteByte('\n')
	for _, name := range s.headers {
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(headerValue(r, name))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(s.signedHeaders)
	b.WriteByte('\n')
	b.WriteString(payloadHash)
	return b.String()
}

// stringToSign is what the signature is the HMAC of.
func stringToSign(s *signature, canonical string) string {
	h := sha256.Sum256([]byte(canonical))
	return Algorithm + "\n" + s.amzDate + "\n" + s.scope() + "\n" + hex.EncodeToString(h[:])
}

func canonicalURI(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		return "/"
	}
	return escape(p, false)
}

func canonicalQuery(q url.Values, presigned bool) string {
	type pair struct{ k, v string }
	var pairs []pair
	for k, vs := range q {
		if presigned && k == qSignature {
			continue
		}
		ek := escape(k, true)
		for _, v := range vs {
			pairs = append(pairs, pair{ek, escape(v, true)})
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		if c := strings.Compare(a.k, b.k); c != 0 {
			return c
		}
		return strings.Compare(a.v, b.v)
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String()
}

// headerValue is the canonical value of a signed header. Go's server moves
// Host out of the header map into r.Host; a signed header the request
// lacks has the empty value (it will not match what the client signed).
func headerValue(r *http.Request, name string) string {
	if name == "host" {
		return squeeze(r.Host)
	}
	vs := r.Header.Values(name)
	if len(vs) == 0 && name == "content-length" && r.ContentLength >= 0 {
		return strconv.FormatInt(r.ContentLength, 10)
	}
	var b strings.Builder
	for i, v := range vs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strings.TrimSpace(squeeze(v)))
	}
	return b.String()
}

// squeeze trims spaces at both ends and replaces inner runs of spaces with
// one (only ' ', as the SDKs do).
func squeeze(s string) string {
	s = strings.Trim(s, " ")
	if !strings.Contains(s, "  ") {
		return s
	}
	var b strings.Builder
	space := false
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// escape percent-encodes every byte outside the RFC 3986 unreserved set
// (and '/', unless slash), with upper-case hex.
func escape(s string, slash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) || (c == '/' && !slash) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

func unreserved(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

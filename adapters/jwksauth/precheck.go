package jwksauth

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ensure-user/ensure-user/domain"
)

// MaxTokenLen is the longest token Verify looks at, in bytes. Longer tokens
// are refused before anything is decoded or hashed.
const MaxTokenLen = 8 << 10

// b64 decodes the RawURL alphabet strictly: no padding, no stray bits, so a
// token has exactly one encoding.
var b64 = base64.RawURLEncoding.Strict()

// The precheck errors are allocated once: refusing junk costs no allocation.
var (
	errTooLong   = fmt.Errorf("%w: token longer than %d bytes", domain.ErrInvalidToken, MaxTokenLen)
	errNotJWS    = fmt.Errorf("%w: not a compact JWS of three non-empty base64url segments", domain.ErrInvalidToken)
	errBadHeader = fmt.Errorf("%w: malformed header", domain.ErrInvalidToken)
	errCrit      = fmt.Errorf("%w: critical header parameters are not supported", domain.ErrInvalidToken)
)

// b64url marks the bytes of the RawURL alphabet.
var b64url = func() (t [256]bool) {
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		t[c] = true
	}
	return t
}()

// parts are the three segments of a compact JWS, still encoded.
type parts struct {
	header, payload, signature string
	signingInput               string // header + "." + payload
}

// precheck splits a compact JWS without decoding it. It refuses, cheaply and
// before any parsing, tokens longer than MaxTokenLen and anything that is not
// exactly three non-empty base64url segments: JWE (five segments), the JSON
// serialization, padding, whitespace and runs of dots.
func precheck(token string) (parts, error) {
	if len(token) > MaxTokenLen {
		return parts{}, errTooLong
	}
	first, second, dots := -1, -1, 0
	for i := 0; i < len(token); i++ {
		c := token[i]
		if b64url[c] {
			continue
		}
		if c != '.' {
			return parts{}, errNotJWS
		}
		dots++
		switch dots {
		case 1:
			first = i
		case 2:
			second = i
		default:
			return parts{}, errNotJWS
		}
	}
	if dots != 2 || first == 0 || second == first+1 || second == len(token)-1 {
		return parts{}, errNotJWS
	}
	return parts{
		header:       token[:first],
		payload:      token[first+1 : second],
		signature:    token[second+1:],
		signingInput: token[:second],
	}, nil
}

// header holds the JOSE header parameters Verify acts on. jku, x5u, x5c and
// jwk are deliberately ignored: keys come only from the configured key set,
// never from the token.
type header struct {
	alg, kid string
}

// decodeHeader decodes the protected header. Parameter names match exactly
// (encoding/json would match struct fields case-insensitively, so the header
// is read as a map). It refuses any crit parameter: jwx v2 does not enforce
// crit, and this service understands no extension.
func decodeHeader(seg string) (header, error) {
	raw, err := b64.DecodeString(seg)
	if err != nil {
		return header{}, errBadHeader
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return header{}, errBadHeader
	}
	if _, ok := m["crit"]; ok {
		return header{}, errCrit
	}
	var h header
	if h.alg, err = str(m["alg"]); err != nil {
		return header{}, errBadHeader
	}
	if kid, ok := m["kid"]; ok {
		if h.kid, err = str(kid); err != nil {
			return header{}, errBadHeader
		}
	}
	if h.alg == "" || strings.EqualFold(h.alg, "none") {
		return header{}, fmt.Errorf("%w: algorithm %q refused", domain.ErrInvalidToken, clip(h.alg))
	}
	return h, nil
}

// decodeSegment decodes a payload or signature segment.
func decodeSegment(name, seg string) ([]byte, error) {
	b, err := b64.DecodeString(seg)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not base64url", domain.ErrInvalidToken, name)
	}
	return b, nil
}

// clip bounds attacker-controlled text quoted in an error.
func clip(s string) string {
	const max = 16
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// isNull reports whether a JSON value is the literal null.
func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

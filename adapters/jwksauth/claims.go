package jwksauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/ensure-user/ensure-user/domain"
)

// claimRules are the claim checks shared by JWKS and HS256 tokens.
type claimRules struct {
	issuer, audience     string // "" : not checked
	leeway               int64  // nanoseconds
	requireExp           bool
	userIDClaims         []string
	emailClaim           string
	requireVerifiedEmail bool
}

// window is the interval, in Unix nanoseconds, in which a token is valid:
// from <= now < until, with now truncated to the second as jwx does.
type window struct{ from, until int64 }

// maxSeconds clamps NumericDate values so that nanosecond arithmetic cannot
// overflow; it is in the year 2242, so clamping changes no answer before then.
const maxSeconds = 1 << 33

// nowNanos is the clock's time truncated to the second, in Unix nanoseconds.
func nowNanos(t time.Time) int64 { return t.Unix() * int64(time.Second) }

// check reads the payload once and applies the time, issuer, audience and
// identity rules at now. Malformed or failing standard claims wrap
// domain.ErrInvalidToken; unusable identity claims wrap domain.ErrInvalidPayload.
func (r claimRules) check(payload []byte, now int64) (domain.Identity, window, error) {
	var buf [16]member // a token's claims, without allocating
	c, ok := readClaims(payload, buf[:0])
	if !ok {
		return domain.Identity{}, window{}, fmt.Errorf("%w: payload is not a JSON object", domain.ErrInvalidToken)
	}
	w, err := r.times(c)
	if err != nil {
		return domain.Identity{}, window{}, err
	}
	switch {
	case now >= w.until:
		return domain.Identity{}, window{}, fmt.Errorf("%w: expired", domain.ErrInvalidToken)
	case now < w.from:
		return domain.Identity{}, window{}, fmt.Errorf("%w: not yet valid (nbf or iat)", domain.ErrInvalidToken)
	}
	if r.issuer != "" {
		if !strIs(c.get("iss"), r.issuer) {
			return domain.Identity{}, window{}, fmt.Errorf("%w: issuer not accepted", domain.ErrInvalidToken)
		}
	}
	if r.audience != "" && !hasAudience(c.get("aud"), r.audience) {
		return domain.Identity{}, window{}, fmt.Errorf("%w: audience not accepted", domain.ErrInvalidToken)
	}
	id, err := r.identity(c)
	return id, w, err
}

// times turns exp, nbf and iat into the validity window, with leeway:
// exp must be after now-leeway; nbf and iat at or before now+leeway.
func (r claimRules) times(c claimSet) (window, error) {
	w := window{from: math.MinInt64, until: math.MaxInt64}
	exp, ok, err := numericDate(c.get("exp"))
	switch {
	case err != nil:
		return w, fmt.Errorf("%w: exp %v", domain.ErrInvalidToken, err)
	case ok:
		w.until = exp*int64(time.Second) + r.leeway
	case r.requireExp:
		return w, fmt.Errorf("%w: exp is required", domain.ErrInvalidToken)
	}
	for _, name := range []string{"nbf", "iat"} {
		t, ok, err := numericDate(c.get(name))
		if err != nil {
			return w, fmt.Errorf("%w: %s %v", domain.ErrInvalidToken, name, err)
		}
		if ok {
			w.from = max(w.from, t*int64(time.Second)-r.leeway)
		}
	}
	return w, nil
}

// numericDate reads a NumericDate (RFC 7519): a JSON number of seconds,
// fractions truncated. Absent or null reports ok false; a string, or any
// other type, is an error.
func numericDate(raw json.RawMessage) (sec int64, ok bool, err error) {
	if raw == nil || isNull(raw) {
		return 0, false, nil
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return 0, false, fmt.Errorf("is not a number")
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return 0, false, fmt.Errorf("is out of range")
	}
	return int64(math.Max(-maxSeconds, math.Min(maxSeconds, math.Floor(f)))), true, nil
}

// hasAudience reports whether aud, a string or an array of strings, holds want.
func hasAudience(raw json.RawMessage, want string) bool {
	if len(raw) > 0 && raw[0] == '[' {
		var auds []string
		return json.Unmarshal(raw, &auds) == nil && slices.Contains(auds, want)
	}
	return strIs(raw, want)
}

// strIs reports whether raw is a JSON string equal to want, without
// allocating for a plain string.
func strIs(raw json.RawMessage, want string) bool {
	if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' && plain(raw[1:n-1]) {
		return string(raw[1:n-1]) == want
	}
	s, err := str(raw)
	return err == nil && s == want
}

// identity reads the user id from the first present, non-null claim of
// userIDClaims and the email from emailClaim, and applies email_verified.
func (r claimRules) identity(c claimSet) (domain.Identity, error) {
	var id domain.Identity
	found := false
	for _, name := range r.userIDClaims {
		raw := c.get(name)
		if raw == nil || isNull(raw) {
			continue
		}
		s, err := str(raw)
		if err != nil {
			return id, fmt.Errorf("%w: claim %q is not a string", domain.ErrInvalidPayload, name)
		}
		id.UserID, found = s, true
		break
	}
	if !found {
		return id, fmt.Errorf("%w: no user id claim %v", domain.ErrInvalidPayload, r.userIDClaims)
	}
	raw := c.get(r.emailClaim)
	if raw == nil || isNull(raw) {
		return id, fmt.Errorf("%w: no %q claim", domain.ErrInvalidPayload, r.emailClaim)
	}
	email, err := str(raw)
	if err != nil {
		return id, fmt.Errorf("%w: claim %q is not a string", domain.ErrInvalidPayload, r.emailClaim)
	}
	id.Email = email
	if r.requireVerifiedEmail {
		if v := c.get("email_verified"); string(v) == "false" || (len(v) > 0 && v[0] == '"' && mustStr(v) == "false") {
			return id, fmt.Errorf("%w: email is not verified", domain.ErrInvalidPayload)
		}
	}
	return id, nil
}

var errNotString = errors.New("not a string")

// str decodes a JSON string; any other JSON type is an error. A string
// without escapes, quotes or control characters, in valid UTF-8 - every
// claim a real token carries - is its own content, so it is taken as is; the
// others go through encoding/json, which decodes escapes and replaces
// invalid UTF-8 exactly as before.
func str(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", errNotString
	}
	if n := len(raw); n >= 2 && raw[n-1] == '"' && plain(raw[1:n-1]) {
		return string(raw[1 : n-1]), nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

// plain reports whether b can stand between the quotes of a JSON string
// unchanged: no quote, backslash or control character, and valid UTF-8.
func plain(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return utf8.Valid(b)
}

func mustStr(raw json.RawMessage) string {
	s, _ := str(raw)
	return s
}

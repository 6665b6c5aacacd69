package jwksauth

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
)

// TestStrMatchesEncodingJSON: str's fast path for plain strings gives what
// encoding/json gives, for every kind of JSON string and non-string.
func TestStrMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{
		`""`, `"a"`, `"user-1@example.com"`, `"ünïcødé ✓"`, `"a\"b"`, `"a\\b"`, `"\u00e9"`, `"\ud83d\ude00"`,
		`"tab\there"`, "\"bad \xff utf8\"", "\"\xc3\"", `"a/b"`, `"<&>"`, `"\u2028"`, `"del` + "\x7f" + `"`,
		`"unterminated`, `"`, `x"`, `1`, `null`, `true`, `["a"]`, `{"a":1}`, ``,
	} {
		got, gotErr := str(json.RawMessage(raw))
		var want string
		wantErr := json.Unmarshal([]byte(raw), &want)
		if len(raw) == 0 || raw[0] != '"' {
			wantErr = fmt.Errorf("not a string")
		}
		if (gotErr != nil) != (wantErr != nil) || (gotErr == nil && got != want) {
			t.Errorf("str(%q) = %q, %v; encoding/json: %q, %v", raw, got, gotErr, want, wantErr)
		}
	}
}

// TestHeaderCache: the cache answers what decodeHeader answers, keeps only
// headers that decoded, and stops taking new ones when full.
func TestHeaderCache(t *testing.T) {
	t.Parallel()
	enc := base64.RawURLEncoding.EncodeToString
	c := newHeaderCache()
	good := enc([]byte(`{"alg":"ES256","kid":"k1"}`))
	for range 2 {
		h, err := c.decode(good)
		if err != nil || h.alg != "ES256" || h.kid != "k1" {
			t.Fatalf("decode(good) = %+v, %v", h, err)
		}
	}
	for _, bad := range []string{enc([]byte(`{"alg":"ES256","crit":["b64"]}`)), enc([]byte(`{"alg":"none"}`)), "%%%"} {
		want, wantErr := decodeHeader(bad)
		for range 2 {
			if h, err := c.decode(bad); err == nil || err.Error() != wantErr.Error() || h != want {
				t.Errorf("decode(%q) = %+v, %v; want %v", bad, h, err, wantErr)
			}
		}
	}
	if n := len(c.m); n != 1 {
		t.Errorf("%d headers kept, want only the good one", n)
	}
	for i := range 2 * headerCacheSize {
		seg := enc(fmt.Appendf(nil, `{"alg":"ES256","kid":"k%d"}`, i))
		if h, err := c.decode(seg); err != nil || h.kid != fmt.Sprintf("k%d", i) {
			t.Fatalf("decode(kid k%d) = %+v, %v", i, h, err)
		}
	}
	if n := len(c.m); n != headerCacheSize {
		t.Errorf("%d headers kept, want the cap %d", n, headerCacheSize)
	}
}

package jwksauth

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ensure-user/ensure-user/test/testenv"
)

func TestPrecheck(t *testing.T) {
	t.Parallel()
	max := strings.Repeat("A", MaxTokenLen-4) + ".B.C"
	for _, c := range []struct {
		token string
		want  error
	}{
		{"a.b.c", nil},
		{"eyJ-_09.Zz.x_-", nil},
		{max, nil},
		{max + "C", errTooLong},
		{"", errNotJWS},
		{"abc", errNotJWS},
		{"a.b", errNotJWS},
		{"a.b.c.d", errNotJWS},
		{"a.b.c.d.e", errNotJWS},
		{".b.c", errNotJWS},
		{"a..c", errNotJWS},
		{"a.b.", errNotJWS},
		{"..", errNotJWS},
		{"a.b.c=", errNotJWS},
		{"a.b+.c", errNotJWS},
		{"a.b/.c", errNotJWS},
		{"a .b.c", errNotJWS},
		{"a.b.c\n", errNotJWS},
		{`{"payload":"a"}`, errNotJWS},
		{"a.b.\xff", errNotJWS},
		{strings.Repeat(".", 5000), errNotJWS},
	} {
		p, err := precheck(c.token)
		if !errors.Is(err, c.want) {
			t.Errorf("precheck(%.20q) = %v, want %v", c.token, err, c.want)
		}
		if err == nil && p.header+"."+p.payload+"."+p.signature != c.token {
			t.Errorf("precheck(%.20q) split into %+v", c.token, p)
		}
	}
}

// TestOversizedTokensRefusedBeforeParsing proves the precheck runs first: a
// correctly signed token naming an unknown kid triggers a key set refresh
// when it fits in MaxTokenLen, and none at all when it is one byte over.
func TestOversizedTokensRefusedBeforeParsing(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es)
	r := loadedRig(t, authConfig(srv.URL))
	newKey := testenv.NewJWKSKey(t, "ES256", "new")

	sized := func(n int) string { // a valid token of exactly n bytes
		c := r.claims()
		c["pad"] = ""
		base := len(newKey.MintToken(t, c))
		c["pad"] = strings.Repeat("p", (n-base)*3/4)
		tok := newKey.MintToken(t, c)
		for len(tok) < n {
			c["pad"] = c["pad"].(string) + "p"
			tok = newKey.MintToken(t, c)
		}
		return tok
	}
	over := sized(MaxTokenLen + 1)
	if len(over) <= MaxTokenLen {
		t.Fatalf("token of %d bytes", len(over))
	}
	srv.SetKeys(t, k.es, newKey)
	if _, err := r.v.Verify(context.Background(), over); !errors.Is(err, errTooLong) {
		t.Fatalf("oversized: %v", err)
	}
	if srv.Requests() != 1 || testutilValue(r.v.m.unknownKid) != 0 || r.cacheResults("miss") != 0 {
		t.Fatalf("an oversized token was looked at: %d requests, %v kid refreshes, %v cache misses",
			srv.Requests(), testutilValue(r.v.m.unknownKid), r.cacheResults("miss"))
	}
	// Control: the same token under the limit does reach the key lookup.
	under := sized(MaxTokenLen - 200)
	if len(under) > MaxTokenLen {
		t.Fatalf("token of %d bytes", len(under))
	}
	if _, err := r.v.Verify(context.Background(), under); err != nil {
		t.Fatalf("the same token under the limit: %v", err)
	}
	if srv.Requests() != 2 || testutilValue(r.v.m.unknownKid) != 1 {
		t.Fatalf("control: %d requests", srv.Requests())
	}
}

// TestRefusingJunkAllocatesNothing: the precheck defuses allocation attacks
// (huge tokens, runs of dots): refusing them costs no allocation at all.
// Not parallel: AllocsPerRun forbids it.
func TestRefusingJunkAllocatesNothing(t *testing.T) {
	cfg := authConfig("")
	cfg.HS256Secret = secret
	r := newRig(t, cfg)
	ctx := context.Background()
	for name, tok := range map[string]string{
		"200KB":     strings.Repeat("A", 200<<10) + ".b.c",
		"many_dots": strings.Repeat("a.", 4000),
		"five_segs": "a.b.c.d.e",
		"bad_chars": strings.Repeat("a", 4000) + "!",
	} {
		if n := testing.AllocsPerRun(100, func() { _, _ = r.v.Verify(ctx, tok) }); n != 0 {
			t.Errorf("%s: %v allocations to refuse", name, n)
		}
	}
}

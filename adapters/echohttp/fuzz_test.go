package echohttp_test

import (
	"strings"
	"testing"

	"github.com/ensure-user/ensure-user/adapters/echohttp"
)

// FuzzBearerToken: extraction never panics, returns either nothing or a
// part of the header after a case-insensitive "bearer" and a blank, and
// never returns surrounding blanks.
func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer  abc ", "BEARER\tx", "Bearer", "Bearer ", "Basic x", "", "Bearerx y", "bEaReR a.b.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		tok := echohttp.BearerToken(header)
		if tok == "" {
			return
		}
		if !strings.EqualFold(header[:6], "bearer") || (header[6] != ' ' && header[6] != '\t') {
			t.Fatalf("BearerToken(%q) = %q from a header without the Bearer scheme", header, tok)
		}
		if !strings.Contains(header[7:], tok) || strings.HasPrefix(tok, " ") || strings.HasSuffix(tok, " ") || strings.HasPrefix(tok, "\t") || strings.HasSuffix(tok, "\t") {
			t.Fatalf("BearerToken(%q) = %q", header, tok)
		}
	})
}

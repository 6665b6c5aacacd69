package domain_test

import (
	"errors"
	"net/mail"
	"testing"
	"unicode/utf8"

	"github.com/ensure-user/ensure-user/domain"
)

// FuzzNewUser: claim validation never panics, accepts only values within the
// limits, valid UTF-8 without control characters and an addr-spec email, and
// never rewrites what it accepts.
func FuzzNewUser(f *testing.F) {
	f.Add("u1", "a@example.com")
	f.Add("u\x00", "a@b.c")
	f.Add("ü", "Bob <b@c.d>")
	f.Add("x", "a@b.c\r\n")
	f.Add("x", `"q"@example.com`)
	f.Fuzz(func(t *testing.T, id, email string) {
		u, err := domain.NewUser(domain.Identity{UserID: id, Email: email})
		if err != nil {
			if !errors.Is(err, domain.ErrInvalidPayload) {
				t.Fatalf("error %v does not wrap ErrInvalidPayload", err)
			}
			return
		}
		if u.ID != id || u.Email != email {
			t.Fatalf("rewrote %q %q into %q %q", id, email, u.ID, u.Email)
		}
		for _, s := range []string{id, email} {
			if !utf8.ValidString(s) {
				t.Fatalf("accepted invalid UTF-8 %q", s)
			}
			for _, r := range s {
				if r < 0x20 || r == 0x7f {
					t.Fatalf("accepted a control character in %q", s)
				}
			}
		}
		if len(id) > domain.MaxUserIDLen || len(email) > domain.MaxEmailLen || id == "" {
			t.Fatalf("accepted out-of-limit values %q %q", id, email)
		}
		if a, err := mail.ParseAddress(email); err != nil || a.Address != email {
			t.Fatalf("accepted %q, not an addr-spec", email)
		}
	})
}

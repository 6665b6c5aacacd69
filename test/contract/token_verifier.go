// Package contract holds the suites every implementation of a port must pass,
// whatever technology is behind it: the real adapters and the fakes alike.
package contract

import (
	"context"
	"errors"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/ports"
	"github.com/ensure-user/ensure-user/test/fake"
)

// TokenVerifierHarness is one TokenVerifier under test, with the clock it
// reads and the means to mint tokens for it. Mint functions sign the claims
// they are given, unchanged.
type TokenVerifierHarness struct {
	// Verifier is the implementation under test, ready to verify.
	Verifier ports.TokenVerifier
	// Clock is the clock the verifier checks exp, nbf and iat against.
	Clock *fake.Clock
	// Leeway is the clock skew the verifier allows.
	Leeway time.Duration
	// Issuer and Audience are the iss and aud the verifier requires; "" when
	// it does not check them.
	Issuer, Audience string
	// UserIDClaim and EmailClaim name the claims holding the identity.
	UserIDClaim, EmailClaim string
	// RequireExp and RequireVerifiedEmail mirror the verifier's settings.
	RequireExp, RequireVerifiedEmail bool

	// Mint signs claims with a key (or secret) the verifier trusts.
	Mint func(t testing.TB, claims map[string]any) string
	// MintWrongKey signs claims with a key the verifier does not trust,
	// presented exactly as Mint presents its key (same alg and kid).
	MintWrongKey func(t testing.TB, claims map[string]any) string
	// MintUnknownKid signs claims with a key under a kid the verifier does not
	// know; nil when the verifier does not select keys by kid.
	MintUnknownKid func(t testing.TB, claims map[string]any) string
	// MintDisallowedAlg signs claims with an algorithm the verifier must refuse.
	MintDisallowedAlg func(t testing.TB, claims map[string]any) string
}

// Claims returns claims valid at the harness clock's now for one hour.
func (h TokenVerifierHarness) Claims() map[string]any {
	now := h.Clock.Now()
	c := map[string]any{
		h.UserIDClaim: "user-1",
		h.EmailClaim:  "user-1@example.com",
		"iat":         now.Unix(),
		"exp":         now.Add(time.Hour).Unix(),
	}
	if h.Issuer != "" {
		c["iss"] = h.Issuer
	}
	if h.Audience != "" {
		c["aud"] = h.Audience
	}
	return c
}

// RunTokenVerifier runs the TokenVerifier contract. newHarness is called
// once per case, so cases may move their clock independently.
func RunTokenVerifier(t *testing.T, newHarness func(t *testing.T) TokenVerifierHarness) {
	valid := domain.Identity{UserID: "user-1", Email: "user-1@example.com"}
	with := func(c map[string]any, kv ...any) map[string]any {
		c = maps.Clone(c)
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	run := func(name string, f func(t *testing.T, h TokenVerifierHarness)) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, newHarness(t))
		})
	}

	run("valid", func(t *testing.T, h TokenVerifierHarness) {
		tok := h.Mint(t, h.Claims())
		for range 2 { // twice: an answer from a cache must be the same
			expectIdentity(t, h, tok, valid)
		}
	})
	run("expired", func(t *testing.T, h TokenVerifierHarness) {
		now := h.Clock.Now()
		tok := h.Mint(t, with(h.Claims(), "iat", now.Add(-2*time.Hour).Unix(), "exp", now.Add(-h.Leeway-time.Second).Unix()))
		expectErr(t, h, tok, domain.ErrInvalidToken)
	})
	run("expires_on_the_clock", func(t *testing.T, h TokenVerifierHarness) {
		tok := h.Mint(t, with(h.Claims(), "exp", h.Clock.Now().Add(10*time.Minute).Unix()))
		expectIdentity(t, h, tok, valid)
		h.Clock.Advance(10*time.Minute + h.Leeway - time.Second)
		expectIdentity(t, h, tok, valid) // within the leeway
		h.Clock.Advance(time.Second)
		expectErr(t, h, tok, domain.ErrInvalidToken)
	})
	run("not_yet_valid", func(t *testing.T, h TokenVerifierHarness) {
		nbf := h.Clock.Now().Add(h.Leeway + time.Minute)
		tok := h.Mint(t, with(h.Claims(), "nbf", nbf.Unix()))
		expectErr(t, h, tok, domain.ErrInvalidToken)
		h.Clock.Advance(time.Minute) // now = nbf - leeway
		expectIdentity(t, h, tok, valid)
	})
	run("issued_in_the_future", func(t *testing.T, h TokenVerifierHarness) {
		tok := h.Mint(t, with(h.Claims(), "iat", h.Clock.Now().Add(h.Leeway+time.Minute).Unix()))
		expectErr(t, h, tok, domain.ErrInvalidToken)
	})
	run("exp_as_string", func(t *testing.T, h TokenVerifierHarness) {
		exp := strconv.FormatInt(h.Clock.Now().Add(time.Hour).Unix(), 10)
		tok := h.Mint(t, with(h.Claims(), "exp", exp))
		expectErr(t, h, tok, domain.ErrInvalidToken)
	})
	run("missing_exp", func(t *testing.T, h TokenVerifierHarness) {
		tok := h.Mint(t, with(h.Claims(), "exp", nil))
		if h.RequireExp {
			expectErr(t, h, tok, domain.ErrInvalidToken)
		} else {
			expectIdentity(t, h, tok, valid)
		}
	})
	run("wrong_issuer", func(t *testing.T, h TokenVerifierHarness) {
		if h.Issuer == "" {
			t.Skip("the verifier does not check iss")
		}
		expectErr(t, h, h.Mint(t, with(h.Claims(), "iss", h.Issuer+".evil")), domain.ErrInvalidToken)
		expectErr(t, h, h.Mint(t, with(h.Claims(), "iss", nil)), domain.ErrInvalidToken)
		expectErr(t, h, h.Mint(t, with(h.Claims(), "iss", []string{h.Issuer})), domain.ErrInvalidToken)
	})
	run("wrong_audience", func(t *testing.T, h TokenVerifierHarness) {
		if h.Audience == "" {
			t.Skip("the verifier does not check aud")
		}
		expectErr(t, h, h.Mint(t, with(h.Claims(), "aud", "someone-else")), domain.ErrInvalidToken)
		expectErr(t, h, h.Mint(t, with(h.Claims(), "aud", []string{"a", "b"})), domain.ErrInvalidToken)
		expectErr(t, h, h.Mint(t, with(h.Claims(), "aud", nil)), domain.ErrInvalidToken)
		expectIdentity(t, h, h.Mint(t, with(h.Claims(), "aud", []string{"other", h.Audience})), valid)
	})
	run("wrong_key", func(t *testing.T, h TokenVerifierHarness) {
		expectErr(t, h, h.MintWrongKey(t, h.Claims()), domain.ErrInvalidToken)
	})
	run("unknown_kid", func(t *testing.T, h TokenVerifierHarness) {
		if h.MintUnknownKid == nil {
			t.Skip("the verifier does not select keys by kid")
		}
		expectErr(t, h, h.MintUnknownKid(t, h.Claims()), domain.ErrInvalidToken)
	})
	run("disallowed_alg", func(t *testing.T, h TokenVerifierHarness) {
		expectErr(t, h, h.MintDisallowedAlg(t, h.Claims()), domain.ErrInvalidToken)
	})
	run("malformed", func(t *testing.T, h TokenVerifierHarness) {
		good := h.Mint(t, h.Claims())
		other := h.Mint(t, with(h.Claims(), h.UserIDClaim, "user-2"))
		seg := strings.Split(good, ".")
		for name, tok := range map[string]string{
			"one_segment":      "abc",
			"two_segments":     seg[0] + "." + seg[1],
			"empty_signature":  seg[0] + "." + seg[1] + ".",
			"four_segments":    good + ".abc",
			"jwe_five":         seg[0] + ".a.b.c.d",
			"empty_segments":   "..",
			"json_serialized":  `{"payload":"` + seg[1] + `","signatures":[]}`,
			"padding":          good + "=",
			"whitespace":       " " + good,
			"std_base64":       strings.ReplaceAll(good, "-", "+") + "+/",
			"swapped_payload":  seg[0] + "." + strings.Split(other, ".")[1] + "." + seg[2],
			"truncated_sig":    good[:len(good)-4],
			"garbage":          "not a token at all",
			"only_dots":        "....",
			"header_not_b64":   "!!!." + seg[1] + "." + seg[2],
			"nul_byte":         good[:10] + "\x00" + good[11:],
			"non_ascii":        good[:10] + "é" + good[12:],
			"oversized_header": strings.Repeat("A", 9000) + "." + seg[1] + "." + seg[2],
		} {
			if tok == good {
				t.Fatalf("%s: the mutation did not change the token", name)
			}
			if _, err := h.Verifier.Verify(context.Background(), tok); !errors.Is(err, domain.ErrInvalidToken) {
				t.Errorf("%s: err = %v, want %v", name, err, domain.ErrInvalidToken)
			}
		}
	})
	run("missing_user_id", func(t *testing.T, h TokenVerifierHarness) {
		expectErr(t, h, h.Mint(t, with(h.Claims(), h.UserIDClaim, nil)), domain.ErrInvalidPayload)
	})
	run("user_id_not_a_string", func(t *testing.T, h TokenVerifierHarness) {
		expectErr(t, h, h.Mint(t, with(h.Claims(), h.UserIDClaim, 42)), domain.ErrInvalidPayload)
	})
	run("missing_email", func(t *testing.T, h TokenVerifierHarness) {
		expectErr(t, h, h.Mint(t, with(h.Claims(), h.EmailClaim, nil)), domain.ErrInvalidPayload)
	})
	run("email_not_a_string", func(t *testing.T, h TokenVerifierHarness) {
		expectErr(t, h, h.Mint(t, with(h.Claims(), h.EmailClaim, []string{"a@example.com"})), domain.ErrInvalidPayload)
	})
	run("email_verified_false", func(t *testing.T, h TokenVerifierHarness) {
		for _, v := range []any{false, "false"} {
			tok := h.Mint(t, with(h.Claims(), "email_verified", v))
			if h.RequireVerifiedEmail {
				expectErr(t, h, tok, domain.ErrInvalidPayload)
			} else {
				expectIdentity(t, h, tok, valid)
			}
		}
		expectIdentity(t, h, h.Mint(t, with(h.Claims(), "email_verified", true)), valid)
	})
}

func expectIdentity(t *testing.T, h TokenVerifierHarness, token string, want domain.Identity) {
	t.Helper()
	got, err := h.Verifier.Verify(context.Background(), token)
	if err != nil {
		t.Fatalf("Verify: unexpected error %v", err)
	}
	if got != want {
		t.Fatalf("Verify = %+v, want %+v", got, want)
	}
}

func expectErr(t *testing.T, h TokenVerifierHarness, token string, want error) {
	t.Helper()
	got, err := h.Verifier.Verify(context.Background(), token)
	if !errors.Is(err, want) {
		t.Fatalf("Verify = %+v, %v; want an error wrapping %v", got, err, want)
	}
	for _, other := range []error{domain.ErrInvalidToken, domain.ErrInvalidPayload, domain.ErrVerifierUnavailable} {
		if other != want && errors.Is(err, other) {
			t.Fatalf("Verify error %v also wraps %v", err, other)
		}
	}
	if strings.Contains(err.Error(), token) {
		t.Fatalf("Verify error contains the token")
	}
}

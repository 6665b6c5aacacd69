package jwksauth

import (
	"context"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/test/contract"
	"github.com/ensure-user/ensure-user/test/testenv"
)

// jwksHarness is the contract harness for a verifier loaded from the key set
// at url, publishing k.es (and k.rs, so that a disallowed algorithm has a key).
func jwksHarness(t *testing.T, cfg Config) contract.TokenVerifierHarness {
	k := testKeys(t)
	r := loadedRig(t, cfg)
	wrong := testenv.NewJWKSKey(t, "ES256", k.es.Kid) // same kid, another key
	unknown := testenv.NewJWKSKey(t, "ES256", "not-published")
	return contract.TokenVerifierHarness{
		Verifier:             r.v,
		Clock:                r.clock,
		Leeway:               cfg.Leeway,
		Issuer:               issuer,
		Audience:             audience,
		UserIDClaim:          "sub",
		EmailClaim:           "email",
		RequireExp:           cfg.RequireExp,
		RequireVerifiedEmail: cfg.RequireVerifiedEmail,
		Mint: func(t testing.TB, c map[string]any) string {
			return k.es.MintToken(t, c)
		},
		MintWrongKey: func(t testing.TB, c map[string]any) string {
			return wrong.MintToken(t, c)
		},
		MintUnknownKid: func(t testing.TB, c map[string]any) string {
			return unknown.MintToken(t, c)
		},
		MintDisallowedAlg: func(t testing.TB, c map[string]any) string {
			// The published RSA key signs PS256, which JWT_ALGORITHMS
			// (ES256, RS256) does not allow.
			return k.rs.MintToken(t, c, testenv.TokenAlg("PS256"))
		},
	}
}

func TestContractJWKSFile(t *testing.T) {
	t.Parallel()
	contract.RunTokenVerifier(t, func(t *testing.T) contract.TokenVerifierHarness {
		k := testKeys(t)
		cfg := authConfig(testenv.NewJWKSFile(t, k.es, k.rs).URL)
		cfg.Algorithms = []string{"ES256", "RS256"}
		return jwksHarness(t, cfg)
	})
}

func TestContractJWKSOverHTTP(t *testing.T) {
	t.Parallel()
	contract.RunTokenVerifier(t, func(t *testing.T) contract.TokenVerifierHarness {
		k := testKeys(t)
		cfg := authConfig(testenv.NewJWKSServer(t, k.es, k.rs).URL)
		cfg.Algorithms = []string{"ES256", "RS256"}
		return jwksHarness(t, cfg)
	})
}

func TestContractJWKSOverHTTPSWithCAFile(t *testing.T) {
	t.Parallel()
	contract.RunTokenVerifier(t, func(t *testing.T) contract.TokenVerifierHarness {
		k := testKeys(t)
		srv := testenv.NewJWKSTLSServer(t, k.es, k.rs)
		cfg := authConfig(srv.URL)
		cfg.CAFile = srv.CAFile
		cfg.Algorithms = []string{"ES256", "RS256"}
		cfg.Leeway = 0 // the rules hold with no leeway too
		cfg.RequireVerifiedEmail = false
		return jwksHarness(t, cfg)
	})
}

func TestContractHS256Only(t *testing.T) {
	t.Parallel()
	contract.RunTokenVerifier(t, func(t *testing.T) contract.TokenVerifierHarness {
		k := testKeys(t)
		cfg := authConfig("")
		cfg.HS256Secret = secret
		cfg.RequireExp = false
		r := newRig(t, cfg)
		if err := r.v.Ready(); err != nil {
			t.Fatalf("Ready in HS256-only mode: %v", err)
		}
		return contract.TokenVerifierHarness{
			Verifier:             r.v,
			Clock:                r.clock,
			Leeway:               cfg.Leeway,
			Issuer:               issuer,
			Audience:             audience,
			UserIDClaim:          "sub",
			EmailClaim:           "email",
			RequireExp:           cfg.RequireExp,
			RequireVerifiedEmail: cfg.RequireVerifiedEmail,
			Mint: func(t testing.TB, c map[string]any) string {
				return testenv.MintHS256Token(t, []byte(secret), c)
			},
			MintWrongKey: func(t testing.TB, c map[string]any) string {
				return testenv.MintHS256Token(t, []byte(secret+"-not"), c)
			},
			MintDisallowedAlg: func(t testing.TB, c map[string]any) string {
				return k.es.MintToken(t, c) // no key set: only HS256 is accepted
			},
		}
	})
}

// TestRotationToANewKid: the IdP starts signing with a key published after
// the last refresh; the first token naming it triggers one refresh and is
// accepted in that very request.
func TestRotationToANewKid(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es)
	r := loadedRig(t, authConfig(srv.URL))

	tok := k.es2.MintToken(t, r.claims())
	srv.SetKeys(t, k.es, k.es2)
	id, err := r.v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("token of the new key: %v", err)
	}
	if id != (domain.Identity{UserID: "user-1", Email: "user-1@example.com"}) {
		t.Fatalf("identity = %+v", id)
	}
	if got := srv.Requests(); got != 2 {
		t.Fatalf("key set requests = %d, want 2 (start-up and one refresh)", got)
	}
	if got := testutilValue(r.v.m.unknownKid); got != 1 {
		t.Fatalf("unknown kid refreshes = %v, want 1", got)
	}
	// The old key keeps working; the schedule is unchanged.
	if _, err := r.v.Verify(context.Background(), k.es.MintToken(t, r.claims())); err != nil {
		t.Fatalf("token of the old key: %v", err)
	}
	r.tick(t, 10*time.Minute, 3)
}

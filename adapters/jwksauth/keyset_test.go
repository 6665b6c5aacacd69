package jwksauth

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/test/testenv"
)

// TestAlgorithmsComeFromTheKeys: each key verifies only its alg, or the one
// its curve implies; RSA keys without alg only the RS*/PS* algorithms of
// JWT_ALGORITHMS; JWT_ALGORITHMS intersects the lot.
func TestAlgorithmsComeFromTheKeys(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	es384 := testenv.NewJWKSKey(t, "ES384", "es384")
	es512 := testenv.NewJWKSKey(t, "ES512", "es512")
	noAlg := func(key *testenv.JWKSKey) map[string]any {
		m := key.JWK(t)
		delete(m, "alg")
		return m
	}
	cases := []struct {
		name    string
		jwks    []map[string]any
		allowed []string
		accept  map[string]string // token alg -> key kid
		refuse  map[string]string
	}{
		{
			name:   "curves_imply_their_algorithm",
			jwks:   []map[string]any{noAlg(k.es), noAlg(es384), noAlg(es512), noAlg(k.ed)},
			accept: map[string]string{"ES256": "es-1", "ES384": "es384", "ES512": "es512", "EdDSA": "ed-1"},
			refuse: map[string]string{"ES384": "es-1"},
		},
		{
			name:    "rsa_without_alg_uses_the_allowed_rsa_algorithms",
			jwks:    []map[string]any{noAlg(k.rs), noAlg(k.es)},
			allowed: []string{"RS256", "PS256", "ES256"},
			accept:  map[string]string{"RS256": "rs-1", "PS256": "rs-1", "ES256": "es-1"},
			refuse:  map[string]string{"RS512": "rs-1", "PS384": "rs-1"},
		},
		{
			name:   "rsa_with_alg_uses_only_that",
			jwks:   []map[string]any{k.rs.JWK(t)},
			accept: map[string]string{"RS256": "rs-1"},
			refuse: map[string]string{"PS256": "rs-1", "RS384": "rs-1"},
		},
		{
			name:    "allowlist_intersects",
			jwks:    []map[string]any{k.rs.JWK(t), k.es.JWK(t), k.ed.JWK(t)},
			allowed: []string{"ES256"},
			accept:  map[string]string{"ES256": "es-1"},
			refuse:  map[string]string{"RS256": "rs-1", "EdDSA": "ed-1"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := testenv.NewJWKSFile(t)
			f.Write(t, testenv.JWKSDocument(t, c.jwks...))
			cfg := authConfig(f.URL)
			cfg.Algorithms = c.allowed
			r := loadedRig(t, cfg)
			signer := map[string]*testenv.JWKSKey{"es-1": k.es, "es384": es384, "es512": es512, "ed-1": k.ed, "rs-1": k.rs}
			for alg, kid := range c.accept {
				if _, err := r.v.Verify(context.Background(), signer[kid].MintToken(t, r.claims(), testenv.TokenAlg(alg))); err != nil {
					t.Errorf("%s with %s: %v", alg, kid, err)
				}
			}
			for alg, kid := range c.refuse {
				tok := signer[kid].MintToken(t, r.claims(), testenv.TokenAlg(alg))
				if _, err := r.v.Verify(context.Background(), tok); !errors.Is(err, domain.ErrInvalidToken) {
					t.Errorf("%s with %s: %v, want ErrInvalidToken", alg, kid, err)
				}
			}
		})
	}
}

// TestUnusableKeysAreSkipped: oct, use=enc, key_ops without verify, X25519,
// unknown kty, alg not fitting the key, weak RSA and RSA without alg (when
// JWT_ALGORITHMS allows no RSA algorithm) are dropped with a warning; the
// usable keys of the same document still work.
func TestUnusableKeysAreSkipped(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakJWK := (&testenv.JWKSKey{Kid: "weak", Alg: "RS256", Private: weak}).JWK(t)
	rsaNoAlg := k.rs.JWK(t)
	delete(rsaNoAlg, "alg")
	jwks := append(unusableJWKs(t), weakJWK, rsaNoAlg, k.es.JWK(t))

	core, logs := observer.New(zapcore.WarnLevel)
	set, err := keyPolicy{log: zap.New(core)}.parseKeySet(testenv.JWKSDocument(t, jwks...))
	if err != nil {
		t.Fatal(err)
	}
	if set.size != 1 || len(set.byKid) != 1 || set.byKid[kidAlg{"es-1", "ES256"}] == nil {
		t.Fatalf("usable keys: %d %v", set.size, set.byKid)
	}
	if got, want := logs.FilterMessageSnippet("skipping").Len(), len(jwks)-1; got != want {
		t.Fatalf("%d warnings, want %d: %v", got, want, logs.All())
	}
	rsaWarned := false
	for _, e := range logs.FilterField(zap.String("kid", "rs-1")).All() {
		rsaWarned = rsaWarned || strings.Contains(fmt.Sprint(e.ContextMap()["error"]), "RSA key without alg")
	}
	if !rsaWarned {
		t.Fatalf("no warning about the RSA key without alg: %v", logs.All())
	}
	if _, err := (keyPolicy{log: zap.NewNop()}).parseKeySet(testenv.JWKSDocument(t, unusableJWKs(t)...)); !errors.Is(err, errNoUsableKeys) {
		t.Fatalf("only unusable keys: %v", err)
	}
}

// TestTokensWithoutKid are accepted only when exactly one key fits their alg.
func TestTokensWithoutKid(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	r := loadedRig(t, authConfig(testenv.NewJWKSFile(t, k.es, k.es2, k.rs).URL))
	tok := func(key *testenv.JWKSKey) string { return key.MintToken(t, r.claims(), testenv.TokenNoKid()) }
	if _, err := r.v.Verify(context.Background(), tok(k.rs)); err != nil {
		t.Fatalf("the one RS256 key: %v", err)
	}
	if _, err := r.v.Verify(context.Background(), tok(k.es)); !errors.Is(err, errAmbiguous) {
		t.Fatalf("two ES256 keys: %v", err)
	}
	if _, err := r.v.Verify(context.Background(), tok(k.ed)); !errors.Is(err, errNoKeyForAlg) {
		t.Fatalf("no EdDSA key: %v", err)
	}
}

// TestDuplicateKidFirstWins: a second key under the same kid and alg is
// ignored with a warning rather than letting either verify.
func TestDuplicateKidFirstWins(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	dup := k.es2.JWK(t)
	dup["kid"] = k.es.Kid
	core, logs := observer.New(zapcore.WarnLevel)
	set, err := keyPolicy{log: zap.New(core)}.parseKeySet(testenv.JWKSDocument(t, k.es.JWK(t), dup))
	if err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessageSnippet("duplicate").Len() != 1 {
		t.Fatalf("logs: %v", logs.All())
	}
	key, err := set.lookup(k.es.Kid, "ES256")
	if err != nil || !key.pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(k.es.Public()) {
		t.Fatalf("lookup = %v, %v", key, err)
	}
}

// TestKeySetDigest: the same keys give the same digest; any change of key,
// kid or alg another.
func TestKeySetDigest(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	p := keyPolicy{log: zap.NewNop()}
	digest := func(jwks ...map[string]any) [32]byte {
		s, err := p.parseKeySet(testenv.JWKSDocument(t, jwks...))
		if err != nil {
			t.Fatal(err)
		}
		return s.digest
	}
	base := digest(k.es.JWK(t), k.rs.JWK(t))
	if digest(k.es.JWK(t), k.rs.JWK(t)) != base {
		t.Fatal("same keys, different digest")
	}
	renamed := k.es.JWK(t)
	renamed["kid"] = "renamed"
	for name, d := range map[string][32]byte{
		"key_removed": digest(k.es.JWK(t)),
		"key_added":   digest(k.es.JWK(t), k.rs.JWK(t), k.ed.JWK(t)),
		"kid_renamed": digest(renamed, k.rs.JWK(t)),
	} {
		if d == base {
			t.Errorf("%s: digest unchanged", name)
		}
	}
}

package jwksauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/ensure-user/ensure-user/internal/rawcheck"
	"github.com/ensure-user/ensure-user/test/testenv"
)

// The targets: a cold Verify of an ES256 token costs at most 1.3x the
// raw crypto/ecdsa verification of the same token (BenchmarkVerifyCold/ES256
// over BenchmarkRawSignature/ES256), and a cached one at most 2 us.

func benchKeys(b *testing.B) map[string]*testenv.JWKSKey {
	k := testKeys(b)
	return map[string]*testenv.JWKSKey{"RS256": k.rs, "ES256": k.es, "EdDSA": k.ed}
}

// benchRig loads a verifier from a key set file publishing every bench key.
func benchRig(b *testing.B) *rig {
	k := testKeys(b)
	cfg := authConfig(testenv.NewJWKSFile(b, k.rs, k.es, k.ed).URL)
	return loadedRig(b, cfg)
}

func BenchmarkVerifyCold(b *testing.B) {
	r := benchRig(b)
	r.v.cache = nil // every Verify takes the full path
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		tok := benchKeys(b)[alg].MintToken(b, r.claims())
		b.Run(alg, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	r := benchRig(b)
	tok := testKeys(b).es.MintToken(b, r.claims())
	ctx := context.Background()
	if _, err := r.v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.Run("ES256", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.v.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// splitSignature returns a compact JWS's signing input and its decoded
// signature, for the raw signature checks.
func splitSignature(tb testing.TB, tok string) (input, sig []byte) {
	tb.Helper()
	dot := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[dot+1:])
	if err != nil {
		tb.Fatal(err)
	}
	return []byte(tok[:dot]), sig
}

// BenchmarkRawSignature is the floor: hash the signing input and verify the
// already decoded signature with the standard library alone.
func BenchmarkRawSignature(b *testing.B) {
	r := benchRig(b)
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		key := benchKeys(b)[alg]
		tok := key.MintToken(b, r.claims())
		input, sig := splitSignature(b, tok)
		b.Run(alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !rawVerify(key, input, sig) {
					b.Fatal("signature does not verify")
				}
			}
		})
	}
}

func rawVerify(k *testenv.JWKSKey, input, sig []byte) bool {
	switch pub := k.Public().(type) {
	case *rsa.PublicKey:
		h := sha256.Sum256(input)
		return rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig) == nil
	case *ecdsa.PublicKey:
		return rawcheck.Signature(pub, input, sig)
	case ed25519.PublicKey:
		return ed25519.Verify(pub, input, sig)
	}
	return false
}

func BenchmarkPrecheck(b *testing.B) {
	r := benchRig(b)
	tok := testKeys(b).es.MintToken(b, r.claims())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := precheck(tok); err != nil {
			b.Fatal(err)
		}
	}
}

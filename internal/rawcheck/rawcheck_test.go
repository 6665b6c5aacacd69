package rawcheck_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"testing"

	"github.com/ensure-user/ensure-user/internal/rawcheck"
)

func TestToken(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	input := b64([]byte(`{"alg":"ES256"}`)) + "." + b64([]byte(`{"sub":"u1"}`))
	h := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	tok := input + "." + b64(sig)

	if !rawcheck.Token(&key.PublicKey, tok) {
		t.Fatal("a token signed by the key does not verify")
	}
	for name, c := range map[string]struct {
		pub *ecdsa.PublicKey
		tok string
	}{
		"another key":          {&other.PublicKey, tok},
		"claims changed":       {&key.PublicKey, b64([]byte(`{"alg":"ES256"}`)) + "." + b64([]byte(`{"sub":"u2"}`)) + "." + b64(sig)},
		"signature too short":  {&key.PublicKey, input + "." + b64(sig[:63])},
		"signature not base64": {&key.PublicKey, input + ".!!"},
		"no dot":               {&key.PublicKey, "abc"},
	} {
		if rawcheck.Token(c.pub, c.tok) {
			t.Errorf("%s: verified", name)
		}
	}
}

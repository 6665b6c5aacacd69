package jwksauth

import (
	"context"
	"errors"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/test/testenv"
)

// FuzzVerify feeds arbitrary strings to Verify (precheck, header decode, key
// selection, claims). It must never panic, must answer with one of the port's
// errors, and must never accept a token that jwx itself does not find
// correctly signed by the trusted ES256 key or the HS256 secret. The seed
// corpus is in testdata/fuzz/FuzzVerify; two valid tokens are added here
// because their keys are generated at run time.
func FuzzVerify(f *testing.F) {
	k := testKeys(f)
	cfg := authConfig(testenv.NewJWKSFile(f, k.es).URL)
	cfg.HS256Secret = secret
	r := loadedRig(f, cfg)
	f.Add(k.es.MintToken(f, r.claims()))
	f.Add(testenv.MintHS256Token(f, []byte(secret), r.claims()))
	pub := k.es.Public()

	f.Fuzz(func(t *testing.T, token string) {
		_, err := r.v.Verify(context.Background(), token)
		if err != nil {
			if !errors.Is(err, domain.ErrInvalidToken) && !errors.Is(err, domain.ErrInvalidPayload) {
				t.Fatalf("error outside the port's contract: %v", err)
			}
			return
		}
		_, esErr := jws.Verify([]byte(token), jws.WithKey(jwa.ES256, pub))
		_, hsErr := jws.Verify([]byte(token), jws.WithKey(jwa.HS256, []byte(secret)))
		if esErr != nil && hsErr != nil {
			t.Fatalf("accepted a token jwx does not verify: %q", token)
		}
	})
}

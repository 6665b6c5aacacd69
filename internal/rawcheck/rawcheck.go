// Package rawcheck is the raw ES256 signature check that the performance
// figures are measured against: SHA-256 of the signing input and
// crypto/ecdsa.Verify, nothing else. The load test's floor and calibration
// and the benchmarks all use this one definition, so that their ratios
// compare like with like.
package rawcheck

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"strings"
)

// Signature reports whether sig, r and s of 32 bytes each as JWS writes
// them, is pub's ES256 signature of input.
func Signature(pub *ecdsa.PublicKey, input, sig []byte) bool {
	if len(sig) != 64 {
		return false
	}
	h := sha256.Sum256(input)
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}

// Token reports whether the compact JWS tok carries pub's ES256 signature of
// its signing input. It reads nothing of the header or the claims.
func Token(pub *ecdsa.PublicKey, tok string) bool {
	dot := strings.LastIndexByte(tok, '.')
	if dot < 0 {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(tok[dot+1:])
	if err != nil {
		return false
	}
	return Signature(pub, []byte(tok[:dot]), sig)
}

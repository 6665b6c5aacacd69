package jwksauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/domain"
)

// minRSABits is the smallest RSA modulus accepted in a key set (RFC 7518 3.3).
const minRSABits = 2048

// rsaAlgs are the algorithms an RSA key may verify; curveAlgs the one
// algorithm each EC or OKP curve implies.
var (
	rsaAlgs   = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	curveAlgs = map[jwa.EllipticCurveAlgorithm]string{
		jwa.P256:    "ES256",
		jwa.P384:    "ES384",
		jwa.P521:    "ES512",
		jwa.Ed25519: "EdDSA",
	}
)

// isAsymmetric reports whether alg is one a key set may provide a key for.
func isAsymmetric(alg string) bool {
	if slices.Contains(rsaAlgs, alg) {
		return true
	}
	for _, a := range curveAlgs {
		if a == alg {
			return true
		}
	}
	return false
}

// Key selection errors. errUnknownKid alone may trigger a refresh.
var (
	errUnknownKid  = fmt.Errorf("%w: unknown key id", domain.ErrInvalidToken)
	errKeyAlg      = fmt.Errorf("%w: the key named by kid does not accept this algorithm", domain.ErrInvalidToken)
	errNoKeyForAlg = fmt.Errorf("%w: no key for this algorithm", domain.ErrInvalidToken)
	errAmbiguous   = fmt.Errorf("%w: token has no kid and several keys fit its algorithm", domain.ErrInvalidToken)
)

// key is one public key of a set, bound to the one algorithm it verifies.
// An RSA key without alg yields one key per allowed RS*/PS* algorithm.
type key struct {
	kid      string
	alg      string
	pub      any // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	verifier jws.Verifier
}

type kidAlg struct{ kid, alg string }

// keySet is an immutable snapshot of the usable keys of one JWKS, indexed at
// refresh time so that Verify does one map lookup.
type keySet struct {
	byKid  map[kidAlg]*key
	kids   map[string]bool
	byAlg  map[string][]*key // every key, for tokens without kid
	size   int               // usable JWKs
	digest [32]byte          // what the set contains, to recognise an unchanged fetch
}

// lookup selects the key for a token's kid and alg. A token without kid is
// accepted only when exactly one key fits its algorithm.
func (s *keySet) lookup(kid, alg string) (*key, error) {
	if kid != "" {
		if k := s.byKid[kidAlg{kid, alg}]; k != nil {
			return k, nil
		}
		if s.kids[kid] {
			return nil, errKeyAlg
		}
		return nil, errUnknownKid
	}
	switch ks := s.byAlg[alg]; len(ks) {
	case 1:
		return ks[0], nil
	case 0:
		return nil, errNoKeyForAlg
	default:
		return nil, errAmbiguous
	}
}

// keyPolicy decides which keys of a set are usable, and for what.
type keyPolicy struct {
	allowed []string // cfg.Algorithms; empty: no allowlist
	log     *zap.Logger
}

func (p keyPolicy) allows(alg string) bool {
	return len(p.allowed) == 0 || slices.Contains(p.allowed, alg)
}

var errNoUsableKeys = errors.New("no usable signing keys in the set")

// parseKeySet builds a snapshot from a JWKS document. Keys that cannot be
// used (oct, use other than sig, unknown curve, weak RSA, algorithm not
// allowed, ...) are dropped with a log line; a set left empty is an error.
func (p keyPolicy) parseKeySet(body []byte) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("parse jwks: %w", err)
	}
	s := &keySet{byKid: map[kidAlg]*key{}, kids: map[string]bool{}, byAlg: map[string][]*key{}}
	h := sha256.New()
	for i, raw := range doc.Keys {
		jk, err := jwk.ParseKey(raw)
		if err != nil {
			p.log.Warn("jwks: skipping unparsable key", zap.Int("index", i), zap.Error(err))
			continue
		}
		keys, err := p.usable(jk)
		if err != nil {
			p.log.Warn("jwks: skipping key", zap.Int("index", i), zap.String("kid", clip(jk.KeyID())), zap.Error(err))
			continue
		}
		thumb, err := jk.Thumbprint(crypto.SHA256)
		if err != nil {
			p.log.Warn("jwks: skipping key", zap.Int("index", i), zap.Error(err))
			continue
		}
		added := false
		for _, k := range keys {
			if k.kid != "" {
				if _, dup := s.byKid[kidAlg{k.kid, k.alg}]; dup {
					p.log.Warn("jwks: skipping duplicate kid", zap.String("kid", clip(k.kid)), zap.String("alg", k.alg))
					continue
				}
				s.byKid[kidAlg{k.kid, k.alg}] = k
				s.kids[k.kid] = true
			}
			s.byAlg[k.alg] = append(s.byAlg[k.alg], k)
			fmt.Fprintf(h, "%q %q %x\n", k.kid, k.alg, thumb)
			added = true
		}
		if added {
			s.size++
		}
	}
	if s.size == 0 {
		return nil, errNoUsableKeys
	}
	h.Sum(s.digest[:0])
	return s, nil
}

// usable returns the keys (one per algorithm) a JWK provides, or why none.
func (p keyPolicy) usable(jk jwk.Key) ([]*key, error) {
	if use := jk.KeyUsage(); use != "" && use != string(jwk.ForSignature) {
		return nil, fmt.Errorf("use is %q, not sig", clip(use))
	}
	if ops := jk.KeyOps(); len(ops) > 0 && !slices.Contains(ops, jwk.KeyOpVerify) {
		return nil, errors.New("key_ops lacks verify")
	}
	pk, err := jk.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	var raw any
	if err := pk.Raw(&raw); err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	var implied []string // the algorithms the key type allows
	switch pub := raw.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits, under %d", pub.N.BitLen(), minRSABits)
		}
		implied = rsaAlgs
	case *ecdsa.PublicKey:
		if _, err := pub.ECDH(); err != nil { // checks the point is on the curve
			return nil, fmt.Errorf("EC key: %w", err)
		}
		a, ok := curveAlgs[jwa.EllipticCurveAlgorithm(pub.Curve.Params().Name)]
		if !ok {
			return nil, errors.New("unsupported EC curve")
		}
		implied = []string{a}
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			return nil, errors.New("bad Ed25519 key size")
		}
		implied = []string{"EdDSA"}
	default:
		return nil, fmt.Errorf("unsupported key type %s", jk.KeyType())
	}

	var algs []string
	switch a := jk.Algorithm().String(); {
	case a != "":
		if !slices.Contains(implied, a) {
			return nil, fmt.Errorf("alg %q does not fit the key", clip(a))
		}
		algs = []string{a}
	case len(implied) > 1: // RSA without alg: only what the operator allowed
		for _, a := range implied {
			if slices.Contains(p.allowed, a) {
				algs = append(algs, a)
			}
		}
		if len(algs) == 0 {
			return nil, errors.New("RSA key without alg, and JWT_ALGORITHMS names no RS*/PS* algorithm")
		}
	default:
		algs = implied
	}

	var out []*key
	for _, a := range algs {
		if !p.allows(a) {
			continue
		}
		ver, err := jws.NewVerifier(jwa.SignatureAlgorithm(a))
		if err != nil {
			return nil, fmt.Errorf("verifier for %s: %w", a, err)
		}
		out = append(out, &key{kid: jk.KeyID(), alg: a, pub: raw, verifier: ver})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("algorithm %v not in JWT_ALGORITHMS", algs)
	}
	return out, nil
}

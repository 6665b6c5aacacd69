// Package jwksauth verifies bearer tokens (compact JWS) against the identity
// provider's key set (JWKS) and, during the migration, the legacy HS256 secret.
// It implements ports.TokenVerifier with jwx v2 for keys and signatures.
//
// The key set is fetched from an https://, http:// or file:// URL by one
// background goroutine and refreshed periodically; a token naming an unknown
// kid may trigger one rate-limited, shared refresh. Keys come only from that
// set (or the HS256 secret): jku, x5u, x5c and jwk headers are never used.
//
// Verification takes a cheap path with the full semantics: a precheck that
// refuses oversized or malformed tokens before any decoding, a small header
// decode, a map lookup of the key chosen at refresh time, one signature check
// by the jwx verifier of that key's algorithm, and one decode of the claims,
// validated against the Clock port. Verified tokens are cached, keyed by
// their SHA-256, until their exp; the cache never changes an answer.
package jwksauth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"unsafe"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/setting"
	"github.com/ensure-user/ensure-user/ports"
)

// Verifier checks tokens against the JWKS and/or the HS256 secret. It is safe
// for concurrent use.
type Verifier struct {
	rules  claimRules
	clock  ports.Clock
	m      *metrics
	keys   *refresher   // nil without JWKS_URL
	jwks   []string     // algorithms a JWKS key may be used with
	hmac   jws.Verifier // nil without a usable HS256 secret
	secret []byte
	cache  *tokenCache // nil: no caching
	heads  *headerCache
	tracer trace.Tracer // nil: no spans
}

// Option tunes a Verifier.
type Option func(*Verifier)

// WithTracer makes Verify record a span per verification (algorithm, key
// id, whether the token cache answered; never the token or its claims).
func WithTracer(t trace.Tracer) Option { return func(v *Verifier) { v.tracer = t } }

var _ ports.TokenVerifier = (*Verifier)(nil)

// New validates cfg and returns a verifier. It does not wait for the identity
// provider: the key set is fetched in the background, at once and then with
// backoff until a fetch succeeds; until then Ready reports why and Verify
// answers domain.ErrVerifierUnavailable for JWKS tokens. The cleanup function
// stops the background goroutine and waits for it. Metrics are registered on
// reg; log may be nil.
func New(cfg Config, log *zap.Logger, clock ports.Clock, reg prometheus.Registerer, opts ...Option) (*Verifier, func(), error) {
	if err := cfg.Validate().Err(); err != nil {
		return nil, nil, fmt.Errorf("jwksauth: %w", err)
	}
	if clock == nil {
		return nil, nil, errors.New("jwksauth: nil clock")
	}
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("jwksauth")
	m, err := newMetrics(reg)
	if err != nil {
		return nil, nil, fmt.Errorf("jwksauth: %w", err)
	}
	v := &Verifier{
		rules: claimRules{
			issuer:               checked(cfg.Issuer),
			audience:             checked(cfg.Audience),
			leeway:               int64(cfg.Leeway),
			requireExp:           cfg.RequireExp,
			userIDClaims:         slices.Clone(cfg.UserIDClaims),
			emailClaim:           cfg.EmailClaim,
			requireVerifiedEmail: cfg.RequireVerifiedEmail,
		},
		clock: clock,
		m:     m,
		cache: newTokenCache(cacheSize),
		heads: newHeaderCache(),
	}
	for _, o := range opts {
		o(v)
	}
	for _, a := range append(slices.Clone(rsaAlgs), "ES256", "ES384", "ES512", "EdDSA") {
		if len(cfg.Algorithms) == 0 || slices.Contains(cfg.Algorithms, a) {
			v.jwks = append(v.jwks, a)
		}
	}
	if cfg.HS256Secret != "" {
		if len(cfg.Algorithms) > 0 && !slices.Contains(cfg.Algorithms, "HS256") {
			log.Warn("JWT_HS256_SECRET is set but JWT_ALGORITHMS does not allow HS256: HS256 tokens are refused")
		} else {
			v.hmac, _ = jws.NewVerifier(jwa.HS256) // registered by jws itself
			v.secret = []byte(cfg.HS256Secret.Reveal())
		}
	}
	if cfg.JWKSURL == "" {
		return v, func() {}, nil
	}

	f, err := newFetcher(cfg.JWKSURL, cfg.CAFile, cfg.Timeout)
	if err != nil {
		return nil, nil, fmt.Errorf("jwksauth: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	v.keys = &refresher{
		fetch:      f.fetch,
		parse:      keyPolicy{allowed: cfg.Algorithms, log: log}.parseKeySet,
		onChange:   v.cache.purge,
		clock:      clock,
		log:        log.With(zap.String("url", setting.RedactedURL(cfg.JWKSURL))),
		m:          m,
		refresh:    cfg.Refresh,
		minRefresh: cfg.MinRefresh,
		timeout:    cfg.Timeout,
		kick:       make(chan struct{}, 1),
		quit:       ctx.Done(),
		done:       make(chan struct{}),
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		v.keys.run(ctx)
	}()
	var once sync.Once
	return v, func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			f.close()
		})
	}, nil
}

// checked maps the "*" wildcard to "", which means not checked. (An unset
// issuer or audience is possible only in HS256-only mode: not checked either.)
func checked(want string) string {
	if want == WildcardDisable {
		return ""
	}
	return want
}

// Ready reports nil once a key set is loaded, or in HS256-only mode;
// otherwise an error saying why not, for a readiness probe.
func (v *Verifier) Ready() error {
	if v.keys == nil {
		return nil
	}
	return v.keys.ready()
}

// Verify checks token and returns the identity its claims carry, on the
// caller's goroutine: handing the signature check to another goroutine costs
// two scheduler hand-offs per request, which the load test measured. See
// ports.TokenVerifier for the errors. It never logs or returns the token.
func (v *Verifier) Verify(ctx context.Context, token string) (domain.Identity, error) {
	if v.tracer == nil {
		id, _, err := v.verify(ctx, token)
		return id, err
	}
	ctx, span := v.tracer.Start(ctx, "verify token", trace.WithSpanKind(trace.SpanKindInternal))
	id, cachedHit, err := v.verify(ctx, token)
	// The header's algorithm and key id name the key, not the holder: safe
	// to record. The token and its claims never go into a span.
	if p, perr := precheck(token); perr == nil {
		if h, herr := v.heads.decode(p.header); herr == nil {
			span.SetAttributes(attribute.String("jwt.alg", h.alg), attribute.String("jwt.kid", h.kid))
		}
	}
	span.SetAttributes(attribute.Bool("ensure_user.token_cache_hit", cachedHit))
	if err != nil {
		span.SetAttributes(attribute.String("ensure_user.verify_error", domain.OutcomeOf(err).String()))
		if errors.Is(err, domain.ErrVerifierUnavailable) { // ours, not the token's
			span.SetStatus(codes.Error, "no signing key loaded")
		}
	}
	span.End()
	return id, err
}

// verify is Verify without the span; it reports whether the answer came
// from the token cache.
func (v *Verifier) verify(ctx context.Context, token string) (domain.Identity, bool, error) {
	p, err := precheck(token)
	if err != nil {
		return domain.Identity{}, false, err
	}
	var current *keySet
	if v.keys != nil {
		current = v.keys.current()
	}
	now := nowNanos(v.clock.Now())
	var sum [32]byte
	if v.cache != nil {
		sum = sha256.Sum256(bytesOf(token))
		if id, ok := v.cache.get(&sum, current, now); ok {
			v.m.cacheHit.Inc()
			return id, true, nil
		}
		v.m.cacheMiss.Inc()
	}
	k, used, err := v.resolveKey(ctx, p, current)
	if err != nil {
		return domain.Identity{}, false, err
	}
	if k.verifier.Verify(bytesOf(p.signingInput), k.sig, k.pub) != nil {
		return domain.Identity{}, false, errBadSignature
	}
	payload, err := decodeSegment("payload", p.payload)
	if err != nil {
		return domain.Identity{}, false, err
	}
	id, w, err := v.rules.check(payload, now)
	if err != nil {
		return domain.Identity{}, false, err
	}
	if v.cache != nil {
		v.cache.put(&sum, cached{id: id, set: used, from: w.from, until: w.until})
	}
	return id, false, nil
}

// bytesOf views s as bytes without copying it, for functions that only read
// their input (the hash and the signature check): a token is some hundred
// bytes, and a conversion copied it twice per request. The bytes must never
// be written.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

var (
	errHS256Refused = fmt.Errorf("%w: HS256 tokens are not accepted", domain.ErrInvalidToken)
	errAlgRefused   = fmt.Errorf("%w: algorithm not accepted", domain.ErrInvalidToken)
	errBadSignature = fmt.Errorf("%w: signature does not verify", domain.ErrInvalidToken)
	errNoKeySet     = fmt.Errorf("%w: no key set loaded yet", domain.ErrVerifierUnavailable)
)

// sigKey is what checks a token's signature: the decoded signature, a jws
// verifier and its key.
type sigKey struct {
	sig      []byte
	verifier jws.Verifier
	pub      any
}

// resolveKey decodes the header and signature of p and picks the key the
// signature must verify with: HS256 only with the secret, every other algorithm only with a
// key of the set. It returns the key set used (nil for HS256). An unknown
// kid may wait for a key set refresh, bounded by ctx.
func (v *Verifier) resolveKey(ctx context.Context, p parts, set *keySet) (sigKey, *keySet, error) {
	h, err := v.heads.decode(p.header)
	if err != nil {
		return sigKey{}, nil, err
	}
	sig, err := decodeSegment("signature", p.signature)
	if err != nil {
		return sigKey{}, nil, err
	}
	if h.alg == "HS256" {
		if v.hmac == nil {
			return sigKey{}, nil, errHS256Refused
		}
		return sigKey{sig, v.hmac, v.secret}, nil, nil
	}
	if v.keys == nil || !slices.Contains(v.jwks, h.alg) {
		return sigKey{}, nil, errAlgRefused
	}
	if set == nil {
		return sigKey{}, nil, errNoKeySet
	}
	k, err := set.lookup(h.kid, h.alg)
	if errors.Is(err, errUnknownKid) {
		// Ask for a refresh (rate-limited, shared); the set may also have
		// changed since this request read it, so look again either way.
		v.keys.kidRefresh(ctx)
		if cur := v.keys.current(); cur != set {
			set = cur
			k, err = set.lookup(h.kid, h.alg)
		}
	}
	if err != nil {
		return sigKey{}, nil, err
	}
	return sigKey{sig, k.verifier, k.pub}, set, nil
}

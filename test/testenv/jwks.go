package testenv

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// JWKSKey is a signing key pair for tests, with the kid and algorithm it is
// published under.
type JWKSKey struct {
	Kid     string
	Alg     string // RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA
	Private crypto.Signer
}

// NewJWKSKey generates a key for alg: RSA 2048 for RS*/PS*, the matching NIST
// curve for ES*, Ed25519 for EdDSA.
func NewJWKSKey(t testing.TB, alg, kid string) *JWKSKey {
	t.Helper()
	var (
		priv crypto.Signer
		err  error
	)
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ES512":
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("testenv: no key type for algorithm %q", alg)
	}
	if err != nil {
		t.Fatalf("testenv: generate %s key: %v", alg, err)
	}
	return &JWKSKey{Kid: kid, Alg: alg, Private: priv}
}

// Public returns the public half of the key.
func (k *JWKSKey) Public() crypto.PublicKey { return k.Private.Public() }

// PublicPEM returns the public key as PEM (PKIX), the material of the classic
// key-confusion attack.
func (k *JWKSKey) PublicPEM(t testing.TB) []byte {
	t.Helper()
	pk, err := jwk.FromRaw(k.Public())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	b, err := jwk.EncodePEM(pk)
	if err != nil {
		t.Fatalf("testenv: encode PEM: %v", err)
	}
	return b
}

// JWK returns the public key as a JWK object with kid, alg and use "sig".
// Tests may edit the map (drop alg, change use, ...) before publishing it.
func (k *JWKSKey) JWK(t testing.TB) map[string]any {
	t.Helper()
	pk, err := jwk.FromRaw(k.Public())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	b, err := json.Marshal(pk)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if k.Kid != "" {
		m["kid"] = k.Kid
	}
	m["alg"] = k.Alg
	m["use"] = "sig"
	return m
}

// JWKSDocument returns {"keys": [...]} holding the given JWK objects.
func JWKSDocument(t testing.TB, keys ...map[string]any) []byte {
	t.Helper()
	if keys == nil {
		keys = []map[string]any{}
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return b
}

// JWKSBody returns the key set document publishing keys.
func JWKSBody(t testing.TB, keys ...*JWKSKey) []byte {
	t.Helper()
	objs := make([]map[string]any, 0, len(keys))
	for _, k := range keys {
		objs = append(objs, k.JWK(t))
	}
	return JWKSDocument(t, objs...)
}

// TokenOption changes how a token is minted.
type TokenOption func(*tokenOptions)

type tokenOptions struct {
	alg    string
	kid    *string
	header map[string]any
	sig    []byte
}

// TokenAlg signs with alg (and says so in the header) instead of the key's
// own algorithm; the key must be able to produce it.
func TokenAlg(alg string) TokenOption { return func(o *tokenOptions) { o.alg = alg } }

// TokenKid puts kid in the header instead of the key's kid.
func TokenKid(kid string) TokenOption { return func(o *tokenOptions) { o.kid = &kid } }

// TokenNoKid leaves kid out of the header.
func TokenNoKid() TokenOption { return TokenKid("") }

// TokenHeader adds (or, with a nil value, removes) a header parameter; it may
// override alg after signing so that the header lies about the algorithm.
func TokenHeader(name string, value any) TokenOption {
	return func(o *tokenOptions) {
		if o.header == nil {
			o.header = map[string]any{}
		}
		o.header[name] = value
	}
}

// TokenSignature replaces the signature with sig (which may be empty).
func TokenSignature(sig []byte) TokenOption { return func(o *tokenOptions) { o.sig = sig } }

// MintToken returns a compact JWS of claims signed by the key. claims is
// marshalled as JSON, unless it is a json.RawMessage, used as is (to mint
// payloads that are arrays or not JSON at all).
func (k *JWKSKey) MintToken(t testing.TB, claims any, opts ...TokenOption) string {
	t.Helper()
	o := tokenOptions{alg: k.Alg, kid: &k.Kid}
	for _, opt := range opts {
		opt(&o)
	}
	return mintToken(t, o, claims, func(input []byte) []byte { return k.Sign(t, o.alg, input) })
}

// MintHS256Token returns a compact JWS of claims signed with HMAC-SHA256 under
// secret, the legacy backend's format. With TokenKid it also carries a kid.
func MintHS256Token(t testing.TB, secret []byte, claims any, opts ...TokenOption) string {
	t.Helper()
	none := ""
	o := tokenOptions{alg: "HS256", kid: &none}
	for _, opt := range opts {
		opt(&o)
	}
	return mintToken(t, o, claims, func(input []byte) []byte { return SignTokenHS256(secret, input) })
}

func mintToken(t testing.TB, o tokenOptions, claims any, sign func([]byte) []byte) string {
	t.Helper()
	payload, ok := claims.(json.RawMessage)
	if !ok {
		var err error
		if payload, err = json.Marshal(claims); err != nil {
			t.Fatalf("testenv: claims: %v", err)
		}
	}
	h := map[string]any{"alg": o.alg, "typ": "JWT"}
	if *o.kid != "" {
		h["kid"] = *o.kid
	}
	for name, v := range o.header {
		if v == nil {
			delete(h, name)
		} else {
			h[name] = v
		}
	}
	header, err := json.Marshal(h)
	if err != nil {
		t.Fatalf("testenv: header: %v", err)
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
	sig := o.sig
	if sig == nil {
		sig = sign([]byte(input))
	}
	return input + "." + enc.EncodeToString(sig)
}

// EncodeToken joins raw header, payload and signature bytes into a compact
// JWS, for tokens no signer would produce.
func EncodeToken(header, payload, signature []byte) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString(header) + "." + enc.EncodeToString(payload) + "." + enc.EncodeToString(signature)
}

// Sign signs input with the key under alg, through jwx's signer.
func (k *JWKSKey) Sign(t testing.TB, alg string, input []byte) []byte {
	t.Helper()
	s, err := jws.NewSigner(jwa.SignatureAlgorithm(alg))
	if err != nil {
		t.Fatalf("testenv: signer %s: %v", alg, err)
	}
	sig, err := s.Sign(input, k.Private)
	if err != nil {
		t.Fatalf("testenv: sign %s: %v", alg, err)
	}
	return sig
}

// SignTokenHS256 returns HMAC-SHA256(key, input).
func SignTokenHS256(key, input []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(input)
	return m.Sum(nil)
}

// TokenClaims returns the claims of a token valid at now for 1 hour, with
// issuer, audience, a sub and an email; tests change what they need.
func TokenClaims(now time.Time, issuer, audience string) map[string]any {
	return map[string]any{
		"iss":   issuer,
		"aud":   audience,
		"sub":   "user-1",
		"email": "user-1@example.com",
		"iat":   now.Unix(),
		"exp":   now.Add(time.Hour).Unix(),
	}
}

// JWKSServer serves a key set over real HTTP (httptest, loopback) and can be
// made to rotate it, fail, serve junk, or hold requests. It counts requests.
type JWKSServer struct {
	// URL is the key set URL.
	URL string
	// CAFile is, for a TLS server, a PEM file of the certificate to trust
	// (JWKS_CA_FILE); empty otherwise.
	CAFile string

	srv  *httptest.Server
	quit chan struct{}

	mu       sync.Mutex
	status   int
	ctype    string
	body     []byte
	location string
	gate     chan struct{}
	requests int
	arrived  chan struct{} // closed and replaced at each request
}

// NewJWKSServer starts a plain HTTP key set server publishing keys. It stops
// when the test ends.
func NewJWKSServer(t testing.TB, keys ...*JWKSKey) *JWKSServer {
	t.Helper()
	return startJWKSServer(t, false, keys)
}

// NewJWKSTLSServer starts an HTTPS key set server under a certificate the
// system does not trust; CAFile names a PEM file that trusts it.
func NewJWKSTLSServer(t testing.TB, keys ...*JWKSKey) *JWKSServer {
	t.Helper()
	return startJWKSServer(t, true, keys)
}

func startJWKSServer(t testing.TB, tls bool, keys []*JWKSKey) *JWKSServer {
	t.Helper()
	s := &JWKSServer{quit: make(chan struct{}), arrived: make(chan struct{})}
	s.SetKeys(t, keys...)
	if tls {
		s.srv = httptest.NewTLSServer(s)
		s.CAFile = filepath.Join(t.TempDir(), "jwks-ca.pem")
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
		if err := os.WriteFile(s.CAFile, pemBytes, 0o600); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	} else {
		s.srv = httptest.NewServer(s)
	}
	s.URL = s.srv.URL + "/.well-known/jwks.json"
	t.Cleanup(func() {
		close(s.quit)
		s.srv.Close()
	})
	return s
}

// ServeHTTP answers with the current response, after the gate opens if
// Hold closed it.
func (s *JWKSServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	close(s.arrived)
	s.arrived = make(chan struct{})
	gate, status, ctype, body, location := s.gate, s.status, s.ctype, s.body, s.location
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		case <-s.quit:
			return
		}
	}
	if location != "" {
		http.Redirect(w, r, location, http.StatusFound)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Serve makes the server answer status with body.
func (s *JWKSServer) Serve(status int, contentType string, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.ctype, s.body, s.location = status, contentType, body, ""
}

// SetKeys publishes exactly keys: the rotation of a real IdP.
func (s *JWKSServer) SetKeys(t testing.TB, keys ...*JWKSKey) {
	t.Helper()
	s.Serve(http.StatusOK, "application/json", JWKSBody(t, keys...))
}

// SetJWKS publishes a key set document built by JWKSDocument.
func (s *JWKSServer) SetJWKS(doc []byte) { s.Serve(http.StatusOK, "application/json", doc) }

// Fail makes the server answer status with an empty body.
func (s *JWKSServer) Fail(status int) { s.Serve(status, "text/plain", nil) }

// ServeGarbage makes the server answer 200 with bytes that are not JSON.
func (s *JWKSServer) ServeGarbage() {
	s.Serve(http.StatusOK, "application/json", []byte("\x00\xffnot json{{{"))
}

// ServeHTML makes the server answer 200 with an HTML page, as a captive
// portal or a misrouted proxy would.
func (s *JWKSServer) ServeHTML() {
	s.Serve(http.StatusOK, "text/html", []byte("<!doctype html><html><body>Sign in</body></html>"))
}

// ServeEmptySet makes the server answer {"keys":[]}.
func (s *JWKSServer) ServeEmptySet() {
	s.Serve(http.StatusOK, "application/json", []byte(`{"keys":[]}`))
}

// ServeHuge makes the server answer 200 with a valid key set document
// publishing keys, padded with leading spaces to n bytes: only its size is
// wrong.
func (s *JWKSServer) ServeHuge(t testing.TB, n int, keys ...*JWKSKey) {
	t.Helper()
	s.Serve(http.StatusOK, "application/json", PadJWKS(t, JWKSBody(t, keys...), n))
}

// PadJWKS pads a key set document with leading whitespace to n bytes.
func PadJWKS(t testing.TB, doc []byte, n int) []byte {
	t.Helper()
	if len(doc) > n {
		t.Fatalf("testenv: key set document of %d bytes, over %d", len(doc), n)
	}
	return append(bytes.Repeat([]byte{' '}, n-len(doc)), doc...)
}

// ServeRedirect makes the server answer 302 to location.
func (s *JWKSServer) ServeRedirect(location string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.location = location
}

// Hold makes requests wait until release is called (or the test ends), so
// that a test can pile requests up behind one fetch.
func (s *JWKSServer) Hold() (release func()) {
	gate := make(chan struct{})
	s.mu.Lock()
	s.gate = gate
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.gate = nil
			s.mu.Unlock()
			close(gate)
		})
	}
}

// Requests returns how many requests the server received.
func (s *JWKSServer) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// AwaitRequests blocks until the server has received n requests in all, or
// ctx ends.
func (s *JWKSServer) AwaitRequests(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		got, arrived := s.requests, s.arrived
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-arrived:
		case <-ctx.Done():
			return fmt.Errorf("jwks server got %d of %d requests: %w", got, n, ctx.Err())
		}
	}
}

// JWKSFile is a key set document on disk, for a file:// JWKS_URL.
type JWKSFile struct {
	// URL is the file:// URL of the document.
	URL  string
	path string
}

// NewJWKSFile writes a key set document publishing keys in a temporary
// directory of the test.
func NewJWKSFile(t testing.TB, keys ...*JWKSKey) *JWKSFile {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	f := &JWKSFile{URL: (&url.URL{Scheme: "file", Path: filepath.ToSlash(path)}).String(), path: path}
	f.SetKeys(t, keys...)
	return f
}

// SetKeys replaces the document atomically with one publishing keys.
func (f *JWKSFile) SetKeys(t testing.TB, keys ...*JWKSKey) {
	t.Helper()
	f.Write(t, JWKSBody(t, keys...))
}

// Write replaces the document atomically with body.
func (f *JWKSFile) Write(t testing.TB, body []byte) {
	t.Helper()
	tmp := f.path + ".tmp"
	if err := os.WriteFile(tmp, body, 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

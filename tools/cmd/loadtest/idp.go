package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/ensure-user/ensure-user/internal/rawcheck"
)

// Issuer and audience of every token the tool mints; the service is started
// with the same JWT_ISSUER and JWT_AUDIENCE.
const (
	issuer   = "https://idp.loadtest.invalid/"
	audience = "ensure-user"
	keyID    = "loadtest-es256"
)

// idp is the load test's identity provider: one ES256 key, published as a
// JWKS over loopback HTTP, and the tokens signed with it.
type idp struct {
	key  *ecdsa.PrivateKey
	url  string // JWKS URL
	srv  *http.Server
	jwks []byte
}

// startIDP generates the key and serves its JWKS on a free loopback port.
func startIDP() (*idp, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ES256 key: %w", err)
	}
	pub, err := key.PublicKey.ECDH()
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	raw := pub.Bytes() // 0x04 || X || Y, 32 bytes each
	b64 := base64.RawURLEncoding
	doc, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": keyID,
		"x": b64.EncodeToString(raw[1:33]), "y": b64.EncodeToString(raw[33:]),
	}}})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the JWKS: %w", err)
	}
	p := &idp{key: key, jwks: doc, url: "http://" + ln.Addr().String() + "/jwks.json"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(p.jwks)
	})
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// publicKey is the key's uncompressed point (0x04 || X || Y) in base64url,
// as cmd/loadtest/floor takes it.
func (p *idp) publicKey() string {
	pub, _ := p.key.PublicKey.ECDH() // the key is P-256, always valid
	return base64.RawURLEncoding.EncodeToString(pub.Bytes())
}

func (p *idp) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
}

// claims are those of a token the service accepts.
type claims struct {
	Iss           string `json:"iss"`
	Aud           string `json:"aud"`
	Sub           string `json:"sub"`
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
	Iat           int64  `json:"iat"`
	Exp           int64  `json:"exp"`
	Jti           string `json:"jti"`
}

var tokenHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","kid":"` + keyID + `","typ":"JWT"}`))

// mint returns a compact ES256 JWS of c.
func (p *idp) mint(c claims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	input := tokenHeader + "." + base64.RawURLEncoding.EncodeToString(payload)
	h := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, p.key, h[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// mintUsers returns n "Bearer <token>" header values, for n distinct users
// named prefix-0 .. prefix-(n-1), valid for ttl. It signs on every core.
func (p *idp) mintUsers(prefix string, n int, ttl time.Duration) ([]string, error) {
	return p.mintMany(n, ttl, func(i int) (string, string) {
		id := fmt.Sprintf("%s-%d", prefix, i)
		return id, id + "@loadtest.example.com"
	})
}

// mintOneUser returns n distinct tokens that all name the same user.
func (p *idp) mintOneUser(id string, n int, ttl time.Duration) ([]string, error) {
	return p.mintMany(n, ttl, func(int) (string, string) { return id, id + "@loadtest.example.com" })
}

func (p *idp) mintMany(n int, ttl time.Duration, user func(i int) (id, email string)) ([]string, error) {
	out := make([]string, n)
	now := time.Now()
	workers := runtime.GOMAXPROCS(0)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				id, email := user(i)
				tok, err := p.mint(claims{Iss: issuer, Aud: audience, Sub: id, Email: email, EmailVerified: true,
					Iat: now.Unix(), Exp: now.Add(ttl).Unix(), Jti: fmt.Sprintf("%d", i)})
				if err != nil {
					mu.Lock()
					first = errors.Join(first, err)
					mu.Unlock()
					return
				}
				out[i] = "Bearer " + tok
			}
		}()
	}
	wg.Wait()
	return out, first
}

// rawVerifyCost measures what the raw ES256 signature check of one of the
// tool's tokens costs: SHA-256 of the signing input and crypto/ecdsa.Verify,
// as adapters/jwksauth's BenchmarkRawSignature does. It returns the CPU time
// per check of the calling thread (user+system, from getrusage
// RUSAGE_THREAD), so that time other processes take is not counted, and the
// wall time per check.
func (p *idp) rawVerifyCost(token string, iters int) (cpu, wall time.Duration, err error) {
	tok := token[len("Bearer "):]
	dot := len(tok) - 1
	for tok[dot] != '.' {
		dot--
	}
	input := []byte(tok[:dot])
	sig, err := base64.RawURLEncoding.DecodeString(tok[dot+1:])
	if err != nil {
		return 0, 0, err
	}
	pub := &p.key.PublicKey
	check := func() bool { return rawcheck.Signature(pub, input, sig) }
	for range 50 { // warm caches and the CPU's clock
		check()
	}
	c0, err := threadCPU()
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	for range iters {
		if !check() {
			return 0, 0, errors.New("raw ES256 check failed")
		}
	}
	w := time.Since(t0)
	c1, err := threadCPU()
	if err != nil {
		return 0, 0, err
	}
	return (c1 - c0) / time.Duration(iters), w / time.Duration(iters), nil
}

// threadCPU is the user+system CPU time of the calling OS thread.
func threadCPU() (time.Duration, error) {
	const rusageThread = 1 // RUSAGE_THREAD (Linux)
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

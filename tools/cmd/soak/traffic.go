package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

const (
	endpoint = "/api/v1/auth/ensure-user"
	issuer   = "https://idp.soak/"
	audience = "ensure-user"
	users    = 5000 // distinct users: most calls are for a user the Engine already knows
)

// idp is the soak's identity provider: one ES256 key, its key set served
// over loopback HTTP.
type idp struct {
	key  jwk.Key
	url  string
	stop func()
}

func startIdP() (*idp, error) {
	raw, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return nil, err
	}
	key, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, err
	}
	if err := key.Set(jwk.KeyIDKey, "soak-1"); err != nil {
		return nil, err
	}
	if err := key.Set(jwk.AlgorithmKey, jwa.ES256); err != nil {
		return nil, err
	}
	pub, err := jwk.PublicKeyOf(key)
	if err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	doc, err := json.Marshal(set)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	})}
	go func() { _ = srv.Serve(ln) }()
	return &idp{key: key, url: "http://" + ln.Addr().String() + "/jwks.json", stop: func() { _ = srv.Close() }}, nil
}

// mint signs a token for sub with audience aud, expiring at exp.
func (p *idp) mint(sub, aud string, exp time.Time) (string, error) {
	now := time.Now()
	tok, err := jwt.NewBuilder().Issuer(issuer).Audience([]string{aud}).Subject(sub).
		IssuedAt(now).Expiration(exp).Claim("email", sub+"@example.com").Claim("email_verified", true).Build()
	if err != nil {
		return "", err
	}
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, p.key))
	return string(b), err
}

// kind is a class of request and the answers it may get.
type kind struct {
	name   string
	weight int
	tokens []string // "" means no Authorization header
	ok     func(status int) bool
}

// kinds builds the traffic mix: mostly valid calls, and each kind of
// caller error. A valid call may meet a Redis restart, so 502 and 503 are
// acceptable for it; an invalid one must always be refused.
func kinds(p *idp, until time.Time) ([]kind, error) {
	mintN := func(n int, prefix, aud string, exp time.Time) ([]string, error) {
		out := make([]string, n)
		for i := range out {
			var err error
			if out[i], err = p.mint(prefix+strconv.Itoa(i), aud, exp); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	valid, err := mintN(users, "soak-user-", audience, until)
	if err != nil {
		return nil, err
	}
	expired, err := mintN(100, "soak-expired-", audience, time.Now().Add(-time.Hour))
	if err != nil {
		return nil, err
	}
	wrongAud, err := mintN(100, "soak-aud-", "another-service", until)
	if err != nil {
		return nil, err
	}
	badSig := make([]string, 100)
	for i := range badSig {
		t := valid[i]
		last := t[len(t)-2]
		if last == 'A' {
			last = 'B'
		} else {
			last = 'A'
		}
		badSig[i] = t[:len(t)-2] + string(last) + t[len(t)-1:]
	}
	garbage := []string{"not-a-jwt", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "....", "Zm9v.YmFy.YmF6"}
	accepted := func(s int) bool { return s == 200 || s == 202 || s == 502 || s == 503 }
	refused := func(s int) bool { return s == 401 }
	return []kind{
		{"valid", 70, valid, accepted},
		{"expired", 8, expired, refused},
		{"wrong-audience", 7, wrongAud, refused},
		{"bad-signature", 5, badSig, refused},
		{"garbage", 5, garbage, refused},
		{"no-token", 5, []string{""}, refused},
	}, nil
}

// counts are the answers so far, by status, and the unexpected ones.
type counts struct {
	total      atomic.Int64
	byStatus   sync.Map // int -> *atomic.Int64
	unexpected atomic.Int64
	mu         sync.Mutex
	examples   []string
}

func (c *counts) add(status int) {
	c.total.Add(1)
	v, _ := c.byStatus.LoadOrStore(status, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (c *counts) status(s int) int64 {
	if v, ok := c.byStatus.Load(s); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

func (c *counts) bad(example string) {
	c.unexpected.Add(1)
	c.mu.Lock()
	if len(c.examples) < 10 {
		c.examples = append(c.examples, example)
	}
	c.mu.Unlock()
}

// traffic sends the mix at rate requests per second from workers
// goroutines until ctx ends. When every worker is busy a tick is skipped, so
// the rate is an upper bound.
func traffic(ctx context.Context, base string, mix []kind, rate, workers int, c *counts) *sync.WaitGroup {
	var wg sync.WaitGroup
	tickets := make(chan struct{})
	wg.Go(func() {
		defer close(tickets)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				select {
				case tickets <- struct{}{}:
				default:
				}
			}
		}
	})
	total := 0
	for _, k := range mix {
		total += k.weight
	}
	for range workers {
		// One connection per worker, kept alive: the service holds exactly
		// workers connections, so that a burst (at a Redis restart) cannot
		// leave extra idle connections - each a goroutine in the service -
		// that would look like a leak.
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
		wg.Go(func() {
			for range tickets {
				n := rand.N(total)
				k := mix[0]
				for _, m := range mix {
					if n < m.weight {
						k = m
						break
					}
					n -= m.weight
				}
				status, err := call(client, base, k.tokens[rand.N(len(k.tokens))])
				c.add(status)
				switch {
				case err != nil:
					c.bad(fmt.Sprintf("%s: %v", k.name, err))
				case !k.ok(status):
					c.bad(fmt.Sprintf("%s: status %d", k.name, status))
				}
			}
		})
	}
	return &wg
}

// call posts to the endpoint with token ("" for none).
func call(client *http.Client, base, token string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, base+endpoint, nil)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

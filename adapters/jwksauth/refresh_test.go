package jwksauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/test/testenv"
)

// TestNewDoesNotBlockOnTheIdP: with the IdP stalled, New returns, Ready says
// no key set yet, Verify answers ErrVerifierUnavailable for a well-formed
// token; once the fetch completes everything works.
func TestNewDoesNotBlockOnTheIdP(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es)
	release := srv.Hold()
	r := newRig(t, authConfig(srv.URL))
	if err := srv.AwaitRequests(ctxFor(t), 1); err != nil {
		t.Fatal(err)
	}
	if err := r.v.Ready(); err == nil || err.Error() != "jwks: no key set loaded yet" {
		t.Fatalf("Ready while the first fetch runs = %v", err)
	}
	tok := k.es.MintToken(t, r.claims())
	if _, err := r.v.Verify(context.Background(), tok); !errors.Is(err, domain.ErrVerifierUnavailable) {
		t.Fatalf("Verify before any key set = %v, want ErrVerifierUnavailable", err)
	}
	release()
	r.awaitFetches(t, 1)
	if err := r.v.Ready(); err != nil {
		t.Fatalf("Ready = %v", err)
	}
	if _, err := r.v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("Verify = %v", err)
	}
}

// TestIdPDownAtStart: the first fetch fails; New still returns; Ready says
// why; a well-formed token gets ErrVerifierUnavailable while junk still gets
// ErrInvalidToken; the refresher retries after 1s, 2s, 4s, ... capped at
// JWKS_MIN_REFRESH, then refreshes every JWKS_REFRESH once a fetch works.
func TestIdPDownAtStart(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t)
	srv.Fail(http.StatusServiceUnavailable)
	cfg := authConfig(srv.URL)
	cfg.HS256Secret = secret
	clk := newRecordingClock()
	r := newRigClock(t, cfg, clk, clk.Clock)
	r.awaitFetches(t, 1)

	err := r.v.Ready()
	if err == nil || !strings.HasPrefix(err.Error(), "jwks: no key set loaded yet: last fetch failed: ") || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Ready = %v", err)
	}
	tok := k.es.MintToken(t, r.claims())
	for name, c := range map[string]struct {
		token string
		want  error
	}{
		"well_formed":  {tok, domain.ErrVerifierUnavailable},
		"unknown_kid":  {testenv.NewJWKSKey(t, "ES256", "x").MintToken(t, r.claims()), domain.ErrVerifierUnavailable},
		"malformed":    {"a.b", domain.ErrInvalidToken},
		"alg_none":     {testenv.EncodeToken([]byte(`{"alg":"none"}`), []byte(`{}`), []byte("x")), domain.ErrInvalidToken},
		"bad_header":   {"e30x.e30.e30", domain.ErrInvalidToken},
		"legacy_hs256": {testenv.MintHS256Token(t, []byte(secret), r.claims()), nil},
	} {
		if _, err := r.v.Verify(context.Background(), c.token); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("%s: Verify = %v, want %v", name, err, c.want)
		}
	}
	if srv.Requests() != 1 {
		t.Fatalf("Verify fetched the key set while none was loaded: %d requests", srv.Requests())
	}

	fetches := 1
	for _, want := range []time.Duration{1, 2, 4, 8, 16, 30, 30, 30} {
		if got := clk.nextWait(t); got != want*time.Second {
			t.Fatalf("retry %d after %v, want %v", fetches, got, want*time.Second)
		}
		r.clock.Advance(want * time.Second)
		fetches++
		r.awaitFetches(t, fetches)
	}
	if got := r.refreshes("failed"); got != float64(fetches) {
		t.Fatalf("failed refreshes = %v, want %d", got, fetches)
	}

	srv.SetKeys(t, k.es)
	if got := clk.nextWait(t); got != 30*time.Second {
		t.Fatalf("retry after %v", got)
	}
	r.clock.Advance(30 * time.Second)
	r.awaitFetches(t, fetches+1)
	if err := r.v.Ready(); err != nil {
		t.Fatalf("Ready after a good fetch = %v", err)
	}
	if _, err := r.v.Verify(context.Background(), k.es.MintToken(t, r.claims())); err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if got := clk.nextWait(t); got != 10*time.Minute {
		t.Fatalf("after a good fetch the next one is in %v, want JWKS_REFRESH", got)
	}
	if r.refreshes("ok") != 1 || r.gauge() != 1 {
		t.Fatalf("ok refreshes = %v, keys = %v", r.refreshes("ok"), r.gauge())
	}
}

// TestBadRefreshKeepsLastGoodSet: whatever a later fetch returns, a failed
// refresh is counted, logged, and the last good key set stays in use.
func TestBadRefreshKeepsLastGoodSet(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	for name, spoil := range map[string]func(t *testing.T, s *testenv.JWKSServer){
		"idp_down":       func(_ *testing.T, s *testenv.JWKSServer) { s.Fail(http.StatusBadGateway) },
		"not_found":      func(_ *testing.T, s *testenv.JWKSServer) { s.Fail(http.StatusNotFound) },
		"no_content":     func(_ *testing.T, s *testenv.JWKSServer) { s.Fail(http.StatusNoContent) },
		"garbage":        func(_ *testing.T, s *testenv.JWKSServer) { s.ServeGarbage() },
		"html":           func(_ *testing.T, s *testenv.JWKSServer) { s.ServeHTML() },
		"empty_set":      func(_ *testing.T, s *testenv.JWKSServer) { s.ServeEmptySet() },
		"keys_null":      func(_ *testing.T, s *testenv.JWKSServer) { s.SetJWKS([]byte(`{"keys":null}`)) },
		"single_jwk":     func(t *testing.T, s *testenv.JWKSServer) { s.SetJWKS(mustJSON(t, k.es.JWK(t))) },
		"json_array":     func(_ *testing.T, s *testenv.JWKSServer) { s.SetJWKS([]byte(`[]`)) },
		"10MiB":          func(t *testing.T, s *testenv.JWKSServer) { s.ServeHuge(t, 10<<20, k.es2) },
		"1MiB_plus_one":  func(t *testing.T, s *testenv.JWKSServer) { s.ServeHuge(t, MaxJWKSBody+1, k.es2) },
		"unusable_keys":  func(t *testing.T, s *testenv.JWKSServer) { s.SetJWKS(testenv.JWKSDocument(t, unusableJWKs(t)...)) },
		"cross_redirect": func(_ *testing.T, s *testenv.JWKSServer) { s.ServeRedirect("ftp://127.0.0.1/jwks.json") },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := testenv.NewJWKSServer(t, k.es, k.rs)
			clk := newRecordingClock()
			r := newRigClock(t, authConfig(srv.URL), clk, clk.Clock)
			r.awaitFetches(t, 1)
			tok := k.es.MintToken(t, r.claims())
			r.v.cache = nil // every Verify below uses the key set

			spoil(t, srv)
			clk.nextWait(t)
			r.clock.Advance(10 * time.Minute)
			r.awaitFetches(t, 2)

			if r.refreshes("ok") != 1 || r.refreshes("failed") != 1 {
				t.Fatalf("refreshes ok=%v failed=%v, want 1 and 1", r.refreshes("ok"), r.refreshes("failed"))
			}
			if r.gauge() != 2 {
				t.Fatalf("jwks_keys = %v, want 2", r.gauge())
			}
			if err := r.v.Ready(); err != nil {
				t.Fatalf("Ready after a failed refresh = %v", err)
			}
			if _, err := r.v.Verify(context.Background(), tok); err != nil {
				t.Fatalf("token of the last good set: %v", err)
			}
			if got := clk.nextWait(t); got != time.Second {
				t.Fatalf("after a failed refresh the next try is in %v, want 1s", got)
			}
		})
	}
}

// unusableJWKs are keys a key set may carry that must never verify a token.
func unusableJWKs(t *testing.T) []map[string]any {
	k := testKeys(t)
	enc := k.es.JWK(t)
	enc["use"] = "enc"
	ops := k.es.JWK(t)
	ops["key_ops"] = []string{"encrypt"}
	mismatch := k.es.JWK(t)
	mismatch["alg"] = "ES384"
	hsOnRSA := k.rs.JWK(t)
	hsOnRSA["alg"] = "HS256"
	noneAlg := k.ed.JWK(t)
	noneAlg["alg"] = "none"
	return []map[string]any{
		{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "alg": "HS256"},
		{"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"},
		{"kty": "XYZ", "kid": "future"},
		enc, ops, mismatch, hsOnRSA, noneAlg,
	}
}

// TestExactly1MiBIsAccepted: the cap is on more than MaxJWKSBody bytes.
func TestExactly1MiBIsAccepted(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t)
	srv.ServeHuge(t, MaxJWKSBody, k.es)
	r := loadedRig(t, authConfig(srv.URL))
	if _, err := r.v.Verify(context.Background(), k.es.MintToken(t, r.claims())); err != nil {
		t.Fatal(err)
	}
}

// TestIdPDownLater: a key set loaded once keeps working while the IdP is
// down, retrying with backoff; Ready stays nil.
func TestIdPDownLater(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es)
	r := loadedRig(t, authConfig(srv.URL))
	srv.Fail(http.StatusInternalServerError)
	for i := 2; i < 6; i++ {
		r.tick(t, 10*time.Minute, i) // more than any backoff
		if err := r.v.Ready(); err != nil {
			t.Fatalf("Ready = %v", err)
		}
		if _, err := r.v.Verify(context.Background(), k.es.MintToken(t, r.claims())); err != nil {
			t.Fatalf("Verify after %d failed refreshes: %v", i-1, err)
		}
	}
	if r.refreshes("failed") != 4 {
		t.Fatalf("failed refreshes = %v", r.refreshes("failed"))
	}
}

// TestRemovedKeyIsRevoked: a valid new set replaces the whole old one; a
// key that left it verifies nothing any more, cached tokens included.
func TestRemovedKeyIsRevoked(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es, k.es2)
	r := loadedRig(t, authConfig(srv.URL))
	stay, leave := k.es.MintToken(t, r.claims()), k.es2.MintToken(t, r.claims())
	for range 2 { // the second round answers from the cache
		for _, tok := range []string{stay, leave} {
			if _, err := r.v.Verify(context.Background(), tok); err != nil {
				t.Fatal(err)
			}
		}
	}
	if r.v.cache.len() != 2 || r.cacheResults("hit") != 2 {
		t.Fatalf("cache: %d entries, %v hits", r.v.cache.len(), r.cacheResults("hit"))
	}

	srv.SetKeys(t, k.es)
	r.tick(t, 10*time.Minute, 2)
	if r.v.cache.len() != 0 {
		t.Fatalf("the refresh that removed a key left %d cache entries", r.v.cache.len())
	}
	if r.gauge() != 1 {
		t.Fatalf("jwks_keys = %v", r.gauge())
	}
	if _, err := r.v.Verify(context.Background(), leave); !errors.Is(err, errUnknownKid) {
		t.Fatalf("token of the removed key: %v, want unknown kid", err)
	}
	if _, err := r.v.Verify(context.Background(), stay); err != nil {
		t.Fatalf("token of the remaining key: %v", err)
	}
}

// TestUnchangedSetKeepsCache: a refresh returning the same keys keeps the
// snapshot, and with it the cache.
func TestUnchangedSetKeepsCache(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es)
	r := loadedRig(t, authConfig(srv.URL))
	tok := k.es.MintToken(t, r.claims())
	if _, err := r.v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	before := r.v.keys.current()
	r.tick(t, 10*time.Minute, 2)
	if r.v.keys.current() != before {
		t.Fatal("an unchanged key set replaced the snapshot")
	}
	if _, err := r.v.Verify(context.Background(), tok); err != nil || r.cacheResults("hit") != 1 {
		t.Fatalf("Verify = %v, hits = %v", err, r.cacheResults("hit"))
	}
}

// TestUnknownKidRefreshIsSingleFlight: 100 concurrent tokens naming a kid
// published after the last refresh share one fetch, and all verify.
func TestUnknownKidRefreshIsSingleFlight(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es)
	r := loadedRig(t, authConfig(srv.URL))
	tok := k.es2.MintToken(t, r.claims())
	srv.SetKeys(t, k.es, k.es2)
	release := srv.Hold()

	errs := make(chan error, 100)
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			_, err := r.v.Verify(context.Background(), tok)
			errs <- err
		})
	}
	if err := srv.AwaitRequests(ctxFor(t), 2); err != nil {
		t.Fatal(err)
	}
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Verify = %v", err)
		}
	}
	if got := srv.Requests(); got != 2 {
		t.Fatalf("key set requests = %d, want 2 (start-up and one shared refresh)", got)
	}
	if got := testutilValue(r.v.m.unknownKid); got != 1 {
		t.Fatalf("unknown kid refreshes = %v, want 1", got)
	}
}

// TestRandomKidsCannotHammerTheIdP: unknown kids cause at most one fetch per
// JWKS_MIN_REFRESH, however many and however concurrent.
func TestRandomKidsCannotHammerTheIdP(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es)
	r := loadedRig(t, authConfig(srv.URL))
	attacker := testenv.NewJWKSKey(t, "ES256", "")
	random := func(i int) string {
		return attacker.MintToken(t, r.claims(), testenv.TokenKid(fmt.Sprintf("random-%d", i)))
	}
	var wg sync.WaitGroup
	for i := range 100 {
		tok := random(i)
		wg.Go(func() {
			if _, err := r.v.Verify(context.Background(), tok); !errors.Is(err, errUnknownKid) {
				t.Errorf("Verify = %v, want unknown kid", err)
			}
		})
	}
	wg.Wait()
	if got := srv.Requests(); got != 2 {
		t.Fatalf("key set requests = %d, want 2", got)
	}

	r.clock.Advance(29 * time.Second) // still inside JWKS_MIN_REFRESH
	if _, err := r.v.Verify(context.Background(), random(1000)); !errors.Is(err, errUnknownKid) {
		t.Fatal(err)
	}
	if got := srv.Requests(); got != 2 {
		t.Fatalf("a refresh inside JWKS_MIN_REFRESH: %d requests", got)
	}
	r.clock.Advance(time.Second)
	if _, err := r.v.Verify(context.Background(), random(1001)); !errors.Is(err, errUnknownKid) {
		t.Fatal(err)
	}
	if got := srv.Requests(); got != 3 {
		t.Fatalf("after JWKS_MIN_REFRESH: %d requests, want 3", got)
	}
	if got := testutilValue(r.v.m.unknownKid); got != 2 {
		t.Fatalf("unknown kid refreshes = %v, want 2", got)
	}
}

// TestKidRefreshBoundedByContext: a request waiting for a stalled refresh
// gives up when its context ends.
func TestKidRefreshBoundedByContext(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es)
	r := loadedRig(t, authConfig(srv.URL))
	release := srv.Hold()
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := r.v.Verify(ctx, k.es2.MintToken(t, r.claims()))
		done <- err
	}()
	if err := srv.AwaitRequests(ctxFor(t), 2); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, domain.ErrInvalidToken) {
		t.Fatalf("Verify = %v", err)
	}
}

// TestRedirects: a redirect within the scheme is followed; one to another
// scheme (an https set downgraded, or anything else) is a failed fetch.
func TestRedirects(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	t.Run("same_scheme", func(t *testing.T) {
		t.Parallel()
		target := testenv.NewJWKSServer(t, k.es)
		front := testenv.NewJWKSServer(t)
		front.ServeRedirect(target.URL)
		r := loadedRig(t, authConfig(front.URL))
		if _, err := r.v.Verify(context.Background(), k.es.MintToken(t, r.claims())); err != nil {
			t.Fatal(err)
		}
	})
	for name, tls := range map[string]bool{"https_to_http": true, "http_to_https": false} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var front, target *testenv.JWKSServer
			if tls {
				front, target = testenv.NewJWKSTLSServer(t), testenv.NewJWKSServer(t, k.es)
			} else {
				front, target = testenv.NewJWKSServer(t), testenv.NewJWKSTLSServer(t, k.es)
			}
			front.ServeRedirect(target.URL)
			cfg := authConfig(front.URL)
			cfg.CAFile = front.CAFile + target.CAFile // the one TLS server's
			r := newRig(t, cfg)
			r.awaitFetches(t, 1)
			if err := r.v.Ready(); err == nil || !strings.Contains(err.Error(), "redirect") {
				t.Fatalf("Ready = %v", err)
			}
			if target.Requests() != 0 {
				t.Fatalf("the redirect target got %d requests", target.Requests())
			}
		})
	}
}

// TestHTTPSNeedsTrustedCertificate: without JWKS_CA_FILE the test server's
// certificate is not trusted.
func TestHTTPSNeedsTrustedCertificate(t *testing.T) {
	t.Parallel()
	srv := testenv.NewJWKSTLSServer(t, testKeys(t).es)
	r := newRig(t, authConfig(srv.URL))
	r.awaitFetches(t, 1)
	if err := r.v.Ready(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Ready = %v", err)
	}
}

// TestFileKeySetRefresh: a file:// key set is re-read on the schedule.
func TestFileKeySetRefresh(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	f := testenv.NewJWKSFile(t, k.es)
	r := loadedRig(t, authConfig(f.URL))
	f.SetKeys(t, k.es2)
	r.tick(t, 10*time.Minute, 2)
	if _, err := r.v.Verify(context.Background(), k.es2.MintToken(t, r.claims())); err != nil {
		t.Fatal(err)
	}
	if _, err := r.v.Verify(context.Background(), k.es.MintToken(t, r.claims())); !errors.Is(err, errUnknownKid) {
		t.Fatalf("removed key: %v", err)
	}
}

// TestKidPublishedDuringARunningFetch: a scheduled fetch that started before
// the identity provider published a new key cannot know it; a token with the
// new kid arriving meanwhile queues one more fetch and is accepted, instead
// of sharing the stale fetch and getting 401.
func TestKidPublishedDuringARunningFetch(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es)
	r := loadedRig(t, authConfig(srv.URL))
	release := srv.Hold()
	// The scheduled refresh starts, and the IdP answers it with the old set.
	if err := r.clock.BlockUntilContext(ctxFor(t), 1); err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(10 * time.Minute)
	if err := srv.AwaitRequests(ctxFor(t), 2); err != nil {
		t.Fatal(err)
	}
	// Now the IdP publishes the new key, and a token signed with it arrives.
	srv.SetKeys(t, k.es, k.es2)
	done := make(chan error, 1)
	go func() {
		_, err := r.v.Verify(context.Background(), k.es2.MintToken(t, r.claims()))
		done <- err
	}()
	// Wait until the request has queued its follow-up fetch, then let the
	// stale fetch finish.
	for testutilValue(r.v.m.unknownKid) < 1 {
		select {
		case <-ctxFor(t).Done():
			t.Fatal("the request never asked for a refresh")
		default:
			runtime.Gosched()
		}
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("Verify = %v, want the new kid accepted", err)
	}
	if got := srv.Requests(); got != 3 {
		t.Errorf("key set requests = %d, want 3 (start, the stale scheduled one, the queued one)", got)
	}
}

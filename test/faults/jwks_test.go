package faults

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/test/testenv"
)

// TestJWKSFaultsKeepTheLastGoodKeySet breaks the identity provider after the
// service loaded its key set: down, garbage, an HTML page, an empty set, a
// valid set padded to 10 MiB. Each failed refresh is counted
// (ensure_user_jwks_refresh_total{result="failed"}) and the last good set
// keeps verifying fresh tokens. Then a key is removed from the set: after the
// next refresh its tokens are refused, even one verified (and cached) before.
func TestJWKSFaultsKeepTheLastGoodKeySet(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{engine: simEngine, env: map[string]string{"JWKS_REFRESH": "300ms", "JWKS_MIN_REFRESH": "300ms"}})
	n := 0
	fresh := func(key *testenv.JWKSKey) string { // a token no cache has seen
		n++
		return key.UserToken(t, "jwks-"+strconv.Itoa(n))
	}
	post := func(tok string) testenv.Answer { return r.post(context.Background(), r.client, tok) }
	want(t, "before the faults", post(fresh(r.key)), 200, bodyConfirmed)

	for _, f := range []struct {
		name  string
		apply func()
	}{
		{"IdP down", func() { r.idp.Fail(http.StatusServiceUnavailable) }},
		{"garbage", r.idp.ServeGarbage},
		{"HTML page", r.idp.ServeHTML},
		{"empty key set", r.idp.ServeEmptySet},
		{"10 MiB key set", func() { r.idp.ServeHuge(t, 10<<20, r.key) }},
	} {
		t.Run(f.name, func(t *testing.T) {
			f.apply()
			failed := r.metric(mRefreshFailed)
			// Two more failures: at least one fetch ran wholly after the fault.
			r.waitMetric(mRefreshFailed, 10*time.Second, func(v float64) bool { return v >= failed+2 })
			want(t, "with the last good key set", post(fresh(r.key)), 200, bodyConfirmed)
			if k := r.metric(mJWKSKeys); k != 1 {
				t.Errorf("%s = %v, want 1", mJWKSKeys, k)
			}
		})
	}

	t.Run("a removed key is refused after the next refresh", func(t *testing.T) {
		r.idp.SetKeys(t, r.key)
		cached := fresh(r.key)
		want(t, "before the removal", post(cached), 200, bodyConfirmed)
		successor := testenv.NewJWKSKey(t, "ES256", "key-2")
		r.idp.SetKeys(t, successor)
		ok := r.metric(mRefreshOK)
		r.waitMetric(mRefreshOK, 10*time.Second, func(v float64) bool { return v >= ok+2 })
		a := post(cached)
		want(t, "a token verified before its key was removed", a, 401, bodyInvalidToken)
		if h := a.Header.Get("WWW-Authenticate"); h != `Bearer error="invalid_token"` {
			t.Errorf("WWW-Authenticate = %q", h)
		}
		want(t, "a new token of the removed key", post(fresh(r.key)), 401, bodyInvalidToken)
		want(t, "a token of the successor", post(fresh(successor)), 200, bodyConfirmed)
	})
	r.assertAlive()
}

// TestJWKSRotationAcceptedOnFirstRequest: the IdP publishes a new key and a
// token signed with it arrives before any scheduled refresh (JWKS_REFRESH is
// its default, 10 minutes): the unknown kid makes the service fetch the set
// once, and that very first request is accepted.
func TestJWKSRotationAcceptedOnFirstRequest(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{engine: simEngine})
	want(t, "before the rotation", r.ensure("rot-before"), 200, bodyConfirmed)
	next := testenv.NewJWKSKey(t, "ES256", "key-2")
	r.idp.SetKeys(t, r.key, next)
	fetches := r.idp.Requests()
	want(t, "first token of the new key", r.post(context.Background(), r.client, next.UserToken(t, "rot-new")), 200, bodyConfirmed)
	if got := r.idp.Requests() - fetches; got != 1 {
		t.Errorf("the rotation cost %d key set fetches, want 1", got)
	}
	if v := r.metric("ensure_user_jwks_unknown_kid_refresh_total"); v != 1 {
		t.Errorf("unknown-kid refreshes = %v, want 1", v)
	}
	want(t, "the old key still works", r.ensure("rot-old"), 200, bodyConfirmed)
}

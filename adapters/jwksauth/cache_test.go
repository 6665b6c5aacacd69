package jwksauth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/test/testenv"
)

// TestCacheHitsAndMisses: a verified token is answered from the cache the
// second time; refused tokens are never cached.
func TestCacheHitsAndMisses(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	r := loadedRig(t, authConfig(testenv.NewJWKSFile(t, k.es).URL))
	tok := k.es.MintToken(t, r.claims())
	for range 3 {
		if _, err := r.v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	bad := testenv.NewJWKSKey(t, "ES256", k.es.Kid).MintToken(t, r.claims())
	for range 2 {
		if _, err := r.v.Verify(context.Background(), bad); !errors.Is(err, domain.ErrInvalidToken) {
			t.Fatal(err)
		}
	}
	if r.cacheResults("hit") != 2 || r.cacheResults("miss") != 3 || r.v.cache.len() != 1 {
		t.Fatalf("hits %v, misses %v, entries %d", r.cacheResults("hit"), r.cacheResults("miss"), r.v.cache.len())
	}
}

// TestCacheNeverOutlivesExp: a cached token expires on the clock exactly
// when the slow path would refuse it.
func TestCacheNeverOutlivesExp(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	r := loadedRig(t, authConfig(testenv.NewJWKSFile(t, k.es).URL))
	c := r.claims()
	c["exp"] = r.clock.Now().Add(time.Minute).Unix()
	tok := k.es.MintToken(t, c)
	if _, err := r.v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(time.Minute + 30*time.Second - time.Nanosecond) // last instant inside the leeway
	if _, err := r.v.Verify(context.Background(), tok); err != nil || r.cacheResults("hit") != 1 {
		t.Fatalf("inside the leeway: %v, hits %v", err, r.cacheResults("hit"))
	}
	r.clock.Advance(time.Nanosecond)
	if _, err := r.v.Verify(context.Background(), tok); !errors.Is(err, domain.ErrInvalidToken) {
		t.Fatalf("expired token from the cache: %v", err)
	}
	if r.cacheResults("hit") != 1 {
		t.Fatal("the cache answered for an expired token")
	}
}

// TestCacheRespectsNbf: should the clock step back before nbf (an NTP
// correction), the cache does not answer for a token not yet valid.
func TestCacheRespectsNbf(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	r := loadedRig(t, authConfig(testenv.NewJWKSFile(t, k.es).URL))
	c := r.claims()
	c["nbf"] = r.clock.Now().Add(30 * time.Second).Unix() // valid now thanks to the leeway
	tok := k.es.MintToken(t, c)
	if _, err := r.v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(-time.Second)
	if _, err := r.v.Verify(context.Background(), tok); !errors.Is(err, domain.ErrInvalidToken) {
		t.Fatalf("not-yet-valid token: %v", err)
	}
	if r.cacheResults("hit") != 0 {
		t.Fatal("the cache answered before nbf")
	}
}

// TestCacheEntryTiedToItsKeySet: an entry verified against a key set that is
// no longer current never answers, even if it was stored after the refresh
// that replaced the set; HS256 entries do not depend on the key set.
func TestCacheEntryTiedToItsKeySet(t *testing.T) {
	t.Parallel()
	c := newTokenCache(64)
	oldSet, newSet := &keySet{}, &keySet{}
	jwks, legacy := sha256.Sum256([]byte("jwks")), sha256.Sum256([]byte("hs256"))
	id := domain.Identity{UserID: "u", Email: "e"}
	c.put(&jwks, cached{id: id, set: oldSet, from: 0, until: 100})
	c.put(&legacy, cached{id: id, from: 0, until: 100})
	if _, ok := c.get(&jwks, newSet, 50); ok {
		t.Fatal("an entry of the old key set answered")
	}
	if got, ok := c.get(&jwks, oldSet, 50); !ok || got != id {
		t.Fatal("the entry does not answer under its own key set")
	}
	if _, ok := c.get(&legacy, newSet, 50); !ok {
		t.Fatal("an HS256 entry depends on the key set")
	}
	for _, now := range []int64{-1, 100} {
		if _, ok := c.get(&jwks, oldSet, now); ok {
			t.Fatalf("answered at %d, outside [0, 100)", now)
		}
	}
	c.purge(newSet)
	if c.len() != 1 {
		t.Fatalf("purge left %d entries, want the HS256 one", c.len())
	}
}

// TestCacheIsBounded: whatever is put, a shard holds at most its share.
func TestCacheIsBounded(t *testing.T) {
	t.Parallel()
	c := newTokenCache(64)
	for i := range 10_000 {
		sum := sha256.Sum256(fmt.Appendf(nil, "token-%d", i))
		c.put(&sum, cached{until: 1})
	}
	if n := c.len(); n > 64 {
		t.Fatalf("%d entries in a cache of 64", n)
	}
}

// TestCachedHS256SurvivesJWKSRotation: legacy tokens are not tied to the key
// set, so a rotation does not evict them.
func TestCachedHS256SurvivesJWKSRotation(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es)
	cfg := authConfig(srv.URL)
	cfg.HS256Secret = secret
	r := loadedRig(t, cfg)
	tok := testenv.MintHS256Token(t, []byte(secret), r.claims())
	if _, err := r.v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	srv.SetKeys(t, k.es2)
	r.tick(t, 10*time.Minute, 2)
	if _, err := r.v.Verify(context.Background(), tok); err != nil || r.cacheResults("hit") != 1 {
		t.Fatalf("Verify = %v, hits %v", err, r.cacheResults("hit"))
	}
}

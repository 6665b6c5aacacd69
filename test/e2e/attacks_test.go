package e2e

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/test/testenv"
)

// hs256Secret is the legacy secret of the stack that accepts HS256 too.
const hs256Secret = "a-legacy-hs256-secret-of-at-least-32-bytes"

// TestTokenAttacksOverHTTP throws known JWT attacks at the real binary over
// real HTTP, each a named subtest: every one gets the 401 row (or, for claims
// a valid signature vouches for but the service cannot use, the 400 row, and
// for a token over the header cap the JSON 431), nothing reaches the Engine,
// the attacker's jku/x5u server receives nothing, and the service logs no
// token. It runs against a JWKS-only service and against one that also takes
// the legacy HS256 secret, since key confusion aims at that path.
func TestTokenAttacksOverHTTP(t *testing.T) {
	t.Parallel()
	for _, withSecret := range []bool{false, true} {
		name := "jwks_only"
		if withSecret {
			name = "jwks_and_hs256"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runAttacks(t, withSecret)
		})
	}
}

// attackCase is one attack: the token and the answer row it must get.
type attackCase struct {
	name   string
	token  string
	status int
	body   string
}

func runAttacks(t *testing.T, withSecret bool) {
	env := map[string]string{}
	if withSecret {
		env["JWT_HS256_SECRET"] = hs256Secret
	}
	s := newStack(t, stackOptions{env: env})
	rsaKey := testenv.NewJWKSKey(t, "RS256", "rsa-1")
	s.idp.SetKeys(t, s.key, rsaKey)
	claims := func(userID string, kv ...any) map[string]any {
		c := testenv.TokenClaims(time.Now(), issuer, audience)
		c["sub"], c["email"] = userID, userID+"@example.com"
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	// The RSA key is live: its kid is new, so this first request loads it.
	status, _, body := s.post("Bearer " + rsaKey.MintToken(t, claims("ok-rsa")))
	if status != 200 {
		t.Fatalf("a valid RS256 token: %d %s", status, body)
	}
	if withSecret {
		status, _, body := s.post("Bearer " + testenv.MintHS256Token(t, []byte(hs256Secret), claims("ok-hs256")))
		if status != 200 {
			t.Fatalf("a valid HS256 token with the secret configured: %d %s", status, body)
		}
	}
	engineBefore := s.engine.Total()

	enc := base64.RawURLEncoding
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	victim := claims("ok-victim")
	valid := s.key.MintToken(t, victim)
	parts := strings.SplitN(valid, ".", 3)
	vh, vp, vs := parts[0], parts[1], parts[2]
	attacker := testenv.NewJWKSKey(t, "ES256", "attacker-1")
	lure := testenv.NewJWKSServer(t, attacker)      // where jku and x5u point
	signed := func(header, payload []byte) string { // by the legitimate key, whatever the bytes
		input := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
		return input + "." + enc.EncodeToString(s.key.Sign(t, "ES256", []byte(input)))
	}
	withHeader := func(h map[string]any) string { return signed(mustJSON(h), mustJSON(victim)) }
	withPayload := func(p []byte) string { return signed(mustJSON(map[string]any{"alg": "ES256", "kid": s.key.Kid}), p) }
	withSig := func(sig []byte) string { return vh + "." + vp + "." + enc.EncodeToString(sig) }
	none := func(alg string, sig bool) string {
		tok := enc.EncodeToString(mustJSON(map[string]any{"alg": alg, "typ": "JWT"})) + "." + vp + "."
		if sig {
			tok += vs
		}
		return tok
	}
	hs256With := func(secret []byte, kid string) string {
		return testenv.MintHS256Token(t, secret, victim, testenv.TokenKid(kid))
	}
	rsaDER, err := x509.MarshalPKIXPublicKey(rsaKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	withClaims := func(kv ...any) string { return s.key.MintToken(t, claims("ok-victim", kv...)) }

	const (
		invalid = http.StatusUnauthorized
		payload = http.StatusBadRequest
	)
	cases := []attackCase{
		{"alg none without signature", none("none", false), invalid, bodyInvalidToken},
		{"alg none with signature", none("none", true), invalid, bodyInvalidToken},
		{"alg None without signature", none("None", false), invalid, bodyInvalidToken},
		{"alg None with signature", none("None", true), invalid, bodyInvalidToken},
		{"alg NONE without signature", none("NONE", false), invalid, bodyInvalidToken},
		{"alg NONE with signature", none("NONE", true), invalid, bodyInvalidToken},
		{"signature stripped", vh + "." + vp + ".", invalid, bodyInvalidToken},
		{"signature and its dot stripped", vh + "." + vp, invalid, bodyInvalidToken},
		{"key confusion: HS256 with the RSA public key PEM", hs256With(rsaKey.PublicPEM(t), rsaKey.Kid), invalid, bodyInvalidToken},
		{"key confusion: HS256 with the RSA public key PEM, no kid", hs256With(rsaKey.PublicPEM(t), ""), invalid, bodyInvalidToken},
		{"key confusion: HS256 with the RSA public key DER", hs256With(rsaDER, rsaKey.Kid), invalid, bodyInvalidToken},
		{"key confusion: HS256 with the EC public key PEM", hs256With(s.key.PublicPEM(t), s.key.Kid), invalid, bodyInvalidToken},
		{"key confusion: HS256 with the published JWK JSON", hs256With(mustJSON(s.key.JWK(t)), s.key.Kid), invalid, bodyInvalidToken},
		{"embedded jwk with the attacker's key and kid", attacker.MintToken(t, victim, testenv.TokenHeader("jwk", attacker.JWK(t))), invalid, bodyInvalidToken},
		{"embedded jwk with the attacker's key under the legitimate kid", attacker.MintToken(t, victim, testenv.TokenKid(s.key.Kid), testenv.TokenHeader("jwk", attacker.JWK(t))), invalid, bodyInvalidToken},
		{"jku pointing at the attacker", attacker.MintToken(t, victim, testenv.TokenHeader("jku", lure.URL)), invalid, bodyInvalidToken},
		{"jku pointing at the attacker under the legitimate kid", attacker.MintToken(t, victim, testenv.TokenKid(s.key.Kid), testenv.TokenHeader("jku", lure.URL)), invalid, bodyInvalidToken},
		{"x5u pointing at the attacker", attacker.MintToken(t, victim, testenv.TokenHeader("x5u", lure.URL)), invalid, bodyInvalidToken},
		{"x5u pointing at the attacker under the legitimate kid", attacker.MintToken(t, victim, testenv.TokenKid(s.key.Kid), testenv.TokenHeader("x5u", lure.URL)), invalid, bodyInvalidToken},
		{"kid path traversal", s.key.MintToken(t, victim, testenv.TokenKid("../../../../../../etc/passwd")), invalid, bodyInvalidToken},
		{"kid SQL injection", s.key.MintToken(t, victim, testenv.TokenKid("' OR '1'='1' --")), invalid, bodyInvalidToken},
		{"kid of 10 KB", s.key.MintToken(t, victim, testenv.TokenKid(strings.Repeat("k", 10<<10))), invalid, bodyInvalidToken},
		{"ES256 with r = s = 0 (CVE-2022-21449)", withSig(make([]byte, 64)), invalid, bodyInvalidToken},
		{"ES256 signature of 63 bytes", withSig(make([]byte, 63)), invalid, bodyInvalidToken},
		{"ES256 signature of 65 bytes", withSig(make([]byte, 65)), invalid, bodyInvalidToken},
		{"ES256 signature of 1 byte", withSig([]byte{1}), invalid, bodyInvalidToken},
		{"ES256 signature of 128 bytes", withSig(make([]byte, 128)), invalid, bodyInvalidToken},
		{"unknown crit", withHeader(map[string]any{"alg": "ES256", "kid": s.key.Kid, "crit": []string{"urn:x-evil"}, "urn:x-evil": true}), invalid, bodyInvalidToken},
		{"JWE compact", enc.EncodeToString([]byte(`{"alg":"RSA-OAEP","enc":"A256GCM"}`)) + ".a2V5.aXY.Y2lwaGVy.dGFn", invalid, bodyInvalidToken},
		{"JWS JSON serialization, flattened", `{"protected":"` + vh + `","payload":"` + vp + `","signature":"` + vs + `"}`, invalid, bodyInvalidToken},
		{"JWS JSON serialization, general", `{"payload":"` + vp + `","signatures":[{"protected":"` + vh + `","signature":"` + vs + `"}]}`, invalid, bodyInvalidToken},
		{"invalid base64url: standard alphabet", vh + "." + vp + "." + strings.NewReplacer("-", "+", "_", "/").Replace(vs) + "+/", invalid, bodyInvalidToken},
		{"invalid base64url: padding", vh + "=." + vp + "." + vs, invalid, bodyInvalidToken},
		{"invalid base64url: foreign bytes", vh + "." + vp + "!." + vs, invalid, bodyInvalidToken},
		{"header not JSON", signed([]byte("alg=ES256"), mustJSON(victim)), invalid, bodyInvalidToken},
		{"payload not JSON", withPayload([]byte("sub=admin")), invalid, bodyInvalidToken},
		{"payload a JSON array", withPayload([]byte("[" + string(mustJSON(victim)) + "]")), invalid, bodyInvalidToken},
		{"exp a string", withClaims("exp", "99999999999"), invalid, bodyInvalidToken},
		{"expired", withClaims("exp", time.Now().Add(-time.Hour).Unix()), invalid, bodyInvalidToken},
		{"not yet valid", withClaims("nbf", time.Now().Add(time.Hour).Unix()), invalid, bodyInvalidToken},
		{"wrong issuer", withClaims("iss", "https://evil.example.com/"), invalid, bodyInvalidToken},
		{"wrong audience", withClaims("aud", "another-service"), invalid, bodyInvalidToken},
		{"validly signed token over 8 KiB", withClaims("pad", strings.Repeat("p", 9<<10)), invalid, bodyInvalidToken},
		{"token of 200 KB, over the header cap", valid + strings.Repeat("A", 200<<10), http.StatusRequestHeaderFieldsTooLarge, `{"error":"Request header fields too large."}`},
		{"email with CR/LF", withClaims("email", "victim@example.com\r\nX-Injected: 1"), payload, bodyInvalidPayload},
		{"user id with NUL", withClaims("sub", "ok-victim\x00admin"), payload, bodyInvalidPayload},
		{"user id of 300 bytes", withClaims("sub", "ok-"+strings.Repeat("u", 297)), payload, bodyInvalidPayload},
		{"email without @", withClaims("email", "victim.example.com"), payload, bodyInvalidPayload},
		{"email a number", withClaims("email", 42), payload, bodyInvalidPayload},
		{"email an array", withClaims("email", []string{"a@example.com", "b@example.com"}), payload, bodyInvalidPayload},
		{"email_verified false", withClaims("email_verified", false), payload, bodyInvalidPayload},
	}
	if !withSecret {
		cases = append(cases, attackCase{"HS256 without a secret configured",
			testenv.MintHS256Token(t, []byte(hs256Secret), victim), invalid, bodyInvalidToken})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, header, body := s.post("Bearer " + c.token)
			if status != c.status || body != c.body {
				t.Fatalf("got %d %s, want %d %s", status, body, c.status, c.body)
			}
			if header.Get("Content-Type") != "application/json" || header.Get("Cache-Control") != "no-store" {
				t.Errorf("headers %v", header)
			}
			if c.status == invalid {
				if h := header.Get("WWW-Authenticate"); h != `Bearer error="invalid_token"` {
					t.Errorf("WWW-Authenticate = %q", h)
				}
			}
		})
	}

	if n := lure.Requests(); n != 0 {
		t.Errorf("the attacker's jku/x5u server received %d requests, want 0", n)
	}
	if n := s.engine.Total() - engineBefore; n != 0 {
		t.Errorf("the attacks sent %d commands to the Engine, want 0", n)
	}
	for _, tok := range []string{valid, rsaKey.MintToken(t, claims("ok-rsa-after"))} {
		if status, _, body := s.post("Bearer " + tok); status != 200 || body != bodyConfirmed {
			t.Errorf("a valid token after the battery: %d %s", status, body)
		}
	}
	s.svc.Stop(t, 30*time.Second) // its request lines are buffered: flush them
	out := s.svc.Output()
	for _, c := range cases {
		for _, seg := range strings.FieldsFunc(c.token, func(r rune) bool { return r == '.' || r == '"' }) {
			if len(seg) >= 16 && strings.Contains(out, seg) {
				t.Errorf("%s: the service output contains a part of the token (%.20s…)", c.name, seg)
				break
			}
		}
	}
}

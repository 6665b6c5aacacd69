package jwksauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/test/testenv"
)

// attackRig is a verifier over HTTP trusting k.es, k.rs and k.ed, with or
// without the legacy HS256 secret.
func attackRig(t *testing.T, withSecret bool) (*rig, *testenv.JWKSServer) {
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es, k.rs, k.ed)
	cfg := authConfig(srv.URL)
	if withSecret {
		cfg.HS256Secret = secret
	}
	return loadedRig(t, cfg), srv
}

// segments splits a compact token.
func segments(tok string) (h, p, s string) {
	parts := strings.SplitN(tok, ".", 3)
	return parts[0], parts[1], parts[2]
}

var b64e = base64.RawURLEncoding

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAttackBattery throws known JWT attacks at the verifier, each a named
// case, and checks every one fails with ErrInvalidToken for the stated
// reason; then a valid token still verifies. It runs with and without the
// HS256 secret configured, since several attacks aim at that path.
func TestAttackBattery(t *testing.T) {
	t.Parallel()
	for _, withSecret := range []bool{false, true} {
		name := "jwks_only"
		if withSecret {
			name = "jwks_and_hs256"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runAttackBattery(t, withSecret)
		})
	}
}

func runAttackBattery(t *testing.T, withSecret bool) {
	k := testKeys(t)
	r, srv := attackRig(t, withSecret)
	claims := r.claims()
	valid := k.es.MintToken(t, claims)
	vh, vp, vs := segments(valid)
	payload := mustJSON(t, claims)
	attacker := testenv.NewJWKSKey(t, "ES256", "attacker")
	lure := testenv.NewJWKSServer(t, attacker) // what jku/x5u point at

	hs256With := func(key []byte, kid string) string {
		return testenv.MintHS256Token(t, key, claims, testenv.TokenKid(kid))
	}
	signedHeader := func(h map[string]any) string { // legit key, arbitrary header
		hb := mustJSON(t, h)
		input := b64e.EncodeToString(hb) + "." + vp
		return input + "." + b64e.EncodeToString(k.es.Sign(t, "ES256", []byte(input)))
	}
	signedPayload := func(p []byte) string { // legit key and header, arbitrary payload
		input := vh + "." + b64e.EncodeToString(p)
		return input + "." + b64e.EncodeToString(k.es.Sign(t, "ES256", []byte(input)))
	}
	withSig := func(sig []byte) string { return vh + "." + vp + "." + b64e.EncodeToString(sig) }
	none := func(alg string, sig string) string {
		return b64e.EncodeToString(mustJSON(t, map[string]any{"alg": alg, "kid": k.es.Kid})) + "." + vp + "." + sig
	}
	ecPub := k.es.Public().(*ecdsa.PublicKey)
	ecPoint, _ := ecPub.Bytes()
	rsaDER, _ := x509.MarshalPKIXPublicKey(k.rs.Public())
	selfSigned := func() string { // an x5c chain for the attacker's key
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "idp.example.com"},
			NotBefore: r.clock.Now().Add(-time.Hour), NotAfter: r.clock.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, attacker.Public(), attacker.Private)
		if err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(der)
	}
	derSig := func() []byte { // ES256 signature in ASN.1 DER instead of r||s
		sig, _ := b64e.DecodeString(vs)
		der, _ := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])})
		return der
	}
	now := r.clock.Now()
	withClaims := func(kv ...any) string {
		c := testenv.TokenClaims(now, issuer, audience)
		for i := 0; i < len(kv); i += 2 {
			c[kv[i].(string)] = kv[i+1]
		}
		return k.es.MintToken(t, c)
	}

	cases := []struct {
		name   string
		token  string
		reason error // the defence expected to stop it; nil: any ErrInvalidToken
	}{
		{"alg_none_without_signature", none("none", ""), errNotJWS},
		{"alg_none_with_signature", none("none", vs), nil},
		{"alg_None_with_signature", none("None", vs), nil},
		{"alg_NONE_with_signature", none("NONE", vs), nil},
		{"alg_nOnE_with_signature", none("nOnE", vs), nil},
		{"alg_empty", none("", vs), nil},
		{"signature_stripped", vh + "." + vp + ".", errNotJWS},
		{"signature_and_dot_stripped", vh + "." + vp, errNotJWS},
		{"key_confusion_hs256_rsa_pem", hs256With(k.rs.PublicPEM(t), k.rs.Kid), nil},
		{"key_confusion_hs256_rsa_der", hs256With(rsaDER, k.rs.Kid), nil},
		{"key_confusion_hs256_rsa_modulus", hs256With(k.rs.Public().(*rsa.PublicKey).N.Bytes(), k.rs.Kid), nil},
		{"key_confusion_hs256_ec_pem", hs256With(k.es.PublicPEM(t), k.es.Kid), nil},
		{"key_confusion_hs256_ec_point", hs256With(ecPoint, k.es.Kid), nil},
		{"key_confusion_hs256_jwks_json", hs256With(srvBody(t, k), ""), nil},
		{"embedded_jwk_attacker_kid", attacker.MintToken(t, claims, testenv.TokenHeader("jwk", attacker.JWK(t))), errUnknownKid},
		{"embedded_jwk_legit_kid", attacker.MintToken(t, claims, testenv.TokenKid(k.es.Kid), testenv.TokenHeader("jwk", attacker.JWK(t))), errBadSignature},
		{"embedded_jwk_no_kid", attacker.MintToken(t, claims, testenv.TokenNoKid(), testenv.TokenHeader("jwk", attacker.JWK(t))), errBadSignature},
		{"jku_to_attacker", attacker.MintToken(t, claims, testenv.TokenHeader("jku", lure.URL)), errUnknownKid},
		{"jku_legit_kid", attacker.MintToken(t, claims, testenv.TokenKid(k.es.Kid), testenv.TokenHeader("jku", lure.URL)), errBadSignature},
		{"x5u_to_attacker", attacker.MintToken(t, claims, testenv.TokenKid(k.es.Kid), testenv.TokenHeader("x5u", lure.URL)), errBadSignature},
		{"x5c_attacker_chain", attacker.MintToken(t, claims, testenv.TokenNoKid(), testenv.TokenHeader("x5c", []string{selfSigned()})), errBadSignature},
		{"kid_path_traversal", attacker.MintToken(t, claims, testenv.TokenKid("../../../../../../etc/passwd")), nil},
		{"kid_sql_injection", attacker.MintToken(t, claims, testenv.TokenKid("' OR '1'='1' --")), nil},
		{"kid_10KB", attacker.MintToken(t, claims, testenv.TokenKid(strings.Repeat("k", 10<<10))), errTooLong},
		{"kid_5KB", attacker.MintToken(t, claims, testenv.TokenKid(strings.Repeat("k", 5<<10))), nil},
		{"kid_not_a_string", signedHeader(map[string]any{"alg": "ES256", "kid": 1}), errBadHeader},
		{"kid_null", signedHeader(map[string]any{"alg": "ES256", "kid": nil}), errBadHeader},
		{"alg_name_upper_case", signedHeader(map[string]any{"ALG": "ES256", "kid": k.es.Kid}), errBadHeader},
		{"alg_not_a_string", signedHeader(map[string]any{"alg": []string{"ES256"}, "kid": k.es.Kid}), errBadHeader},
		{"es256_r_s_zero_cve_2022_21449", withSig(make([]byte, 64)), errBadSignature},
		{"es256_r_s_n", withSig(append(ecPub.Params().N.FillBytes(make([]byte, 32)), ecPub.Params().N.FillBytes(make([]byte, 32))...)), errBadSignature},
		{"es256_sig_63_bytes", withSig(make([]byte, 63)), errBadSignature},
		{"es256_sig_65_bytes", withSig(make([]byte, 65)), errBadSignature},
		{"es256_sig_1_byte", withSig([]byte{1}), errBadSignature},
		{"es256_sig_128_bytes", withSig(make([]byte, 128)), errBadSignature},
		{"es256_sig_asn1_der", withSig(derSig()), errBadSignature},
		{"crit_unknown", signedHeader(map[string]any{"alg": "ES256", "kid": k.es.Kid, "crit": []string{"urn:x-evil"}, "urn:x-evil": true}), errCrit},
		{"crit_b64", signedHeader(map[string]any{"alg": "ES256", "kid": k.es.Kid, "crit": []string{"b64"}, "b64": false}), errCrit},
		{"crit_empty", signedHeader(map[string]any{"alg": "ES256", "kid": k.es.Kid, "crit": []string{}}), errCrit},
		{"crit_null", signedHeader(map[string]any{"alg": "ES256", "kid": k.es.Kid, "crit": nil}), errCrit},
		{"jwe_compact_five_segments", b64e.EncodeToString([]byte(`{"alg":"RSA-OAEP","enc":"A256GCM"}`)) + ".a2V5.aXY.Y2lwaGVy.dGFn", errNotJWS},
		{"jws_json_flattened", `{"protected":"` + vh + `","payload":"` + vp + `","signature":"` + vs + `"}`, errNotJWS},
		{"jws_json_general", `{"payload":"` + vp + `","signatures":[{"protected":"` + vh + `","signature":"` + vs + `"}]}`, errNotJWS},
		{"b64_std_alphabet", strings.NewReplacer("-", "+", "_", "/").Replace(valid) + "+", errNotJWS},
		{"b64_padding", vh + "=." + vp + "." + vs, errNotJWS},
		{"b64_impossible_length", vh + "A." + vp + "." + vs, errBadHeader},
		{"b64_noncanonical_signature", vh + "." + vp + "." + vs[:len(vs)-1] + flipLowBits(vs[len(vs)-1]), nil},
		{"header_not_json", signedRaw(t, k, []byte("alg=ES256"), payload), errBadHeader},
		{"header_json_array", signedRaw(t, k, []byte(`["ES256"]`), payload), errBadHeader},
		{"header_null", signedRaw(t, k, []byte(`null`), payload), nil},
		{"payload_not_json", signedPayload([]byte("sub=admin")), nil},
		{"payload_json_array", signedPayload([]byte(`[` + string(payload) + `]`)), nil},
		{"payload_json_string", signedPayload([]byte(`"admin"`)), nil},
		{"payload_null", signedPayload([]byte(`null`)), nil},
		{"payload_trailing_garbage", signedPayload(append(payload, []byte(`{}`)...)), nil},
		{"exp_as_string", withClaims("exp", "99999999999"), nil},
		{"exp_as_bool", withClaims("exp", true), nil},
		{"exp_overflows_float64", withClaims("exp", json.RawMessage("1e400")), nil},
		{"exp_fraction_expired", withClaims("exp", json.RawMessage("1.5")), nil},
		{"expired", withClaims("exp", now.Add(-time.Hour).Unix()), nil},
		{"not_yet_valid", withClaims("nbf", now.Add(time.Hour).Unix()), nil},
		{"wrong_issuer", withClaims("iss", "https://evil.example.com/"), nil},
		{"wrong_audience", withClaims("aud", "another-service"), nil},
		{"alg_mismatch_es384_header", signedHeader(map[string]any{"alg": "ES384", "kid": k.es.Kid}), errKeyAlg},
		{"alg_mismatch_rs256_on_ec_key", signedHeader(map[string]any{"alg": "RS256", "kid": k.es.Kid}), errKeyAlg},
		{"alg_hs512", signedHeader(map[string]any{"alg": "HS512", "kid": k.es.Kid}), errAlgRefused},
		{"alg_lowercase_hs256", signedHeader(map[string]any{"alg": "hs256"}), errAlgRefused},
		{"token_200KB", valid + strings.Repeat("A", 200<<10), errTooLong},
	}
	if !withSecret {
		cases = append(cases, struct {
			name   string
			token  string
			reason error
		}{"hs256_without_secret", testenv.MintHS256Token(t, []byte(secret), claims), errHS256Refused})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := r.v.Verify(context.Background(), c.token)
			if !errors.Is(err, domain.ErrInvalidToken) {
				t.Fatalf("err = %v, want ErrInvalidToken", err)
			}
			if c.reason != nil && !errors.Is(err, c.reason) {
				t.Fatalf("err = %v, want the defence %v", err, c.reason)
			}
			if len(c.token) > 20 && strings.Contains(err.Error(), c.token[:20]) {
				t.Fatal("the error quotes the token")
			}
		})
	}
	if n := lure.Requests(); n != 0 {
		t.Errorf("the attacker's jku/x5u server got %d requests, want 0", n)
	}
	// Unknown kids caused at most one refresh: they are rate-limited.
	if n := srv.Requests(); n > 2 {
		t.Errorf("the key set server got %d requests, want at most 2", n)
	}
	if id, err := r.v.Verify(context.Background(), valid); err != nil || id.UserID != "user-1" {
		t.Fatalf("after the battery, a valid token: %+v, %v", id, err)
	}
}

// signedRaw signs arbitrary header and payload bytes with the legit ES256 key.
func signedRaw(t *testing.T, k keys, header, payload []byte) string {
	input := b64e.EncodeToString(header) + "." + b64e.EncodeToString(payload)
	return input + "." + b64e.EncodeToString(k.es.Sign(t, "ES256", []byte(input)))
}

// srvBody is the published key set document, tried as an HMAC secret.
func srvBody(t *testing.T, k keys) []byte { return testenv.JWKSBody(t, k.es, k.rs, k.ed) }

// flipLowBits changes the unused low bits of the last base64url character,
// which a lax decoder ignores: the same bytes under another encoding.
func flipLowBits(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return string(alphabet[i^1])
}

// TestClaimShapeAttacks: identity claims of the wrong JSON type are refused
// with ErrInvalidPayload. Values (CR/LF, length, addr-spec) are checked by
// domain.NewUser, not here: the raw strings come back unchanged.
func TestClaimShapeAttacks(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	r := loadedRig(t, authConfig(testenv.NewJWKSFile(t, k.es).URL))
	for _, c := range []struct {
		name string
		kv   []any
		want error
	}{
		{"email_number", []any{"email", 42}, domain.ErrInvalidPayload},
		{"email_array", []any{"email", []string{"a@example.com", "b@example.com"}}, domain.ErrInvalidPayload},
		{"email_object", []any{"email", map[string]any{"address": "a@example.com"}}, domain.ErrInvalidPayload},
		{"email_bool", []any{"email", true}, domain.ErrInvalidPayload},
		{"email_missing", []any{"email", nil}, domain.ErrInvalidPayload},
		{"user_id_missing", []any{"sub", nil}, domain.ErrInvalidPayload},
		{"user_id_number", []any{"sub", 7}, domain.ErrInvalidPayload},
		{"user_id_array", []any{"sub", []string{"admin"}}, domain.ErrInvalidPayload},
		{"user_id_claim_number_shadows_sub", []any{"userId", 7}, domain.ErrInvalidPayload},
	} {
		t.Run(c.name, func(t *testing.T) {
			claims := r.claims()
			for i := 0; i < len(c.kv); i += 2 {
				if c.kv[i+1] == nil {
					delete(claims, c.kv[i].(string))
				} else {
					claims[c.kv[i].(string)] = c.kv[i+1]
				}
			}
			_, err := r.v.Verify(context.Background(), k.es.MintToken(t, claims))
			if !errors.Is(err, c.want) || errors.Is(err, domain.ErrInvalidToken) {
				t.Fatalf("err = %v, want only %v", err, c.want)
			}
		})
	}
	t.Run("values_are_domain_business", func(t *testing.T) {
		claims := r.claims()
		claims["sub"] = "admin\r\nX-Injected: 1"
		claims["email"] = "a@example.com\n"
		id, err := r.v.Verify(context.Background(), k.es.MintToken(t, claims))
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if id.UserID != claims["sub"] || id.Email != claims["email"] {
			t.Fatalf("identity rewritten: %q", id)
		}
		if _, err := domain.NewUser(id); !errors.Is(err, domain.ErrInvalidPayload) {
			t.Fatalf("domain.NewUser accepted %q", id)
		}
	})
}

package jwksauth

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/domain"
)

// TestClaimRules exercises claimRules.check directly: claim types, the
// user-id claim order, email_verified, iss/aud, and the time window with
// leeway at its exact edges (jwx semantics: now truncated to the second;
// exp valid while now < exp+leeway; nbf and iat valid once now >= t-leeway).
func TestClaimRules(t *testing.T) {
	t.Parallel()
	const now = 1_767_323_045 // seconds
	rules := claimRules{
		issuer: "iss", audience: "aud", leeway: int64(30 * time.Second), requireExp: true,
		userIDClaims: []string{"userId", "sub"}, emailClaim: "email", requireVerifiedEmail: true,
	}
	base := `"iss":"iss","aud":"aud","email":"e@example.com","sub":"s","exp":%d`
	payload := func(extra string) string { return "{" + fmt.Sprintf(base, now+60) + extra + "}" }
	for _, c := range []struct {
		name    string
		payload string
		rules   func(*claimRules)
		want    error // nil: valid
		id      domain.Identity
	}{
		{name: "valid", payload: payload(""), id: domain.Identity{UserID: "s", Email: "e@example.com"}},
		{name: "userId_wins_over_sub", payload: payload(`,"userId":"u"`), id: domain.Identity{UserID: "u", Email: "e@example.com"}},
		{name: "null_userId_falls_back_to_sub", payload: payload(`,"userId":null`), id: domain.Identity{UserID: "s", Email: "e@example.com"}},
		{name: "userId_number", payload: payload(`,"userId":1`), want: domain.ErrInvalidPayload},
		{name: "empty_user_id_is_domain_business", payload: payload(`,"userId":""`), id: domain.Identity{UserID: "", Email: "e@example.com"}},
		{name: "escaped_strings_decoded", payload: payload(`,"userId":"\u0075\n"`), id: domain.Identity{UserID: "u\n", Email: "e@example.com"}},
		{name: "only_null_ids", payload: `{"iss":"iss","aud":"aud","email":"e","exp":9999999999,"sub":null,"userId":null}`, want: domain.ErrInvalidPayload},
		{name: "email_null", payload: payload(`,"email":null`), want: domain.ErrInvalidPayload},
		{name: "email_verified_false", payload: payload(`,"email_verified":false`), want: domain.ErrInvalidPayload},
		{name: "email_verified_string_false", payload: payload(`,"email_verified":"false"`), want: domain.ErrInvalidPayload},
		{name: "email_verified_escaped_false", payload: payload(`,"email_verified":"\u0066alse"`), want: domain.ErrInvalidPayload},
		{name: "email_verified_true", payload: payload(`,"email_verified":true`), id: domain.Identity{UserID: "s", Email: "e@example.com"}},
		{name: "email_verified_not_required", payload: payload(`,"email_verified":false`), rules: func(r *claimRules) { r.requireVerifiedEmail = false }, id: domain.Identity{UserID: "s", Email: "e@example.com"}},
		{name: "custom_claims", payload: payload(`,"uid":"x","mail":"m"`), rules: func(r *claimRules) { r.userIDClaims, r.emailClaim = []string{"uid"}, "mail" }, id: domain.Identity{UserID: "x", Email: "m"}},
		{name: "aud_array", payload: payload(`,"aud":["x","aud"]`), id: domain.Identity{UserID: "s", Email: "e@example.com"}},
		{name: "aud_array_not_strings", payload: payload(`,"aud":["aud",1]`), want: domain.ErrInvalidToken},
		{name: "aud_number", payload: payload(`,"aud":1`), want: domain.ErrInvalidToken},
		{name: "aud_unchecked", payload: payload(`,"aud":1`), rules: func(r *claimRules) { r.audience = "" }, id: domain.Identity{UserID: "s", Email: "e@example.com"}},
		{name: "iss_number", payload: payload(`,"iss":1`), want: domain.ErrInvalidToken},
		{name: "iss_unchecked", payload: payload(`,"iss":null`), rules: func(r *claimRules) { r.issuer = "" }, id: domain.Identity{UserID: "s", Email: "e@example.com"}},
		{name: "iss_case_matters", payload: payload(`,"iss":"ISS"`), want: domain.ErrInvalidToken},
		{name: "token_problem_wins_over_payload_problem", payload: `{"iss":"x","aud":"aud","exp":9999999999}`, want: domain.ErrInvalidToken},
		{name: "exp_missing", payload: `{"iss":"iss","aud":"aud","email":"e","sub":"s"}`, want: domain.ErrInvalidToken},
		{name: "exp_missing_allowed", payload: `{"iss":"iss","aud":"aud","email":"e","sub":"s"}`, rules: func(r *claimRules) { r.requireExp = false }, id: domain.Identity{UserID: "s", Email: "e"}},
		{name: "exp_null_is_missing", payload: `{"iss":"iss","aud":"aud","email":"e","sub":"s","exp":null}`, want: domain.ErrInvalidToken},
		{name: "exp_string", payload: payload(`,"exp":"9999999999"`), want: domain.ErrInvalidToken},
		{name: "exp_object", payload: payload(`,"exp":{}`), want: domain.ErrInvalidToken},
		{name: "exp_exponent", payload: payload(`,"exp":1e10`), id: domain.Identity{UserID: "s", Email: "e@example.com"}},
		{name: "exp_fraction", payload: payload(fmt.Sprintf(`,"exp":%d.9`, now-30)), want: domain.ErrInvalidToken},
		{name: "exp_zero", payload: payload(`,"exp":0`), want: domain.ErrInvalidToken},
		{name: "exp_negative", payload: payload(`,"exp":-1`), want: domain.ErrInvalidToken},
		{name: "exp_far_future", payload: payload(`,"exp":1e300`), id: domain.Identity{UserID: "s", Email: "e@example.com"}},
		{name: "exp_edge_last_valid_second", payload: payload(fmt.Sprintf(`,"exp":%d`, now-29)), id: domain.Identity{UserID: "s", Email: "e@example.com"}},
		{name: "exp_edge_expired", payload: payload(fmt.Sprintf(`,"exp":%d`, now-30)), want: domain.ErrInvalidToken},
		{name: "nbf_edge_valid", payload: payload(fmt.Sprintf(`,"nbf":%d`, now+30)), id: domain.Identity{UserID: "s", Email: "e@example.com"}},
		{name: "nbf_edge_not_yet", payload: payload(fmt.Sprintf(`,"nbf":%d`, now+31)), want: domain.ErrInvalidToken},
		{name: "nbf_string", payload: payload(`,"nbf":"1"`), want: domain.ErrInvalidToken},
		{name: "iat_edge_valid", payload: payload(fmt.Sprintf(`,"iat":%d`, now+30)), id: domain.Identity{UserID: "s", Email: "e@example.com"}},
		{name: "iat_edge_future", payload: payload(fmt.Sprintf(`,"iat":%d`, now+31)), want: domain.ErrInvalidToken},
		{name: "iat_bool", payload: payload(`,"iat":true`), want: domain.ErrInvalidToken},
		{name: "no_leeway_exp_now", payload: payload(fmt.Sprintf(`,"exp":%d`, now)), rules: func(r *claimRules) { r.leeway = 0 }, want: domain.ErrInvalidToken},
		{name: "no_leeway_nbf_now", payload: payload(fmt.Sprintf(`,"nbf":%d`, now)), rules: func(r *claimRules) { r.leeway = 0 }, id: domain.Identity{UserID: "s", Email: "e@example.com"}},
		{name: "array", payload: `[` + payload("") + `]`, want: domain.ErrInvalidToken},
		{name: "null", payload: `null`, want: domain.ErrInvalidToken},
		{name: "not_json", payload: `{"exp":`, want: domain.ErrInvalidToken},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := rules
			if c.rules != nil {
				c.rules(&r)
			}
			// A clock reading mid-second: the check truncates it.
			at := time.Unix(now, int64(999*time.Millisecond))
			id, _, err := r.check([]byte(c.payload), nowNanos(at))
			if c.want == nil {
				if err != nil || id != c.id {
					t.Fatalf("check = %+v, %v; want %+v", id, err, c.id)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("check error = %v, want %v", err, c.want)
			}
		})
	}
}

// TestClaimWindow: the window returned for the cache is the one checked.
func TestClaimWindow(t *testing.T) {
	t.Parallel()
	r := claimRules{leeway: int64(5 * time.Second), userIDClaims: []string{"sub"}, emailClaim: "email"}
	_, w, err := r.check([]byte(`{"sub":"s","email":"e","exp":100,"nbf":40,"iat":50}`), 60*int64(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if w.from != 45*int64(time.Second) || w.until != 105*int64(time.Second) {
		t.Fatalf("window = %+v", w)
	}
}

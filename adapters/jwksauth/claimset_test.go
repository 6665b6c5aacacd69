package jwksauth

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// claimSeeds are payloads for the comparison with encoding/json: the usual,
// and every corner the walk must get right.
var claimSeeds = []string{
	`{"iss":"https://idp/","aud":["a","b"],"sub":"u1","email":"u@x","iat":1,"exp":2}`,
	` { "sub" : "u1" , "n" : -1.5e3 , "t" : true , "f" : false , "z" : null } `,
	"{\"sub\":\"a\",\n\t\"sub\":\"b\"}",                        // a name twice: the last wins
	`{"\u0073ub":"escaped name","su\"b":"quote in name"}`,      // escaped names are decoded
	`{"obj":{"sub":"nested","a":[1,{"b":"}"}]},"sub":"top"}`,   // nested members are not claims
	`{"s":"a \"quoted\" \\ value","arr":["]","}",{"x":"\\"}]}`, // brackets inside strings
	"{\"k\xff\":\"invalid UTF-8 in a name\",\"email\":\"e\xfe\"}",
	`{}`, `[]`, `null`, `"sub"`, `1`, `{"sub":}`, `{"sub":"x"`, `{"sub":"x"} {}`, ``, `{"a":1,}`,
}

// FuzzReadClaims: readClaims answers exactly what json.Unmarshal into a
// map[string]json.RawMessage would, for every input: refused or not, and
// the same value text for every name.
func FuzzReadClaims(f *testing.F) {
	for _, s := range claimSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		var want map[string]json.RawMessage
		wantOK := json.Unmarshal(payload, &want) == nil && want != nil
		c, ok := readClaims(payload, nil)
		if ok != wantOK {
			t.Fatalf("readClaims(%q) ok = %v, encoding/json %v", payload, ok, wantOK)
		}
		if !ok {
			return
		}
		for name, v := range want {
			if got := c.get(name); !bytes.Equal(got, v) {
				t.Fatalf("readClaims(%q).get(%q) = %q, encoding/json %q", payload, name, got, v)
			}
		}
		for _, m := range c.members {
			if _, found := want[string(m.name)]; !found {
				t.Fatalf("readClaims(%q) has %q, which encoding/json does not", payload, m.name)
			}
		}
		if c.get("no such claim") != nil {
			t.Fatal("get found an absent name")
		}
	})
}

// TestReadClaimsSeeds runs the comparison on the seeds in every test run.
func TestReadClaimsSeeds(t *testing.T) {
	t.Parallel()
	c, ok := readClaims([]byte(claimSeeds[2]), nil)
	if !ok || string(c.get("sub")) != `"b"` {
		t.Fatalf("duplicate name: %v %q, want the last value", ok, c.get("sub"))
	}
	c, ok = readClaims([]byte(claimSeeds[3]), nil)
	if !ok || string(c.get("sub")) != `"escaped name"` || string(c.get(`su"b`)) != `"quote in name"` {
		t.Fatalf("escaped names: %v %+v", ok, c.members)
	}
}

// BenchmarkClaims is the claims part of a cold verification: read the
// payload and apply every rule.
func BenchmarkClaims(b *testing.B) {
	payload := []byte(`{"iss":"https://idp.example/","aud":"ensure-user","sub":"user-20261203-12345","email":"user-20261203-12345@example.com","email_verified":true,"iat":1764774729,"exp":1764785529,"jti":"abcdefabcdef"}`)
	r := claimRules{issuer: "https://idp.example/", audience: "ensure-user", userIDClaims: []string{"userId", "sub"},
		emailClaim: "email", requireExp: true, requireVerifiedEmail: true}
	now := nowNanos(time.Unix(1764775729, 0))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.check(payload, now); err != nil {
			b.Fatal(err)
		}
	}
}

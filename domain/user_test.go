package domain_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ensure-user/ensure-user/domain"
)

func TestNewUser(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		id   domain.Identity
		ok   bool
	}{
		{"plain", domain.Identity{UserID: "u1", Email: "a@example.com"}, true},
		{"unicode and quotes kept", domain.Identity{UserID: `ü "x" \ y`, Email: "ü@exämple.de"}, true},
		{"user id at the limit", domain.Identity{UserID: strings.Repeat("u", 256), Email: "a@b.c"}, true},
		{"email at the limit", domain.Identity{UserID: "u", Email: strings.Repeat("a", 64) + "@" + strings.Repeat("b", 185) + ".com"}, true},
		{"empty user id", domain.Identity{UserID: "", Email: "a@b.c"}, false},
		{"user id over the limit", domain.Identity{UserID: strings.Repeat("u", 257), Email: "a@b.c"}, false},
		{"user id with NUL", domain.Identity{UserID: "u\x00", Email: "a@b.c"}, false},
		{"user id with newline", domain.Identity{UserID: "u\n", Email: "a@b.c"}, false},
		{"user id with DEL", domain.Identity{UserID: "u\x7f", Email: "a@b.c"}, false},
		{"user id with C1 control", domain.Identity{UserID: "u\u0085", Email: "a@b.c"}, false},
		{"user id with line separator", domain.Identity{UserID: "u\u2028", Email: "a@b.c"}, false},
		{"user id not UTF-8", domain.Identity{UserID: "u\xff", Email: "a@b.c"}, false},
		{"empty email", domain.Identity{UserID: "u", Email: ""}, false},
		{"email over the limit", domain.Identity{UserID: "u", Email: strings.Repeat("a", 64) + "@" + strings.Repeat("b", 186) + ".com"}, false},
		{"email with CR LF", domain.Identity{UserID: "u", Email: "a@b.c\r\n"}, false},
		{"email with tab", domain.Identity{UserID: "u", Email: "a@b.c\t"}, false},
		{"email without @", domain.Identity{UserID: "u", Email: "alice"}, false},
		{"email with display name", domain.Identity{UserID: "u", Email: "Alice <a@b.c>"}, false},
		{"email in angle brackets", domain.Identity{UserID: "u", Email: "<a@b.c>"}, false},
		{"email with comment", domain.Identity{UserID: "u", Email: "(x) a@b.c"}, false},
		{"two addresses", domain.Identity{UserID: "u", Email: "a@b.c, d@e.f"}, false},
		{"email with surrounding space", domain.Identity{UserID: "u", Email: " a@b.c"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u, err := domain.NewUser(tt.id)
			if tt.ok {
				if err != nil {
					t.Fatalf("NewUser(%q, %q) = %v, want ok", tt.id.UserID, tt.id.Email, err)
				}
				if u.ID != tt.id.UserID || u.Email != tt.id.Email {
					t.Fatalf("NewUser rewrote the values: %+v from %+v", u, tt.id)
				}
				return
			}
			if !errors.Is(err, domain.ErrInvalidPayload) {
				t.Fatalf("NewUser(%q, %q) err = %v, want ErrInvalidPayload", tt.id.UserID, tt.id.Email, err)
			}
		})
	}
}

func TestReplyInterpret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		reply   domain.Reply
		want    domain.Outcome
		wantErr error
	}{
		{domain.Reply{Status: "ok", Message: "u1"}, domain.Confirmed, nil},
		{domain.Reply{Status: "ok", Message: "anything"}, domain.Confirmed, nil},
		{domain.Reply{Status: "exists", Message: "user Already Exist"}, domain.Confirmed, nil},
		{domain.Reply{Status: "error", Message: "u1"}, 0, domain.ErrEngineFailed},
		{domain.Reply{Status: "pending", Message: "u1"}, domain.Initiated, nil},
		{domain.Reply{Status: "OK", Message: "x"}, domain.Initiated, nil},
		{domain.Reply{Message: "u1"}, domain.Confirmed, nil},
		{domain.Reply{Message: "user Already Exist"}, domain.Confirmed, nil},
		{domain.Reply{Message: "user already exist"}, domain.Initiated, nil},
		{domain.Reply{Message: "u2"}, domain.Initiated, nil},
		{domain.Reply{Message: ""}, domain.Initiated, nil},
	}
	for _, tt := range tests {
		got, err := tt.reply.Interpret("u1")
		if got != tt.want || !errors.Is(err, tt.wantErr) {
			t.Errorf("%+v.Interpret(u1) = %v, %v; want %v, %v", tt.reply, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestNewRequestID(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		id := domain.NewRequestID()
		if len(id) != 36 || id[14] != '4' || !strings.ContainsRune("89ab", rune(id[19])) {
			t.Fatalf("%q is not a canonical UUID v4", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
}

// ordinaryIdentity is the shape NewUser sees on nearly every request: an ASCII
// user id and a plain dot-atom email.
var ordinaryIdentity = domain.Identity{UserID: "user-1234567890", Email: "someone.else+tag@mail.example.com"}

// TestNewUserAllocs pins the hot path at zero heap allocations. It does not
// call t.Parallel: AllocsPerRun reads process-wide counters, so it must run
// while no other test is allocating.
func TestNewUserAllocs(t *testing.T) {
	tests := []domain.Identity{
		ordinaryIdentity,
		{UserID: "u1", Email: "a@example.com"},
		{UserID: "42", Email: "First.Last-1@Sub.Example-Host.CO.UK"},
		{UserID: "x", Email: "o'brien!#$%&*/=?^_`{|}~@example.org"},
	}
	for _, id := range tests {
		allocs := testing.AllocsPerRun(200, func() {
			if _, err := domain.NewUser(id); err != nil {
				t.Fatalf("NewUser(%+v) = %v", id, err)
			}
		})
		if allocs != 0 {
			t.Errorf("NewUser(%+v) allocates %.1f times per call, want 0", id, allocs)
		}
	}
}

// BenchmarkNewUser measures the per-request validation: "ordinary" is the
// allocation-free fast path, "fallback" an email (non-ASCII) that still takes
// the net/mail parser.
func BenchmarkNewUser(b *testing.B) {
	benchmarks := []struct {
		name string
		id   domain.Identity
	}{
		{"ordinary", ordinaryIdentity},
		{"fallback", domain.Identity{UserID: "user-1234567890", Email: "jürgen.müller@exämple.de"}},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := domain.NewUser(bm.id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

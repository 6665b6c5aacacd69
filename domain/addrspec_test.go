package domain

import (
	"net/mail"
	"strings"
	"testing"
)

// referenceAddrSpec is the decision NewUser made before the fast path existed,
// written out here so the tests do not trust the code they check.
func referenceAddrSpec(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Name == "" && a.Address == s
}

// addrSpecSeeds are real-world shapes and the edges where net/mail has its own
// opinion: dots, specials, quoting, comments, whitespace, brackets, non-ASCII.
var addrSpecSeeds = []string{
	// Ordinary addresses.
	"a@b", "a@b.c", "a@example.com", "someone.else+tag@mail.example.com",
	"john.doe@example.com", "John.Doe@Example.COM", "jane_doe-99@sub.mail.example.co.uk",
	"first.middle.last@example.org", "user+mailbox/department=shipping@example.com",
	"customer/department=shipping@example.com", "$A12345@example.com", "!def!xyz%abc@example.com",
	"_somename@example.com", "o'brien@example.ie", "admin@localhost", "1234567890@123.456",
	"x@-", "x@-example-.com", "x@a--b.c", "x@123", "noreply@github.com", "user%host@example.net",
	"a!#$%&'*+-/=?^_`{|}~z@example.com", "{|}~@example.com", "`@example.com", "?^@x.y",
	"=@=", "a@b.c.d.e.f.g.h.i.j", "UPPER@CASE.ORG", "a.b.c@d.e.f",
	strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + ".com",
	strings.Repeat("a", 65) + "@" + strings.Repeat("b", 300),
	strings.Repeat("a.", 40) + "a@" + strings.Repeat("b.", 40) + "b",
	// Dots in the wrong places.
	".a@b.c", "a.@b.c", "a..b@c.d", "a@.b.c", "a@b.c.", "a@b..c", "a@.", ".@.", "..@..",
	".@a", "a@.", "a.b@c.", "@", "@@", "a@", "@b.c", "a@b@c", "a@@b", "a@b.c@d",
	// Specials, quoting and escaping.
	`"q"@example.com`, `""@example.com`, `"a b"@example.com`, `"a\"b"@example.com`,
	`"a\\b"@example.com`, `"a@b"@example.com`, `"a"b@example.com`, `a"b"@example.com`,
	`"unclosed@example.com`, `"\`, `a\@b.c`, `a\b@c.d`, "a,b@c.d", "a;b@c.d", "a:b@c.d",
	"a<b@c.d", "a>b@c.d", "a(b@c.d", "a)b@c.d", "a[b@c.d", "a]b@c.d", "a@b,c", "a@b;c",
	"a@b:c", "a@b<c", "a@b>c", "a@b(c", "a@b)c", "a@b\\c", `a@b"c"`, `"a"@"b"`,
	// Domain literals.
	"a@[127.0.0.1]", "a@[IPv6:::1]", "a@[::1]", "a@[1.2.3]", "a@[]", "a@[", "a@]", "a@[a]b",
	"a@[300.0.0.1]", "a@[2001:db8::1]", "a@b.[1.2.3.4]",
	// Comments, display names, angle brackets, groups and lists.
	"(x) a@b.c", "a@b.c (x)", "a@b.c(x)", "a(x)@b.c", "a@(x)b.c", "a@b.c (", "a@b.c ()",
	"Alice <a@b.c>", "<a@b.c>", "<a@b.c> ", "a <a@b.c>", `"A" <a@b.c>`, "g: a@b.c;", "g:;",
	"a@b.c, d@e.f", "a@b.c,", ",a@b.c", "=?utf-8?q?a?= <a@b.c>", "a@b.c (=?utf-8?q?x?=)",
	// Whitespace and control characters.
	" a@b.c", "a@b.c ", "a @b.c", "a@ b.c", "a@b .c", "\ta@b.c", "a@b.c\t", "a@\tb.c",
	"a@b.c\r\n", "a@b.c\n", "a\x00@b.c", "a@b.c\x00", "a\x7f@b.c", "a@b\x7f", "\x01@\x02",
	"a@b.c\u2028", "a\u0085@b.c", "",
	// Non-ASCII and invalid UTF-8.
	"ü@exämple.de", "jürgen.müller@exämple.de", "用户@例子.广告", "θσερ@εχαμπλε.ψομ",
	"a@b.c\xff", "\xff@b.c", "a@\xc3", "a\xc3@b.c", "a@b.\xef\xbf\xbd", "\xef\xbb\xbfa@b.c",
	"a@b.c\u00a0", "a\u200b@b.c",
}

// FuzzAddrSpec compares isAddrSpec with the net/mail reference on arbitrary
// strings, and checks that the allocation-free fast path never says yes where
// net/mail says no.
func FuzzAddrSpec(f *testing.F) {
	for _, s := range addrSpecSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := referenceAddrSpec(s)
		if fast := isDotAtomAddrSpec(s); fast && !want {
			t.Fatalf("fast path accepts %q, net/mail refuses it", s)
		}
		if got := isAddrSpec(s); got != want {
			t.Fatalf("isAddrSpec(%q) = %v, net/mail says %v", s, got, want)
		}
	})
}

// TestAddrSpecShortStrings compares isAddrSpec with net/mail on every string of
// up to four symbols from an alphabet of the characters that matter, so the
// edges (dots, '@', specials, space, non-ASCII, bad UTF-8) meet in every order.
func TestAddrSpecShortStrings(t *testing.T) {
	t.Parallel()
	alphabet := []string{"a", "Z", "0", "-", "+", ".", "@", `"`, " ", "(", ")", "<", "[", "]", `\`, ",", "é", "\xff"}
	var walk func(prefix string, depth int)
	walk = func(prefix string, depth int) {
		if got, want := isAddrSpec(prefix), referenceAddrSpec(prefix); got != want {
			t.Errorf("isAddrSpec(%q) = %v, net/mail says %v", prefix, got, want)
		}
		if fast := isDotAtomAddrSpec(prefix); fast && !referenceAddrSpec(prefix) {
			t.Errorf("fast path accepts %q, net/mail refuses it", prefix)
		}
		if depth == 0 {
			return
		}
		for _, sym := range alphabet {
			walk(prefix+sym, depth-1)
		}
	}
	walk("", 4)
}

// TestAddrSpecFastPath pins which inputs the fast path decides on its own:
// ordinary addresses must not drift to the allocating fallback, and anything
// outside ASCII dot-atom@dot-atom must be left to net/mail.
func TestAddrSpecFastPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    string
		fast bool
	}{
		{"a@b", true},
		{"someone.else+tag@mail.example.com", true},
		{"John.Doe@Example.COM", true},
		{"x@-example-.com", true},
		{"1234567890@123.456", true},
		{"a!#$%&'*+-/=?^_`{|}~z@example.com", true},
		{strings.Repeat("a", 65) + "@" + strings.Repeat("b", 300), true},
		{"", false},
		{"a", false},
		{"@b.c", false},
		{"a@", false},
		{".a@b.c", false},
		{"a.@b.c", false},
		{"a..b@c.d", false},
		{"a@b.c.", false},
		{"a@.b", false},
		{"a@b..c", false},
		{"a@b@c", false},
		{`"q"@example.com`, false},
		{"a@[127.0.0.1]", false},
		{"a@b.c (x)", false},
		{"<a@b.c>", false},
		{" a@b.c", false},
		{"a@ b.c", false},
		{"ü@exämple.de", false},
		{"a@b.c\xff", false},
	}
	for _, tt := range tests {
		if got := isDotAtomAddrSpec(tt.s); got != tt.fast {
			t.Errorf("isDotAtomAddrSpec(%q) = %v, want %v", tt.s, got, tt.fast)
		}
		if got, want := isAddrSpec(tt.s), referenceAddrSpec(tt.s); got != want {
			t.Errorf("isAddrSpec(%q) = %v, net/mail says %v", tt.s, got, want)
		}
	}
}

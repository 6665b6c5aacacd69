package domain

import (
	"net/mail"
	"strings"
)

// isAddrSpec reports whether s is a bare addr-spec (local@domain): net/mail
// parses it to exactly itself, so display names, angle brackets, comments and
// group syntax are all refused.
//
// NewUser runs on every request, and net/mail allocates a parser, the Address
// and its strings even for the plainest address. So the common shape is
// recognised first without allocating (isDotAtomAddrSpec), and only what falls
// outside it pays for net/mail. The fast path answers true only where net/mail
// does too, so the decision is net/mail's for every input; FuzzAddrSpec checks it.
func isAddrSpec(s string) bool {
	return isDotAtomAddrSpec(s) || parsesToItself(s)
}

// parsesToItself is the reference decision: net/mail parses s to an address
// without a display name whose addr-spec is s, byte for byte.
func parsesToItself(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Name == "" && a.Address == s
}

// isDotAtomAddrSpec reports whether s is dot-atom "@" dot-atom in ASCII, with
// nothing before, between or after: no space, comment, quote, bracket or
// domain literal. For such s net/mail consumes the local part and the domain
// as strict dot-atoms (no leading, trailing or double dot; see consumeAtom)
// and returns them joined by "@", which is s, with no display name. It neither
// limits lengths nor looks at label shapes, so neither does this. A false
// answer means "ask net/mail", not "refuse".
func isDotAtomAddrSpec(s string) bool {
	at := strings.IndexByte(s, '@')
	return at >= 0 && isDotAtom(s[:at]) && isDotAtom(s[at+1:])
}

// isDotAtom reports whether s is an RFC 5322 dot-atom-text of ASCII atext:
// one or more atoms joined by single dots.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			if s[i-1] == '.' { // i > 0: s[0] is not a dot
				return false
			}
		case !isASCIIAtext(c):
			return false
		}
	}
	return true
}

// isASCIIAtext reports whether c is RFC 5322 atext: a letter, a digit or one
// of !#$%&'*+-/=?^_`{|}~. For ASCII that is exactly what net/mail's isAtext
// accepts: the visible characters other than the specials ()<>[]:;@\,"
// and the dot.
func isASCIIAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

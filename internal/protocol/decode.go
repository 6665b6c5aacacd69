package protocol

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/ensure-user/ensure-user/domain"
)

// The decoders read a payload in one pass and accept exactly what
// json.Unmarshal accepts into Reply or Request, with the same values: the
// whole input must be valid JSON, the top-level value an object or null, and
// each member named like a field (matched as encoding/json matches names,
// case-insensitively) a string or null. They allocate only the strings they
// return; json.Unmarshal, which they replace, cost nine allocations a reply.

// statusPending is the status an Engine sends for a command it has accepted
// but not yet carried out; DecodeReply returns it without allocating, like
// the domain statuses.
const statusPending = "pending"

// maxDepth is the deepest nesting of arrays and objects encoding/json
// accepts, the top-level object included.
const maxDepth = 10000

// replyFields and requestFields are the JSON names of the fields of Reply and
// Request, indexed by the constants below. They are read only.
var (
	replyFields   = [...]string{"function", "requestId", "message", "status"}
	requestFields = [...]string{
		"function", "requestId", "userId", "userEmail", "replyTo", "sentAt", "traceparent", "tracestate",
	}
)

// Indexes into replyFields.
const (
	replyFunction = iota
	replyRequestID
	replyMessage
	replyStatus
)

// Indexes into requestFields.
const (
	requestFunction = iota
	requestRequestID
	requestUserID
	requestUserEmail
	requestReplyTo
	requestSentAt
	requestTraceParent
	requestTraceState
)

// DecodeReply parses a reply payload. It ignores unknown fields and accepts a
// missing status (legacy Engine) or function. It fails, wrapping
// ErrTooLarge, ErrMalformed or ErrNoRequestID, when the payload is larger
// than MaxReplyBytes, is not a JSON object with string fields, or has no
// requestId.
//
// It accepts exactly the payloads json.Unmarshal accepts into a Reply and
// returns the same strings: member names match case-insensitively, the last
// of duplicate members wins, null leaves a field as it was, and invalid UTF-8
// or lone surrogates become U+FFFD. Only the request id and the message
// allocate; the statuses ok, exists, error and pending do not.
func DecodeReply(b []byte) (domain.Reply, error) {
	if len(b) > MaxReplyBytes {
		return domain.Reply{}, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	var v [len(replyFields)]span
	if err := readObject(b, replyFields[:], v[:]); err != nil {
		return domain.Reply{}, err
	}
	if v[replyRequestID].start == v[replyRequestID].end {
		return domain.Reply{}, ErrNoRequestID
	}
	return domain.Reply{
		RequestID: v[replyRequestID].text(b),
		Message:   v[replyMessage].text(b),
		Status:    statusText(b, v[replyStatus]),
	}, nil
}

// statusText returns the status s of payload b. The statuses an Engine sends
// are returned as constants, so that they cost no allocation; one spelled
// with escapes is rare enough to be unquoted like any string.
func statusText(b []byte, s span) string {
	raw := b[s.start:s.end]
	switch {
	case s.escaped:
		return unquote(raw)
	case string(raw) == domain.StatusOK:
		return domain.StatusOK
	case string(raw) == domain.StatusExists:
		return domain.StatusExists
	case string(raw) == domain.StatusError:
		return domain.StatusError
	case string(raw) == statusPending:
		return statusPending
	}
	return string(raw)
}

// DecodeReplyString is DecodeReply of a payload held as a string (as
// rueidis hands out stream entries), without copying it: the reader only
// reads, and the strings it returns are copies of their own.
func DecodeReplyString(s string) (domain.Reply, error) {
	return DecodeReply(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// DecodeRequest parses a request payload, for the Engine side. Like
// DecodeReply it ignores unknown fields, reads the payload as json.Unmarshal
// reads it into a Request, and fails, wrapping ErrMalformed or
// ErrNoRequestID, when the payload is not a JSON object with string fields or
// has no requestId.
func DecodeRequest(b []byte) (Request, error) {
	var v [len(requestFields)]span
	if err := readObject(b, requestFields[:], v[:]); err != nil {
		return Request{}, err
	}
	if v[requestRequestID].start == v[requestRequestID].end {
		return Request{}, ErrNoRequestID
	}
	return Request{
		Function:    v[requestFunction].text(b),
		RequestID:   v[requestRequestID].text(b),
		UserID:      v[requestUserID].text(b),
		UserEmail:   v[requestUserEmail].text(b),
		ReplyTo:     v[requestReplyTo].text(b),
		SentAt:      v[requestSentAt].text(b),
		TraceParent: v[requestTraceParent].text(b),
		TraceState:  v[requestTraceState].text(b),
	}, nil
}

// span is where the contents of a JSON string, between its quotes, lie in
// the payload. The zero span is the empty string.
type span struct {
	start, end int
	// escaped is true when the contents hold escape sequences or invalid
	// UTF-8, and so differ from the value.
	escaped bool
}

// text returns the value of the string s of payload b.
func (s span) text(b []byte) string {
	raw := b[s.start:s.end]
	if s.escaped {
		return unquote(raw)
	}
	return string(raw)
}

// reader reads one JSON payload from b, from offset i on.
type reader struct {
	b []byte
	i int
}

// readObject reads b as json.Unmarshal reads it into a struct whose string
// fields have the JSON names names: vals[k] is set to the last string value
// of a member whose name matches names[k], and left alone for a member whose
// value is null. It fails, wrapping ErrMalformed, when b is not valid JSON,
// its top-level value is neither an object nor null, or a member named like
// a field holds anything but a string or null.
func readObject(b []byte, names []string, vals []span) error {
	r := reader{b: b}
	r.space()
	switch r.peek() {
	case '{':
		r.i++
		if err := r.members(names, vals); err != nil {
			return err
		}
	case 'n':
		// json.Unmarshal leaves the struct as it is for a null.
		if err := r.literal("null"); err != nil {
			return err
		}
	default:
		// Any other JSON value is a type error for json.Unmarshal, and
		// anything else a syntax error.
		return r.fail("want a JSON object")
	}
	r.space()
	if r.i != len(b) {
		return r.fail("data after the top-level value")
	}
	return nil
}

// members reads the members of the top-level object and its closing brace.
func (r *reader) members(names []string, vals []span) error {
	r.space()
	if r.peek() == '}' {
		r.i++
		return nil
	}
	for {
		r.space()
		if r.peek() != '"' {
			return r.fail("want a member name")
		}
		key, err := r.str()
		if err != nil {
			return err
		}
		if err := r.colon(); err != nil {
			return err
		}
		r.space()
		if k := match(r.b[key.start:key.end], names); k < 0 {
			if err := r.skip(1); err != nil {
				return err
			}
		} else {
			switch r.peek() {
			case '"':
				v, err := r.str()
				if err != nil {
					return err
				}
				vals[k] = v
			case 'n':
				if err := r.literal("null"); err != nil {
					return err
				}
			default:
				return r.fail(names[k] + " is not a string")
			}
		}
		r.space()
		switch r.peek() {
		case ',':
			r.i++
		case '}':
			r.i++
			return nil
		default:
			return r.fail("want ',' or '}' after a member")
		}
	}
}

// skip reads one JSON value of any type without keeping it, checking it as
// encoding/json does, depth being the number of arrays and objects open
// around it. It keeps its own stack, one bit per open container, so that
// deep nesting costs neither recursion nor, up to 256 levels, allocation.
func (r *reader) skip(depth int) error {
	var inline [4]uint64
	objects := inline[:] // bit n is set when the n-th open container is an object
	open := 0
	for {
		// A value starts here.
		r.space()
		switch r.peek() {
		case '{', '[':
			if depth+open+1 > maxDepth {
				return r.fail("nested too deeply")
			}
			isObject := r.b[r.i] == '{'
			r.i++
			if open>>6 == len(objects) {
				objects = append(objects, 0)
			}
			if isObject {
				objects[open>>6] |= 1 << (open & 63)
			} else {
				objects[open>>6] &^= 1 << (open & 63)
			}
			open++
			r.space()
			switch {
			case isObject && r.peek() == '}', !isObject && r.peek() == ']':
				r.i++
				open--
			case isObject:
				if err := r.name(); err != nil {
					return err
				}
				continue
			default:
				continue
			}
		case '"':
			if _, err := r.str(); err != nil {
				return err
			}
		case 't':
			if err := r.literal("true"); err != nil {
				return err
			}
		case 'f':
			if err := r.literal("false"); err != nil {
				return err
			}
		case 'n':
			if err := r.literal("null"); err != nil {
				return err
			}
		default:
			if err := r.number(); err != nil {
				return err
			}
		}
		// A value ended: close containers until one goes on.
	next:
		for {
			if open == 0 {
				return nil
			}
			isObject := objects[(open-1)>>6]&(1<<((open-1)&63)) != 0
			r.space()
			switch c := r.peek(); {
			case c == ',':
				r.i++
				if isObject {
					r.space()
					if err := r.name(); err != nil {
						return err
					}
				}
				break next
			case isObject && c == '}', !isObject && c == ']':
				r.i++
				open--
			default:
				return r.fail("want ',' or the end of an array or object")
			}
		}
	}
}

// name reads a member name of a skipped object and the colon after it.
func (r *reader) name() error {
	if r.peek() != '"' {
		return r.fail("want a member name")
	}
	if _, err := r.str(); err != nil {
		return err
	}
	return r.colon()
}

// colon reads the colon after a member name, and the space around it.
func (r *reader) colon() error {
	r.space()
	if r.peek() != ':' {
		return r.fail("want ':' after a member name")
	}
	r.i++
	return nil
}

// str reads a JSON string, checking it as encoding/json does: no control
// characters, and only the escapes \" \\ \/ \b \f \n \r \t and \uXXXX.
// Invalid UTF-8 is allowed; it becomes U+FFFD when the string is unquoted.
func (r *reader) str() (span, error) {
	r.i++ // opening quote
	start, escaped := r.i, false
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			s := span{start: start, end: r.i, escaped: escaped}
			r.i++
			return s, nil
		case c == '\\':
			escaped = true
			r.i++
			switch r.peek() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				r.i++
			case 'u':
				r.i++
				for range 4 {
					if !isHex(r.peek()) {
						return span{}, r.fail("invalid \\u escape")
					}
					r.i++
				}
			default:
				return span{}, r.fail("invalid escape")
			}
		case c < ' ':
			return span{}, r.fail("control character in a string")
		case c < utf8.RuneSelf:
			r.i++
		default:
			rr, size := utf8.DecodeRune(r.b[r.i:])
			if rr == utf8.RuneError && size == 1 {
				escaped = true
			}
			r.i += size
		}
	}
	return span{}, r.fail("unterminated string")
}

// number reads a JSON number: an optional minus, an integer without leading
// zeros, an optional fraction and an optional exponent. What follows it is
// checked by the caller.
func (r *reader) number() error {
	if r.peek() == '-' {
		r.i++
	}
	switch c := r.peek(); {
	case c == '0':
		r.i++
	case '1' <= c && c <= '9':
		r.digits()
	default:
		return r.fail("want a value")
	}
	if r.peek() == '.' {
		r.i++
		if !isDigit(r.peek()) {
			return r.fail("want a digit after the decimal point")
		}
		r.digits()
	}
	if c := r.peek(); c == 'e' || c == 'E' {
		r.i++
		if c := r.peek(); c == '+' || c == '-' {
			r.i++
		}
		if !isDigit(r.peek()) {
			return r.fail("want a digit in the exponent")
		}
		r.digits()
	}
	return nil
}

// digits reads decimal digits.
func (r *reader) digits() {
	for isDigit(r.peek()) {
		r.i++
	}
}

// literal reads lit, one of true, false and null. What follows it is checked
// by the caller.
func (r *reader) literal(lit string) error {
	if len(r.b)-r.i < len(lit) || string(r.b[r.i:r.i+len(lit)]) != lit {
		return r.fail("want " + lit)
	}
	r.i += len(lit)
	return nil
}

// space skips JSON white space.
func (r *reader) space() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// peek returns the next byte, or 0 at the end of the input: a NUL is never
// valid outside a string, where str checks for the end itself.
func (r *reader) peek() byte {
	if r.i < len(r.b) {
		return r.b[r.i]
	}
	return 0
}

// fail returns the error for a payload refused at the current offset.
func (r *reader) fail(what string) error {
	if r.i >= len(r.b) {
		return fmt.Errorf("%w: unexpected end of JSON input (%s)", ErrMalformed, what)
	}
	return fmt.Errorf("%w: %s at offset %d, found %q", ErrMalformed, what, r.i, r.b[r.i])
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool { return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

// match returns the index of the name in names that key, the contents of a
// checked JSON string, selects in encoding/json: the name equal to the
// unquoted key or else one equal to it under Unicode simple case folding
// (so "RequestID" and "requeſtId" select requestId). It returns -1 if there
// is none. encoding/json prefers an exact match over a folded one; names
// here differ in their folded forms, so at most one of them can match.
func match(key []byte, names []string) int {
	for k, name := range names {
		if string(key) == name {
			return k
		}
	}
	for k, name := range names {
		if foldEqual(key, name) {
			return k
		}
	}
	return -1
}

// foldEqual reports whether the checked JSON string contents key, once
// unquoted, equal the ASCII name under simple case folding, as
// encoding/json's foldName compares them.
func foldEqual(key []byte, name string) bool {
	if len(key) < len(name) {
		return false // every rune of the key takes at least one byte
	}
	j := 0
	for i := 0; i < len(key); {
		rr, n := nextRune(key, i)
		i += n
		if j == len(name) || foldRune(rr) != foldRune(rune(name[j])) {
			return false
		}
		j++
	}
	return j == len(name)
}

// foldRune returns the smallest rune of the case-folding orbit of rr, as
// encoding/json folds member names.
func foldRune(rr rune) rune {
	if rr < utf8.RuneSelf {
		if 'a' <= rr && rr <= 'z' {
			rr -= 'a' - 'A'
		}
		return rr
	}
	for {
		next := unicode.SimpleFold(rr)
		if next <= rr {
			return next
		}
		rr = next
	}
}

// unquote returns the value of the checked JSON string contents raw, with one
// allocation.
func unquote(raw []byte) string {
	n := 0
	for i := 0; i < len(raw); {
		rr, w := nextRune(raw, i)
		i += w
		n += utf8.RuneLen(rr)
	}
	var sb strings.Builder
	sb.Grow(n)
	for i := 0; i < len(raw); {
		rr, w := nextRune(raw, i)
		i += w
		if rr < utf8.RuneSelf {
			sb.WriteByte(byte(rr))
		} else {
			sb.WriteRune(rr)
		}
	}
	return sb.String()
}

// nextRune decodes the rune at raw[i:], checked JSON string contents, and
// returns it with the number of bytes it takes, as encoding/json unquotes:
// escapes are decoded, a \u escape of a high surrogate followed by one of a
// low surrogate is one rune, and any other surrogate and each byte of invalid
// UTF-8 is U+FFFD.
func nextRune(raw []byte, i int) (rune, int) {
	c := raw[i]
	if c < utf8.RuneSelf {
		if c != '\\' {
			return rune(c), 1
		}
		switch raw[i+1] {
		case 'b':
			return '\b', 2
		case 'f':
			return '\f', 2
		case 'n':
			return '\n', 2
		case 'r':
			return '\r', 2
		case 't':
			return '\t', 2
		case 'u':
			rr := hex4(raw[i+2 : i+6])
			if !utf16.IsSurrogate(rr) {
				return rr, 6
			}
			if len(raw) >= i+12 && raw[i+6] == '\\' && raw[i+7] == 'u' {
				if pair := utf16.DecodeRune(rr, hex4(raw[i+8:i+12])); pair != utf8.RuneError {
					return pair, 12
				}
			}
			return utf8.RuneError, 6
		default: // '"', '\\', '/'
			return rune(raw[i+1]), 2
		}
	}
	return utf8.DecodeRune(raw[i:])
}

// hex4 decodes four checked hexadecimal digits.
func hex4(h []byte) rune {
	var rr rune
	for _, c := range h {
		switch {
		case c <= '9':
			c -= '0'
		case c <= 'F':
			c -= 'A' - 10
		default:
			c -= 'a' - 10
		}
		rr = rr<<4 | rune(c)
	}
	return rr
}

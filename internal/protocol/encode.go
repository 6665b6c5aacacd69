package protocol

import (
	"time"
	"unicode/utf8"

	"github.com/ensure-user/ensure-user/domain"
)

// maxSentAtLen bounds the length of a time formatted with time.RFC3339Nano:
// a signed twelve-digit year (the most a time.Time holds), nanoseconds and a
// numeric zone take 44 bytes. EncodeCommand sizes its result with it; were a
// time ever longer, it would only cost a second allocation.
const maxSentAtLen = 48

// AppendCommand appends the JSON payload of cmd for the request stream, as
// EncodeCommand returns it, to dst and returns the extended buffer. It
// allocates only when dst lacks the capacity, so a caller that reuses its
// buffer encodes without allocating.
//
// The bytes are those encoding/json writes for NewRequest(cmd, replyTo) with
// HTML escaping off: the fields of Request in order, traceparent and
// tracestate omitted when empty, and strings escaped as encoding/json
// escapes them (invalid UTF-8 becomes \ufffd, U+2028 and U+2029 are escaped,
// <, > and & are not).
func AppendCommand(dst []byte, cmd domain.Command, replyTo string) []byte {
	dst = append(dst, `{"function":"`+FunctionCreateUser+`","requestId":`...)
	dst = appendQuoted(dst, cmd.RequestID)
	dst = append(dst, `,"userId":`...)
	dst = appendQuoted(dst, cmd.User.ID)
	dst = append(dst, `,"userEmail":`...)
	dst = appendQuoted(dst, cmd.User.Email)
	dst = append(dst, `,"replyTo":`...)
	dst = appendQuoted(dst, replyTo)
	// RFC 3339 needs no escaping: digits, '-', '+', ':', '.', 'T' and 'Z'.
	dst = append(dst, `,"sentAt":"`...)
	dst = cmd.SentAt.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, '"')
	if cmd.Trace.Parent != "" {
		dst = append(dst, `,"traceparent":`...)
		dst = appendQuoted(dst, cmd.Trace.Parent)
	}
	if cmd.Trace.State != "" {
		dst = append(dst, `,"tracestate":`...)
		dst = appendQuoted(dst, cmd.Trace.State)
	}
	return append(dst, '}')
}

// commandLen returns an upper bound, exact but for the time, of the length
// of the payload AppendCommand writes for cmd and replyTo.
func commandLen(cmd domain.Command, replyTo string) int {
	n := len(`{"function":"`+FunctionCreateUser+`","requestId":,"userId":,"userEmail":,"replyTo":,"sentAt":""}`) +
		quotedLen(cmd.RequestID) + quotedLen(cmd.User.ID) + quotedLen(cmd.User.Email) + quotedLen(replyTo) +
		maxSentAtLen
	if cmd.Trace.Parent != "" {
		n += len(`,"traceparent":`) + quotedLen(cmd.Trace.Parent)
	}
	if cmd.Trace.State != "" {
		n += len(`,"tracestate":`) + quotedLen(cmd.Trace.State)
	}
	return n
}

// AppendReply appends the JSON payload of r for the reply stream, as
// EncodeReply returns it, to dst and returns the extended buffer. Like
// AppendCommand it allocates only when dst lacks the capacity, and writes
// the bytes encoding/json writes for r with HTML escaping off (status
// omitted when empty).
func AppendReply(dst []byte, r Reply) []byte {
	dst = append(dst, `{"function":`...)
	dst = appendQuoted(dst, r.Function)
	dst = append(dst, `,"requestId":`...)
	dst = appendQuoted(dst, r.RequestID)
	dst = append(dst, `,"message":`...)
	dst = appendQuoted(dst, r.Message)
	if r.Status != "" {
		dst = append(dst, `,"status":`...)
		dst = appendQuoted(dst, r.Status)
	}
	return append(dst, '}')
}

// replyLen returns the length of the payload AppendReply writes for r.
func replyLen(r Reply) int {
	n := len(`{"function":,"requestId":,"message":}`) +
		quotedLen(r.Function) + quotedLen(r.RequestID) + quotedLen(r.Message)
	if r.Status != "" {
		n += len(`,"status":`) + quotedLen(r.Status)
	}
	return n
}

// hex is the alphabet of \u escapes, lower case as in encoding/json.
const hex = "0123456789abcdef"

// appendQuoted appends s as a JSON string the way encoding/json does with
// HTML escaping off: '"' and '\\' are escaped with a backslash, control
// characters as \b, \f, \n, \r, \t or \u00XX, each byte of invalid UTF-8 as
// \ufffd, U+2028 and U+2029 as \u2028 and \u2029, and everything else is
// copied.
func appendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// quotedLen returns the length of appendQuoted(nil, s).
func quotedLen(s string) int {
	n := len(s) + 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c >= ' ' && c != '"' && c != '\\':
			case c == '"', c == '\\', c == '\b', c == '\f', c == '\n', c == '\r', c == '\t':
				n++
			default:
				n += len(`\u00XX`) - 1
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += len(`\ufffd`) - 1
		case r == '\u2028' || r == '\u2029':
			n += len(`\u2028`) - size
		}
		i += size
	}
	return n
}

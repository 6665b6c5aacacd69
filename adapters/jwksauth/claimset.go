package jwksauth

import (
	"encoding/json"
)

// claimSet is the top-level members of a claims object: each name with the
// JSON text of its value, in the order they appear. It reads like the
// map[string]json.RawMessage encoding/json would decode - a name given twice
// has its last value, names with escapes are compared decoded - without
// building the map: one validation pass and one walk, no copies.
type claimSet struct{ members []member }

type member struct {
	name  []byte // decoded
	value []byte // the value's JSON text, without the blanks around it
}

// get returns the value of name, or nil when the object has no such member.
func (c claimSet) get(name string) json.RawMessage {
	for i := len(c.members) - 1; i >= 0; i-- {
		if string(c.members[i].name) == name {
			return c.members[i].value
		}
	}
	return nil
}

// readClaims indexes payload, which must be one JSON object, appending its
// members to buf. It reports false for anything that is not valid JSON or
// not an object, as json.Unmarshal into a map does. The values alias
// payload.
func readClaims(payload []byte, buf []member) (claimSet, bool) {
	if !json.Valid(payload) {
		return claimSet{}, false
	}
	// From here on payload is valid JSON: the walk only finds boundaries.
	i := skipBlanks(payload, 0)
	if payload[i] != '{' {
		return claimSet{}, false
	}
	i = skipBlanks(payload, i+1)
	for payload[i] != '}' {
		end := endOfString(payload, i)
		name := payload[i+1 : end-1]
		if !plain(name) {
			var s string
			if json.Unmarshal(payload[i:end], &s) != nil {
				return claimSet{}, false // unreachable after json.Valid
			}
			name = []byte(s)
		}
		i = skipBlanks(payload, end) // at ':'
		i = skipBlanks(payload, i+1) // at the value
		end = endOfValue(payload, i) // just after it
		buf = append(buf, member{name: name, value: payload[i:end]})
		i = skipBlanks(payload, end) // at ',' or '}'
		if payload[i] == ',' {
			i = skipBlanks(payload, i+1)
		}
	}
	return claimSet{members: buf}, true
}

// skipBlanks returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipBlanks(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// endOfString returns the index just after the JSON string starting at i.
func endOfString(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++ // the escaped byte, which may be a quote
		}
	}
	return i + 1
}

// endOfValue returns the index just after the JSON value starting at i.
func endOfValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return endOfString(b, i)
	case '{', '[':
		depth := 0
		for {
			switch b[i] {
			case '"':
				i = endOfString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	default: // number, true, false, null
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
		return i
	}
}

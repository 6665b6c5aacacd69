// Package setting is what an adapter's configuration type and the config
// package share: an adapter validates its own settings and reports each
// problem by the field it concerns (Problems); config, which maps variables
// and flags into those fields, names the variable in the message. Secrets
// and redacted URLs live here too, so that adapters need not import config.
package setting

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Problem is one invalid setting: the field of the adapter's Config, and
// what is wrong with its value.
type Problem struct {
	Field   string
	Message string
}

// Problems are every problem an adapter's Validate found; nil when none.
type Problems []Problem

// Add records a problem with field.
func (p *Problems) Add(field, format string, args ...any) {
	*p = append(*p, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}

// Err returns p as an error, nil when there is no problem.
func (p Problems) Err() error {
	if len(p) == 0 {
		return nil
	}
	return p
}

// Error lists the problems as "Field: message", one per line.
func (p Problems) Error() string {
	lines := make([]string, len(p))
	for i, q := range p {
		lines[i] = q.Field + ": " + q.Message
	}
	return strings.Join(lines, "\n")
}

// Secret is a configuration value that must never appear in logs. Its
// String method redacts it; Reveal returns the value for the one place that
// needs it.
type Secret string

// String redacts the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString redacts the secret in %#v.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// MarshalText redacts the secret in JSON and zap's reflection encoder.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret itself, for the one adapter that needs it.
func (s Secret) Reveal() string { return string(s) }

// RedactedURL returns u with any password replaced, for logs.
func RedactedURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "[unparsable URL]"
	}
	return p.Redacted()
}

// IsLoopbackHost reports whether host names the local machine: localhost or
// a loopback IP literal.
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

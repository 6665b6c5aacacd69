package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Parser reads declared variables through a Lookup, applies their defaults,
// and collects one error per bad value, naming the variable. Load uses it for
// the service, and the reference Engine for its own variables.
type Parser struct {
	lookup Lookup
	vars   []Var
	errs   []error
	seen   map[string]string
}

// NewParser returns a parser of vars reading through lookup.
func NewParser(lookup Lookup, vars []Var) *Parser {
	return &Parser{lookup: lookup, vars: vars, seen: map[string]string{}}
}

// Errs returns the problems found so far.
func (p *Parser) Errs() []error { return p.errs }

// Seen returns every variable read with its value in force; values of the
// variables in redact go through their function first.
func (p *Parser) Seen(redact map[string]func(string) string) map[string]string {
	out := make(map[string]string, len(p.seen))
	for k, v := range p.seen {
		if f := redact[k]; f != nil && v != "" {
			v = f(v)
		}
		out[k] = v
	}
	return out
}

// Str returns the variable's value, or its default when it is not set. It
// panics for an undeclared variable: a programming error any test catches.
func (p *Parser) Str(name string) string {
	v, ok := p.lookup(name)
	if !ok {
		i := p.index(name)
		if i < 0 {
			panic("config: undeclared variable " + name)
		}
		v = p.vars[i].Default
	}
	p.seen[name] = v
	return v
}

func (p *Parser) index(name string) int {
	for i, v := range p.vars {
		if v.Name == name {
			return i
		}
	}
	return -1
}

func (p *Parser) fail(name, raw, want string) {
	p.errs = append(p.errs, fmt.Errorf("%s: %q is not %s", name, raw, want))
}

// Duration parses a Go duration (5s, 10m).
func (p *Parser) Duration(name string) time.Duration {
	raw := p.Str(name)
	d, err := time.ParseDuration(raw)
	if err != nil {
		p.fail(name, raw, "a duration (e.g. 5s, 10m)")
	}
	return d
}

// Bool parses true or false (and strconv.ParseBool's other spellings).
func (p *Parser) Bool(name string) bool {
	raw := p.Str(name)
	b, err := strconv.ParseBool(raw)
	if err != nil {
		p.fail(name, raw, "a boolean (true or false)")
	}
	return b
}

// Int parses a decimal integer.
func (p *Parser) Int(name string) int {
	raw := p.Str(name)
	n, err := strconv.Atoi(raw)
	if err != nil {
		p.fail(name, raw, "an integer")
	}
	return n
}

// Ratio parses a number; range checks are the caller's.
func (p *Parser) Ratio(name string) float64 {
	raw := p.Str(name)
	f, err := strconv.ParseFloat(raw, 64)
	if err != nil || math.IsNaN(f) {
		p.fail(name, raw, "a number between 0 and 1")
	}
	return f
}

// List splits a comma-separated value, dropping blanks and empty items.
func (p *Parser) List(name string) []string {
	var out []string
	for _, s := range strings.Split(p.Str(name), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

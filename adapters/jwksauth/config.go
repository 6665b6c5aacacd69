package jwksauth

import (
	"net/url"
	"slices"
	"time"

	"github.com/ensure-user/ensure-user/internal/setting"
)

// Limits the configuration is held to.
const (
	MaxLeeway       = 5 * time.Minute
	MinHS256Secret  = 32
	WildcardDisable = "*" // an Issuer or Audience that turns its check off
)

// Config is the token verifier's configuration: the JWKS, the legacy HS256
// secret, and the claim rules.
type Config struct {
	JWKSURL              string         // https://, http:// (loopback unless AllowHTTP) or file://
	Refresh              time.Duration  // key set refresh interval
	MinRefresh           time.Duration  // unknown-kid refresh rate limit, start-up backoff cap
	AllowHTTP            bool           // allow http:// for a non-loopback host
	CAFile               string         // PEM roots for an https:// JWKSURL
	Timeout              time.Duration  // bound of one key set fetch
	HS256Secret          setting.Secret // legacy tokens' secret, at least MinHS256Secret bytes
	Issuer               string         // WildcardDisable turns the check off
	Audience             string         // WildcardDisable turns the check off
	Algorithms           []string       // empty: the algorithms the keys imply
	Leeway               time.Duration  // at most MaxLeeway
	RequireExp           bool
	UserIDClaims         []string // first present non-null wins
	EmailClaim           string
	RequireVerifiedEmail bool
}

// Validate reports every problem with c, by field.
func (c Config) Validate() setting.Problems {
	var p setting.Problems
	if c.JWKSURL == "" && c.HS256Secret == "" {
		p.Add("JWKSURL", "set a JWKS URL, an HS256 secret, or both")
	}
	if c.JWKSURL != "" {
		if msg := checkJWKSURL(c.JWKSURL, c.AllowHTTP); msg != "" {
			p.Add("JWKSURL", "%s", msg)
		}
		if c.Issuer == "" {
			p.Add("Issuer", "required with a JWKS URL (use * to disable the check explicitly)")
		}
		if c.Audience == "" {
			p.Add("Audience", "required with a JWKS URL (use * to disable the check explicitly)")
		}
		if c.Refresh <= 0 {
			p.Add("Refresh", "must be positive")
		}
		if c.MinRefresh <= 0 {
			p.Add("MinRefresh", "must be positive")
		}
		if c.Timeout <= 0 {
			p.Add("Timeout", "must be positive")
		}
	}
	if c.HS256Secret != "" && len(c.HS256Secret) < MinHS256Secret {
		p.Add("HS256Secret", "must be at least %d bytes", MinHS256Secret)
	}
	if c.Leeway < 0 || c.Leeway > MaxLeeway {
		p.Add("Leeway", "must be between 0 and %s", MaxLeeway)
	}
	for _, alg := range c.Algorithms {
		if alg != "HS256" && !isAsymmetric(alg) {
			p.Add("Algorithms", "unsupported algorithm %q", alg)
		}
	}
	if len(c.UserIDClaims) == 0 || slices.Contains(c.UserIDClaims, "") {
		p.Add("UserIDClaims", "must name at least one claim, none empty")
	}
	if c.EmailClaim == "" {
		p.Add("EmailClaim", "must not be empty")
	}
	return p
}

// checkJWKSURL returns what is wrong with a JWKS URL, "" when nothing.
func checkJWKSURL(raw string, allowHTTP bool) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "not a URL: " + err.Error()
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !allowHTTP && !setting.IsLoopbackHost(u.Hostname()) {
			return "http:// is allowed only for loopback hosts unless JWKS_ALLOW_HTTP=true"
		}
	case "file":
		if u.Path == "" {
			return "file:// URL without a path"
		}
		return ""
	default:
		return "scheme must be https, http or file, not " + `"` + u.Scheme + `"`
	}
	if u.Host == "" {
		return "missing host"
	}
	return ""
}

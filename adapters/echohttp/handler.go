package echohttp

import (
	"context"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/domain/ensureuser"
)

// EnsureUser is the use case as the handler needs it (declared here, where it
// is consumed). *ensureuser.UseCase and its decorators implement it. Start
// runs a request up to the Engine's reply on the caller's goroutine; Wait
// waits for that reply, in place or on a parked connection's goroutine.
// Wait is called exactly once for each Pending Start returned without an
// error.
type EnsureUser interface {
	Start(ctx context.Context, in ensureuser.Input) (ensureuser.Pending, error)
	Wait(ctx context.Context, p *ensureuser.Pending) (ensureuser.Result, error)
}

// ensureUser handles POST /api/v1/auth/ensure-user. It takes no body: the
// identity comes from the bearer token alone.
func (s *Server) ensureUser(c echo.Context) error {
	r := c.Request()
	in := ensureuser.Input{
		Token: BearerToken(r.Header.Get(echo.HeaderAuthorization)),
		Trace: domain.Trace{
			Parent: traceHeader(r.Header.Get("Traceparent")),
			State:  traceHeader(r.Header.Get("Tracestate")),
		},
	}
	x := exchangeOf(c)
	if x == nil {
		x = &exchange{} // served without ServeHTTP: nothing reads it
	}
	p, err := s.uc.Start(r.Context(), in)
	x.res = p.Result
	if err != nil {
		return err
	}
	return s.respond(c, x, p)
}

// BearerToken returns the token of an Authorization header value of the form
// "Bearer <token>", the scheme matched case-insensitively (RFC 7235). It
// returns "" for a missing or empty header, another scheme, or a scheme
// without a token. The token itself is returned untouched apart from the
// surrounding blanks; the verifier refuses anything that is not a JWS.
func BearerToken(header string) string {
	const scheme = "bearer"
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return ""
	}
	rest := header[len(scheme):]
	if rest[0] != ' ' && rest[0] != '\t' {
		return "" // "Bearerx...": another scheme
	}
	return strings.Trim(rest, " \t")
}

// traceHeader keeps a W3C trace header only when it is short and printable,
// so nothing odd travels to the Engine. The Engine validates the format.
func traceHeader(v string) string {
	if len(v) > 512 || !visibleASCII(v, true) {
		return ""
	}
	return v
}

// visibleASCII reports whether s holds only printable ASCII (and spaces when
// allowed).
func visibleASCII(s string, spaces bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x21 || c > 0x7e) && !(spaces && c == ' ') {
			return false
		}
	}
	return true
}

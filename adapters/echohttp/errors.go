package echohttp

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/ensure-user/ensure-user/domain"
)

// answer is one fixed HTTP answer: status, JSON body and extra headers.
type answer struct {
	status  int
	body    []byte
	outcome string // for logs and metrics
	header  [][2]string
}

// The answers of the contract, byte for byte. Bodies are constants so the
// hot path marshals nothing.
var (
	ansConfirmed = answer{status: http.StatusOK, outcome: "confirmed",
		body: []byte(`{"success":true,"message":"User ensured in Engine and DBStorage"}`)}
	ansInitiated = answer{status: http.StatusAccepted, outcome: "initiated",
		body: []byte(`{"success":true,"message":"User creation initiated"}`)}
	ansNoToken = answer{status: http.StatusUnauthorized, outcome: "no_token",
		body:   []byte(`{"error":"No token provided."}`),
		header: [][2]string{{"WWW-Authenticate", "Bearer"}}}
	ansInvalidToken = answer{status: http.StatusUnauthorized, outcome: "invalid_token",
		body:   []byte(`{"error":"Invalid or expired token."}`),
		header: [][2]string{{"WWW-Authenticate", `Bearer error="invalid_token"`}}}
	ansInvalidPayload = answer{status: http.StatusBadRequest, outcome: "invalid_payload",
		body: []byte(`{"error":"Invalid token payload."}`)}
	ansEngineFailed = answer{status: http.StatusBadGateway, outcome: "engine_failed",
		body: []byte(`{"error":"Failed to ensure user, but request was sent to Engine"}`)}
	ansNotSent = answer{status: http.StatusServiceUnavailable, outcome: "not_sent",
		body:   []byte(`{"error":"Engine unavailable: user creation request was not sent."}`),
		header: [][2]string{{"Retry-After", "1"}}}
	ansBusy = answer{status: http.StatusServiceUnavailable, outcome: "busy",
		body:   []byte(`{"error":"Service busy: user creation request was not sent."}`),
		header: [][2]string{{"Retry-After", "1"}}}
	ansVerifierUnavailable = answer{status: http.StatusServiceUnavailable, outcome: "verifier_unavailable",
		body:   []byte(`{"error":"Token verification unavailable."}`),
		header: [][2]string{{"Retry-After", "5"}}}
	// ansClientGone is logged, not seen: the client hung up while waiting.
	// 499 is nginx's convention for it.
	ansClientGone = answer{status: 499, outcome: "client_gone",
		body: []byte(`{"error":"Client closed the request."}`)}
	ansInternal = answer{status: http.StatusInternalServerError, outcome: "internal_error",
		body: []byte(`{"error":"Internal server error."}`)}
)

// domainAnswers maps each domain sentinel to its answer: the one place where
// domain errors become HTTP.
var domainAnswers = []struct {
	err error
	ans *answer
}{
	{domain.ErrNoToken, &ansNoToken},
	{domain.ErrInvalidToken, &ansInvalidToken},
	{domain.ErrInvalidPayload, &ansInvalidPayload},
	{domain.ErrVerifierUnavailable, &ansVerifierUnavailable},
	{domain.ErrBusy, &ansBusy},
	{domain.ErrBusUnavailable, &ansNotSent},
	{domain.ErrEngineFailed, &ansEngineFailed},
	{context.Canceled, &ansClientGone},
}

// answerFor maps any error a handler returns to its answer. Unknown errors are
// 500 with a generic body; the error itself goes only to the log.
func answerFor(err error) answer {
	for _, m := range domainAnswers {
		if errors.Is(err, m.err) {
			return *m.ans
		}
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg := http.StatusText(he.Code)
		if he.Code < 500 {
			if s, ok := he.Message.(string); ok && s != "" {
				msg = s
			}
		}
		if msg == "" {
			msg = "Error"
		}
		return answer{status: he.Code, outcome: "http_error", body: jsonError(msg)}
	}
	return ansInternal
}

// jsonError renders {"error": msg}. msg comes from our own code or
// http.StatusText, never from the request, but is escaped all the same.
func jsonError(msg string) []byte {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	return b
}

// write sends a on c with the headers every answer of this service carries.
func (a answer) write(c echo.Context) error {
	h := c.Response().Header()
	h.Set(echo.HeaderCacheControl, "no-store")
	for _, kv := range a.header {
		h.Set(kv[0], kv[1])
	}
	return c.Blob(a.status, echo.MIMEApplicationJSON, a.body)
}

package echohttp

import (
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
	header  []headerValue
}

// headerValue is a response header in the form net/http keeps it: the
// canonical name and a value slice that every answer shares, so that setting
// it allocates nothing. net/http only reads these slices.
type headerValue struct {
	name  string
	value []string
}

func header(name, value string) headerValue {
	return headerValue{http.CanonicalHeaderKey(name), []string{value}}
}

// Headers every answer of the service carries.
var (
	hdrNoStore = header(echo.HeaderCacheControl, "no-store")
	hdrJSON    = header(echo.HeaderContentType, echo.MIMEApplicationJSON)
)

// The answers of the contract, byte for byte, one per domain outcome. Bodies
// are constants so the hot path marshals nothing.
var answers = [...]answer{
	domain.Confirmed: {status: http.StatusOK,
		body: []byte(`{"success":true,"message":"User ensured in Engine and DBStorage"}`)},
	domain.Initiated: {status: http.StatusAccepted,
		body: []byte(`{"success":true,"message":"User creation initiated"}`)},
	domain.NoToken: {status: http.StatusUnauthorized,
		body:   []byte(`{"error":"No token provided."}`),
		header: []headerValue{header("WWW-Authenticate", "Bearer")}},
	domain.InvalidToken: {status: http.StatusUnauthorized,
		body:   []byte(`{"error":"Invalid or expired token."}`),
		header: []headerValue{header("WWW-Authenticate", `Bearer error="invalid_token"`)}},
	domain.InvalidPayload: {status: http.StatusBadRequest,
		body: []byte(`{"error":"Invalid token payload."}`)},
	domain.VerifierUnavailable: {status: http.StatusServiceUnavailable,
		body:   []byte(`{"error":"Token verification unavailable."}`),
		header: []headerValue{header("Retry-After", "5")}},
	domain.Busy: {status: http.StatusServiceUnavailable,
		body:   []byte(`{"error":"Service busy: user creation request was not sent."}`),
		header: []headerValue{header("Retry-After", "1")}},
	domain.NotSent: {status: http.StatusServiceUnavailable,
		body:   []byte(`{"error":"Engine unavailable: user creation request was not sent."}`),
		header: []headerValue{header("Retry-After", "1")}},
	domain.SendUnknown:  sentButFailed,
	domain.EngineFailed: sentButFailed,
	domain.ReplyLost:    sentButFailed,
	// ClientGone is logged, not seen: the client hung up while waiting.
	// 499 is nginx's convention for it.
	domain.ClientGone: {status: 499,
		body: []byte(`{"error":"Client closed the request."}`)},
	domain.Failed: {status: http.StatusInternalServerError,
		body: []byte(`{"error":"Internal server error."}`)},
}

// sentButFailed is the 502 of the three ways a sent command can fail.
var sentButFailed = answer{status: http.StatusBadGateway,
	body: []byte(`{"error":"Failed to ensure user, but request was sent to Engine"}`)}

// answerOf is the answer of a use-case outcome, with the outcome's name.
func answerOf(o domain.Outcome) answer {
	a := answers[o]
	a.outcome = o.String()
	return a
}

// answerFor maps any error a handler returns to its answer: a domain
// outcome's, an Echo HTTP error's, or a 500 with a generic body for anything
// else; the error itself goes only to the log.
func answerFor(err error) answer {
	if o := domain.OutcomeOf(err); o != domain.Failed {
		return answerOf(o)
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
	return answerOf(domain.Failed)
}

// jsonError renders {"error": msg}. msg comes from our own code or
// http.StatusText, never from the request, but is escaped all the same.
func jsonError(msg string) []byte {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	return b
}

// setHeaders sets a's headers, and those of every answer, on h.
func (a answer) setHeaders(h http.Header) {
	h[hdrNoStore.name] = hdrNoStore.value
	h[hdrJSON.name] = hdrJSON.value
	for _, kv := range a.header {
		h[kv.name] = kv.value
	}
}

// write sends a on w.
func (a answer) write(w http.ResponseWriter) error {
	a.setHeaders(w.Header())
	w.WriteHeader(a.status)
	_, err := w.Write(a.body)
	return err
}

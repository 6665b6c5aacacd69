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

// The answers of the contract, byte for byte. Bodies are constants so the
// hot path marshals nothing.
var (
	ansConfirmed = answer{status: http.StatusOK, outcome: "confirmed",
		body: []byte(`{"success":true,"message":"User ensured in Engine and DBStorage"}`)}
	ansInitiated = answer{status: http.StatusAccepted, outcome: "initiated",
		body: []byte(`{"success":true,"message":"User creation initiated"}`)}
	ansNoToken = answer{status: http.StatusUnauthorized, outcome: "no_token",
		body:   []byte(`{"error":"No token provided."}`),
		header: []headerValue{header("WWW-Authenticate", "Bearer")}}
	ansInvalidToken = answer{status: http.StatusUnauthorized, outcome: "invalid_token",
		body:   []byte(`{"error":"Invalid or expired token."}`),
		header: []headerValue{header("WWW-Authenticate", `Bearer error="invalid_token"`)}}
	ansInvalidPayload = answer{status: http.StatusBadRequest, outcome: "invalid_payload",
		body: []byte(`{"error":"Invalid token payload."}`)}
	ansEngineFailed = answer{status: http.StatusBadGateway, outcome: "engine_failed",
		body: []byte(`{"error":"Failed to ensure user, but request was sent to Engine"}`)}
	ansNotSent = answer{status: http.StatusServiceUnavailable, outcome: "not_sent",
		body:   []byte(`{"error":"Engine unavailable: user creation request was not sent."}`),
		header: []headerValue{header("Retry-After", "1")}}
	ansBusy = answer{status: http.StatusServiceUnavailable, outcome: "busy",
		body:   []byte(`{"error":"Service busy: user creation request was not sent."}`),
		header: []headerValue{header("Retry-After", "1")}}
	ansVerifierUnavailable = answer{status: http.StatusServiceUnavailable, outcome: "verifier_unavailable",
		body:   []byte(`{"error":"Token verification unavailable."}`),
		header: []headerValue{header("Retry-After", "5")}}
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

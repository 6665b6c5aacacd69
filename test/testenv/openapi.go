package testenv

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/ensure-user/ensure-user/api"
)

var (
	openAPIOnce   sync.Once
	openAPIRouter routers.Router
	openAPIErr    error
)

// CheckOpenAPI validates one exchange against api/openapi.yaml: the route
// must exist and the answer's status, headers and body must match the
// document. Tests call it on every answer they receive, so the document
// cannot drift from the code.
func CheckOpenAPI(t testing.TB, req *http.Request, status int, header http.Header, body []byte) {
	t.Helper()
	openAPIOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(api.OpenAPI)
		if err != nil {
			openAPIErr = err
			return
		}
		if err = doc.Validate(loader.Context); err != nil {
			openAPIErr = err
			return
		}
		doc.Servers = nil // match whatever host:port the test service listens on
		openAPIRouter, openAPIErr = legacy.NewRouter(doc)
	})
	if openAPIErr != nil {
		t.Fatalf("api/openapi.yaml: %v", openAPIErr)
	}
	route, params, err := openAPIRouter.FindRoute(req)
	if err != nil {
		if status == http.StatusNotFound || status == http.StatusMethodNotAllowed {
			// Unknown paths and methods are not operations; their body
			// must still be the generic JSON error.
			checkGenericError(t, status, header, body)
			return
		}
		t.Fatalf("%s %s is not in api/openapi.yaml: %v", req.Method, req.URL.Path, err)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status:  status,
		Header:  header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s %s -> %d %s does not match api/openapi.yaml: %v", req.Method, req.URL.Path, status, body, err)
	}
}

func checkGenericError(t testing.TB, status int, header http.Header, body []byte) {
	t.Helper()
	if ct := header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%d answer has Content-Type %q, want application/json", status, ct)
	}
	if len(body) > 0 && !bytes.HasPrefix(body, []byte(`{"error":"`)) { // HEAD answers carry no body
		t.Errorf("%d answer body %s is not {\"error\":...}", status, body)
	}
}

// Do sends req, reads the whole answer, validates it against the OpenAPI
// document, and returns it with its body.
func Do(t testing.TB, client *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	CheckOpenAPI(t, req, resp.StatusCode, resp.Header, body)
	return resp, body
}

package jwksauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

// MaxJWKSBody is the largest key set document read, in bytes. A larger body
// is a failed fetch: the reader stops at MaxJWKSBody+1 bytes.
const MaxJWKSBody = 1 << 20

var errBodyTooLarge = fmt.Errorf("jwks body over %d bytes", MaxJWKSBody)

// fetcher reads the key set document from an http(s):// or file:// URL.
type fetcher struct {
	url    string // for http(s)
	path   string // for file
	client *http.Client
}

// newFetcher prepares the fetch of rawURL. For https:// a non-empty caFile
// replaces the system roots with the PEM certificates it holds.
func newFetcher(rawURL, caFile string, timeout time.Duration) (*fetcher, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("jwks url: %w", err)
	}
	switch u.Scheme {
	case "file":
		if u.Path == "" {
			return nil, errors.New("jwks url: file:// without a path")
		}
		return &fetcher{path: u.Path}, nil
	case "http", "https":
	default:
		return nil, fmt.Errorf("jwks url: scheme %q not supported", u.Scheme)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("jwks ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("jwks ca file %s: no PEM certificate", caFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &fetcher{
		url: rawURL,
		client: &http.Client{
			Transport:     tr,
			Timeout:       timeout,
			CheckRedirect: sameScheme,
		},
	}, nil
}

// sameScheme follows at most five redirects, none to another scheme: an
// https key set must not be downgraded, nor sent anywhere unexpected.
func sameScheme(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("too many redirects")
	}
	if req.URL.Scheme != via[0].URL.Scheme {
		return fmt.Errorf("redirect from %s to %s refused", via[0].URL.Scheme, req.URL.Scheme)
	}
	return nil
}

// fetch returns the key set document, at most MaxJWKSBody bytes.
func (f *fetcher) fetch(ctx context.Context) ([]byte, error) {
	if f.client == nil {
		file, err := os.Open(f.path)
		if err != nil {
			return nil, fmt.Errorf("read jwks: %w", err)
		}
		defer file.Close()
		return readCapped(file)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("fetch jwks: status %d", resp.StatusCode)
	}
	return readCapped(resp.Body)
}

func readCapped(r io.Reader) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxJWKSBody+1))
	if err != nil {
		return nil, fmt.Errorf("read jwks: %w", err)
	}
	if len(body) > MaxJWKSBody {
		return nil, errBodyTooLarge
	}
	return body, nil
}

// close releases idle connections, so that no transport goroutine outlives
// the verifier.
func (f *fetcher) close() {
	if f.client != nil {
		f.client.CloseIdleConnections()
	}
}

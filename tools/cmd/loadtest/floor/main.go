// Command floor is the load test's reference point for the CPU targets: the
// HTTP stack ensure-user is built on - Echo on net/http, with the service's
// server timeouts - answering POST /api/v1/auth/ensure-user with the
// confirmed body after only the raw ES256 check of the bearer token
// (SHA-256 and crypto/ecdsa.Verify, as the tool's calibration does). No
// claims, no Redis, no Engine, no logging, no metrics.
//
// Its CPU per request under the same load is the least any implementation
// of the endpoint on this stack can cost on this machine: what the service
// spends above it is its own work (claims, the Engine round trip, the log
// line, metrics), and what the floor spends above the raw check is the HTTP
// stack's and the kernel's.
//
// cmd/loadtest starts it for the floor scenarios (floor, floor-c1 and
// floor-c16: 64, 1 and 16 workers) with FLOOR_KEY, the identity provider's
// public key as base64url of the uncompressed point, and FLOOR_ADDR; it logs
// one JSON line {"msg":"listening","addr":...}.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ensure-user/ensure-user/internal/rawcheck"
)

var (
	confirmed = []byte(`{"success":true,"message":"User ensured in Engine and DBStorage"}`)
	invalid   = []byte(`{"error":"Invalid or expired token."}`)
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run() error {
	raw, err := base64.RawURLEncoding.DecodeString(os.Getenv("FLOOR_KEY"))
	if err != nil {
		return fmt.Errorf("FLOOR_KEY: %w", err)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return fmt.Errorf("FLOOR_KEY: %w", err)
	}
	addr := os.Getenv("FLOOR_ADDR")
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.POST("/api/v1/auth/ensure-user", func(c echo.Context) error {
		if !verify(pub, c.Request().Header.Get(echo.HeaderAuthorization)) {
			return c.JSONBlob(http.StatusUnauthorized, invalid)
		}
		return c.JSONBlob(http.StatusOK, confirmed)
	})
	e.GET("/readyz", func(c echo.Context) error { return c.JSONBlob(http.StatusOK, []byte(`{"status":"ready"}`)) })
	// The service's server settings (adapters/echohttp), so that the floor
	// pays for the same deadlines.
	srv := &http.Server{
		Handler:           e,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	line, _ := json.Marshal(map[string]string{"level": "info", "msg": "listening", "addr": ln.Addr().String()})
	fmt.Fprintln(os.Stderr, string(line))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// verify is the raw ES256 check of a "Bearer <JWS>" header value.
func verify(pub *ecdsa.PublicKey, header string) bool {
	tok, ok := strings.CutPrefix(header, "Bearer ")
	return ok && rawcheck.Token(pub, tok)
}

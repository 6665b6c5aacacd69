package echohttp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Probe is one readiness check, named in /readyz's answer when it fails.
type Probe struct {
	Name  string
	Check func(ctx context.Context) error
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{
		ErrorLog:          zap.NewStdLog(s.log),
		EnableOpenMetrics: true,
	})
}

var ansLive = answer{status: http.StatusOK, body: []byte(`{"status":"ok"}`)}

func (s *Server) live(c echo.Context) error { return ansLive.write(c.Response()) }

// notReady lists what is not ready: the failing probes, and the server
// itself while draining.
func (s *Server) notReady(ctx context.Context) []probeFailure {
	var out []probeFailure
	if s.draining.Load() {
		out = append(out, probeFailure{"server", "shutting down"})
	}
	for _, p := range s.opts.Probes {
		if err := p.Check(ctx); err != nil {
			out = append(out, probeFailure{p.Name, err.Error()})
		}
	}
	return out
}

type probeFailure struct {
	Name  string `json:"name"`
	Error string `json:"error"`
}

// Ready reports nil when every probe passes, else an error naming what is
// not ready; it is what /readyz answers.
func (s *Server) Ready(ctx context.Context) error {
	var errs []error
	for _, f := range s.notReady(ctx) {
		errs = append(errs, fmt.Errorf("%s: %s", f.Name, f.Error))
	}
	return errors.Join(errs...)
}

// ready answers 200 when every probe passes, else 503 naming what is not
// ready. While draining it is 503 whatever the probes say.
func (s *Server) ready(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	body := struct {
		Status   string         `json:"status"`
		NotReady []probeFailure `json:"not_ready,omitempty"`
	}{Status: "ready", NotReady: s.notReady(ctx)}
	status := http.StatusOK
	if len(body.NotReady) > 0 {
		status, body.Status = http.StatusServiceUnavailable, "not ready"
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(status, body)
}

func (s *Server) openAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/yaml", s.opts.OpenAPI)
}

func methodNotAllowed(echo.Context) error { return echo.ErrMethodNotAllowed }

package app

import (
	"context"
	"fmt"
	"time"

	"github.com/google/wire"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/adapters/echohttp"
	"github.com/ensure-user/ensure-user/adapters/jwksauth"
	"github.com/ensure-user/ensure-user/adapters/membus"
	"github.com/ensure-user/ensure-user/adapters/oteltrace"
	"github.com/ensure-user/ensure-user/adapters/redisbus"
	"github.com/ensure-user/ensure-user/adapters/sysclock"
	"github.com/ensure-user/ensure-user/api"
	"github.com/ensure-user/ensure-user/config"
	"github.com/ensure-user/ensure-user/domain/ensureuser"
	"github.com/ensure-user/ensure-user/ports"
)

// ConfigSet hands each adapter its own part of the configuration.
var ConfigSet = wire.NewSet(wire.FieldsOf(new(config.Config), "HTTP", "Redis", "Auth", "Bus", "UseCase", "Log"))

// MetricsSet provides the registry, both as itself (for /metrics) and as the
// Registerer the adapters register on.
var MetricsSet = wire.NewSet(NewRegistry, wire.Bind(new(prometheus.Registerer), new(*prometheus.Registry)))

// ClockSet is the system clock.
var ClockSet = wire.NewSet(sysclock.New, wire.Bind(new(ports.Clock), new(sysclock.Clock)))

// TracingSet is OpenTelemetry tracing, off unless an endpoint is set.
var TracingSet = wire.NewSet(NewTracing)

// VerifierSet is the JWKS (and legacy HS256) token verifier.
var VerifierSet = wire.NewSet(NewVerifier, wire.Bind(new(ports.TokenVerifier), new(*jwksauth.Verifier)))

// EngineSet is the Engine bus that ENGINE_TRANSPORT selects.
var EngineSet = wire.NewSet(NewEngineBus, wire.FieldsOf(new(EngineBus), "Bus"))

// UseCaseSet is the use case wrapped in its metrics and logging decorator.
var UseCaseSet = wire.NewSet(NewUseCase, NewInstrumented)

// HTTPSet is the Echo server and the lifecycle around it.
var HTTPSet = wire.NewSet(NewProbes, NewServer, NewApp)

// EngineBus is the Engine bus chosen by configuration, with its readiness
// probe.
type EngineBus struct {
	Bus   ports.EngineBus
	Probe echohttp.Probe
}

// tracingFlush bounds the flush of the spans still queued at exit.
const tracingFlush = 5 * time.Second

// NewTracing starts tracing as the OTEL_* variables say. The cleanup
// flushes what is queued, within tracingFlush; Wire runs it after the
// cleanups of everything that records spans (they are built after it).
func NewTracing(cfg config.Config, log *zap.Logger, reg prometheus.Registerer) (*oteltrace.Tracing, func(), error) {
	t, stop, err := oteltrace.New(context.Background(), cfg.Tracing, log.Named("tracing"), reg)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: %w", err)
	}
	return t, func() {
		ctx, cancel := context.WithTimeout(context.Background(), tracingFlush)
		defer cancel()
		if err := stop(ctx); err != nil {
			log.Warn("flushing the last spans", zap.Error(err))
		}
	}, nil
}

// tracerOf is the tracer of one instrumentation scope, nil when tracing is
// off: the adapters then skip everything about spans.
func tracerOf(t *oteltrace.Tracing, scope string) trace.Tracer {
	if !t.Enabled() {
		return nil
	}
	return t.Tracer(scope)
}

// NewVerifier builds the token verifier, with its spans when tracing is on.
func NewVerifier(cfg jwksauth.Config, log *zap.Logger, clock ports.Clock, reg prometheus.Registerer, t *oteltrace.Tracing) (*jwksauth.Verifier, func(), error) {
	var opts []jwksauth.Option
	if tr := tracerOf(t, scope+"/adapters/jwksauth"); tr != nil {
		opts = append(opts, jwksauth.WithTracer(tr))
	}
	return jwksauth.New(cfg, log, clock, reg, opts...)
}

// scope prefixes the instrumentation scopes of the service's tracers.
const scope = "github.com/ensure-user/ensure-user"

// NewEngineBus builds the bus ENGINE_TRANSPORT names: the Redis Streams bus
// (which owns its Redis client) or the in-memory bus with its in-process
// Engine. A provider that switches, because Wire binds at compile time and
// staging swaps the transport by configuration.
func NewEngineBus(cfg config.Config, log *zap.Logger, reg prometheus.Registerer, t *oteltrace.Tracing) (EngineBus, func(), error) {
	switch cfg.Transport {
	case config.TransportMemory:
		bus, cleanup, err := membus.New(membus.Config{ReplyTo: cfg.Bus.ReplyStreamName()}, log, reg)
		if err != nil {
			return EngineBus{}, nil, fmt.Errorf("memory bus: %w", err)
		}
		return EngineBus{Bus: bus, Probe: echohttp.Probe{Name: "engine", Check: bus.Ready}}, cleanup, nil
	case config.TransportRedis:
		client, closeClient, err := redisbus.Dial(cfg.Redis, log)
		if err != nil {
			return EngineBus{}, nil, fmt.Errorf("redis: %w", err)
		}
		var opts []redisbus.Option
		if tr := tracerOf(t, scope+"/adapters/redisbus"); tr != nil {
			opts = append(opts, redisbus.WithTracing(tr, t.Propagator()))
		}
		bus, stop, err := redisbus.New(cfg.Bus, log, client, reg, opts...)
		if err != nil {
			closeClient()
			return EngineBus{}, nil, fmt.Errorf("redis streams bus: %w", err)
		}
		return EngineBus{Bus: bus, Probe: echohttp.Probe{Name: "redis", Check: bus.Ready}}, func() {
			stop() // the reply reader first, then the connection it reads on
			closeClient()
		}, nil
	}
	return EngineBus{}, nil, fmt.Errorf("ENGINE_TRANSPORT: unknown transport %q", cfg.Transport)
}

// NewUseCase builds the use case.
func NewUseCase(cfg ensureuser.Config, v ports.TokenVerifier, bus ports.EngineBus, clock ports.Clock) *ensureuser.UseCase {
	return ensureuser.New(cfg, v, bus, clock)
}

// NewProbes lists what /readyz checks: a usable key set, and the bus.
func NewProbes(v *jwksauth.Verifier, bus EngineBus) []echohttp.Probe {
	return []echohttp.Probe{
		{Name: "jwks", Check: func(context.Context) error { return v.Ready() }},
		bus.Probe,
	}
}

// NewServer builds the HTTP server.
func NewServer(cfg config.Config, log *zap.Logger, uc echohttp.EnsureUser, probes []echohttp.Probe, reg *prometheus.Registry, t *oteltrace.Tracing) (*echohttp.Server, error) {
	opts := echohttp.Options{
		ReplyTimeout: cfg.UseCase.ReplyTimeout,
		Probes:       probes,
		Registry:     reg,
		OpenAPI:      api.OpenAPI,
	}
	if tr := tracerOf(t, scope+"/adapters/echohttp"); tr != nil {
		opts.Tracer, opts.Propagator = tr, t.Propagator()
	}
	return echohttp.New(cfg.HTTP, log, uc, opts)
}

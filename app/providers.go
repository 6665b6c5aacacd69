package app

import (
	"context"
	"fmt"

	"github.com/google/wire"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/adapters/echohttp"
	"github.com/ensure-user/ensure-user/adapters/jwksauth"
	"github.com/ensure-user/ensure-user/adapters/membus"
	"github.com/ensure-user/ensure-user/adapters/redisbus"
	"github.com/ensure-user/ensure-user/adapters/sysclock"
	"github.com/ensure-user/ensure-user/api"
	"github.com/ensure-user/ensure-user/config"
	"github.com/ensure-user/ensure-user/domain/ensureuser"
	"github.com/ensure-user/ensure-user/ports"
)

// ConfigSet hands each adapter its own part of the configuration.
var ConfigSet = wire.NewSet(wire.FieldsOf(new(config.Config), "HTTP", "Redis", "Auth", "Engine", "Log"))

// MetricsSet provides the registry, both as itself (for /metrics) and as the
// Registerer the adapters register on.
var MetricsSet = wire.NewSet(NewRegistry, wire.Bind(new(prometheus.Registerer), new(*prometheus.Registry)))

// ClockSet is the system clock.
var ClockSet = wire.NewSet(sysclock.New, wire.Bind(new(ports.Clock), new(sysclock.Clock)))

// VerifierSet is the JWKS (and legacy HS256) token verifier.
var VerifierSet = wire.NewSet(jwksauth.New, wire.Bind(new(ports.TokenVerifier), new(*jwksauth.Verifier)))

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

// NewEngineBus builds the bus ENGINE_TRANSPORT names: the Redis Streams bus
// (which owns its Redis client) or the in-memory bus with its in-process
// Engine. A provider that switches, because Wire binds at compile time and
// staging swaps the transport by configuration.
func NewEngineBus(cfg config.Config, log *zap.Logger, reg prometheus.Registerer) (EngineBus, func(), error) {
	switch cfg.Engine.Transport {
	case config.TransportMemory:
		bus, cleanup, err := membus.New(cfg.Engine, log, reg)
		if err != nil {
			return EngineBus{}, nil, fmt.Errorf("memory bus: %w", err)
		}
		return EngineBus{Bus: bus, Probe: echohttp.Probe{Name: "engine", Check: bus.Ready}}, cleanup, nil
	case config.TransportRedis:
		client, closeClient, err := redisbus.Dial(cfg.Redis, log)
		if err != nil {
			return EngineBus{}, nil, fmt.Errorf("redis: %w", err)
		}
		bus, stop, err := redisbus.New(cfg.Engine, log, client, reg)
		if err != nil {
			closeClient()
			return EngineBus{}, nil, fmt.Errorf("redis streams bus: %w", err)
		}
		return EngineBus{Bus: bus, Probe: echohttp.Probe{Name: "redis", Check: bus.Ready}}, func() {
			stop() // the reply reader first, then the connection it reads on
			closeClient()
		}, nil
	}
	return EngineBus{}, nil, fmt.Errorf("ENGINE_TRANSPORT: unknown transport %q", cfg.Engine.Transport)
}

// NewUseCase builds the use case from the Engine settings.
func NewUseCase(cfg config.Engine, v ports.TokenVerifier, bus ports.EngineBus, clock ports.Clock) *ensureuser.UseCase {
	return ensureuser.New(ensureuser.Config{ReplyTimeout: cfg.ReplyTimeout, MaxWaiting: cfg.MaxWaiting, Coalesce: cfg.Coalesce}, v, bus, clock)
}

// NewProbes lists what /readyz checks: a usable key set, and the bus.
func NewProbes(v *jwksauth.Verifier, bus EngineBus) []echohttp.Probe {
	return []echohttp.Probe{
		{Name: "jwks", Check: func(context.Context) error { return v.Ready() }},
		bus.Probe,
	}
}

// NewServer builds the HTTP server.
func NewServer(cfg config.Config, log *zap.Logger, uc echohttp.EnsureUser, probes []echohttp.Probe, reg *prometheus.Registry) (*echohttp.Server, error) {
	return echohttp.New(cfg.HTTP, log, uc, echohttp.Options{
		ReplyTimeout: cfg.Engine.ReplyTimeout,
		Probes:       probes,
		Registry:     reg,
		OpenAPI:      api.OpenAPI,
	})
}

//go:build wireinject

package app

import (
	"github.com/google/wire"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/config"
)

// Build assembles the service from cfg. The cleanup stops the background
// work (reply reader, key refresher) and closes Redis; call it after Serve
// has returned.
func Build(cfg config.Config, log *zap.Logger) (*App, func(), error) {
	wire.Build(ConfigSet, MetricsSet, TracingSet, ClockSet, VerifierSet, EngineSet, UseCaseSet, HTTPSet)
	return nil, nil, nil
}

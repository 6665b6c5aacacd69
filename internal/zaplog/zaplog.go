// Package zaplog builds the zap logger every binary of the repository logs
// with (the service and engine-sim), so that their lines look alike and one
// log pipeline reads both.
package zaplog

import (
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ensure-user/ensure-user/config"
)

// New builds a zap logger from LOG_LEVEL and LOG_FORMAT (json or console).
// Logs go to stderr, with ISO 8601 timestamps and no sampling: every
// request's line is kept.
func New(cfg config.Log) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.Level)
	if err != nil {
		return nil, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	zc := zap.NewProductionConfig()
	zc.Sampling = nil
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.EncoderConfig.TimeKey = "ts"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.Encoding = cfg.Format
	if cfg.Format == "console" {
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
	}
	return zc.Build()
}

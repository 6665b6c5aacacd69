// Package zaplog builds the zap logger every binary of the repository logs
// with (the service and engine-sim), so that their lines look alike and one
// log pipeline reads both.
package zaplog

import (
	"fmt"
	"io"
	"os"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ensure-user/ensure-user/internal/setting"
)

// bufferSize is what LOG_FLUSH_INTERVAL lets pile up before a write.
const bufferSize = 256 << 10

// Config is the logger's configuration.
type Config struct {
	Level  string // debug, info, warn, error
	Format string // json or console
	// FlushInterval buffers log lines and writes them at least this often
	// (and when 256 KiB are pending, at a warn or worse line, and at exit);
	// 0 writes every line at once.
	FlushInterval time.Duration
}

// Validate reports every problem with c, by field.
func (c Config) Validate() setting.Problems {
	var p setting.Problems
	switch c.Level {
	case "debug", "info", "warn", "error":
	default:
		p.Add("Level", "must be debug, info, warn or error, not %q", c.Level)
	}
	switch c.Format {
	case "json", "console":
	default:
		p.Add("Format", "must be json or console, not %q", c.Format)
	}
	if c.FlushInterval < 0 || c.FlushInterval > time.Minute {
		p.Add("FlushInterval", "must be between 0s and 1m")
	}
	return p
}

// New builds a zap logger from LOG_LEVEL, LOG_FORMAT (json or console) and
// LOG_FLUSH_INTERVAL. Logs go to stderr, with ISO 8601 timestamps and no
// sampling: every request's line is kept.
func New(cfg Config) (*zap.Logger, error) {
	return NewTo(cfg, os.Stderr)
}

// NewTo is New writing to w instead of stderr, for benchmarks and tests.
func NewTo(cfg Config, w io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.Level)
	if err != nil {
		return nil, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch cfg.Format {
	case "json":
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("LOG_FORMAT: %q is neither json nor console", cfg.Format)
	}
	// Sync only pushes out what zap buffers: fsync of stderr fails on a
	// pipe or a terminal (EINVAL), which zap would report as a write error
	// after every warn line.
	ws := zapcore.Lock(writeOnly{w})
	var core zapcore.Core
	if cfg.FlushInterval > 0 {
		// One write per request line is a syscall per request; buffered,
		// lines go out in batches. Warn and worse lines are written at once
		// (with what is pending before them), and zap syncs before Fatal and
		// Panic; the binaries Sync at exit.
		ws = &zapcore.BufferedWriteSyncer{WS: ws, Size: bufferSize, FlushInterval: cfg.FlushInterval}
		core = &syncAtWarn{zapcore.NewCore(enc, ws, level)}
	} else {
		core = zapcore.NewCore(enc, ws, level)
	}
	return zap.New(core, zap.AddCaller(), zap.AddStacktrace(zapcore.ErrorLevel), zap.ErrorOutput(zapcore.Lock(writeOnly{w}))), nil
}

// writeOnly is w with a Sync that does nothing.
type writeOnly struct{ io.Writer }

func (writeOnly) Sync() error { return nil }

// syncAtWarn writes out the buffer after every warn or worse line, so that
// trouble is never held back in memory. It is used as a pointer: Check hands
// it to zap as a Core once per line, and a pointer does not allocate there.
type syncAtWarn struct{ zapcore.Core }

func (c *syncAtWarn) With(fields []zapcore.Field) zapcore.Core {
	return &syncAtWarn{c.Core.With(fields)}
}

func (c *syncAtWarn) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *syncAtWarn) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	if err := c.Core.Write(ent, fields); err != nil {
		return err
	}
	if ent.Level >= zapcore.WarnLevel {
		return c.Sync()
	}
	return nil
}

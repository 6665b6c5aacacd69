// Package config maps environment variables (and matching command-line
// flags) into the configuration types the adapters own (echohttp.Config,
// redisbus.Config, jwksauth.Config, ...) and reports every problem at once,
// each naming its variable. The rules are the adapters': config knows only
// which variable fills which field, and the few rules that span adapters.
// Load is pure: it reads only through the lookup function it is given, so
// tests need no environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/ensure-user/ensure-user/adapters/echohttp"
	"github.com/ensure-user/ensure-user/adapters/jwksauth"
	"github.com/ensure-user/ensure-user/adapters/oteltrace"
	"github.com/ensure-user/ensure-user/adapters/redisbus"
	"github.com/ensure-user/ensure-user/domain/ensureuser"
	"github.com/ensure-user/ensure-user/internal/setting"
	"github.com/ensure-user/ensure-user/internal/zaplog"
)

// Config is the whole service configuration: each adapter's own type.
type Config struct {
	HTTP      echohttp.Config
	Redis     redisbus.ConnConfig
	Auth      jwksauth.Config
	Bus       redisbus.Config   // the Engine bus over Redis Streams
	UseCase   ensureuser.Config // the reply wait, the cap on waiting requests, coalescing
	Transport string            // ENGINE_TRANSPORT: TransportRedis or TransportMemory
	Log       zaplog.Config
	Tracing   oteltrace.Config // the standard OTEL_* variables; off without an endpoint

	effective map[string]string // variable -> value in force, secrets redacted
}

// Effective returns every variable with the value in force (set or default),
// secrets redacted: what the service logs at start.
func (c Config) Effective() map[string]string { return c.effective }

// WithInstanceID returns c with Bus.InstanceID defaulted to host-pid when
// INSTANCE_ID was not set; characters an id may not hold become '-'.
func (c Config) WithInstanceID(host string, pid int) Config {
	if c.Bus.InstanceID != "" {
		return c
	}
	clean := strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f || r == '{' || r == '}' {
			return '-'
		}
		return r
	}, host)
	if clean == "" {
		clean = "instance"
	}
	c.Bus.InstanceID = clean + "-" + strconv.Itoa(pid)
	if c.effective != nil {
		c.effective["INSTANCE_ID"] = c.Bus.InstanceID
	}
	return c
}

// Engine transports.
const (
	TransportRedis  = "redis-streams"
	TransportMemory = "memory"
)

// Secret is a value that never prints (see setting.Secret).
type Secret = setting.Secret

// RedactedURL returns u with any password replaced, for logs.
func RedactedURL(u string) string { return setting.RedactedURL(u) }

// Var describes one configuration variable.
type Var struct {
	Name    string // environment variable
	Default string // serve's default; "" when there is none
	Usage   string
}

// Vars lists every variable Load reads, in documentation order. The README
// table and the command-line flags are derived from it.
var Vars = append(serviceVars, tracingVars()...)

// ServiceName is the default OTEL_SERVICE_NAME of the service.
const ServiceName = "ensure-user"

// tracingVars are the OpenTelemetry variables, as package oteltrace reads
// them (Load hands them to oteltrace.ConfigFromEnv).
func tracingVars() []Var {
	var out []Var
	for _, v := range oteltrace.Vars {
		if v.Name == "OTEL_SERVICE_NAME" {
			v.Default = ServiceName
		}
		out = append(out, Var{Name: v.Name, Default: v.Default, Usage: v.Usage})
	}
	return out
}

// serviceVars are the service's own variables.
var serviceVars = []Var{
	{"HTTP_ADDR", ":8000", "listen address"},
	{"METRICS_ADDR", "", "separate listen address for /metrics (empty: /metrics on HTTP_ADDR)"},
	{"SHUTDOWN_DELAY", "2s", "on SIGTERM, time between readiness turning 503 and the listener closing"},
	{"SHUTDOWN_TIMEOUT", "15s", "bound of the drain of in-flight requests (keep it above ENGINE_REPLY_TIMEOUT)"},
	{"HTTP_MAX_HEADER_BYTES", "16384", "request header size beyond which the answer is 431"},
	{"HTTP_READ_HEADER_TIMEOUT", "5s", "a connection whose request headers are not read within this is closed (slow clients; the whole request gets 5s more)"},
	{"HTTP_MAX_CONNECTIONS", "0", "client connections held open at most (0: the open-file limit minus a reserve for Redis and the IdP)"},
	{"HTTP_PARK_ABOVE", "256", "beyond this many requests waiting for the Engine in place, further ones wait parked, and beyond this many connections in the HTTP server, idle keep-alive connections wait parked for their next request: outside the HTTP server, its goroutine and buffers freed (0: park everything; -1: never)"},
	{"CORS_ALLOWED_ORIGINS", "", "comma-separated origins allowed by CORS (empty: CORS off)"},
	{"REDIS_URL", "redis://127.0.0.1:6379/0", "Redis URL as rueidis parses it (redis://, rediss://, ?addr= for cluster, ?master_set= for sentinel)"},
	{"REDIS_TLS_CA_FILE", "", "PEM file of CA certificates trusted for rediss://"},
	{"REDIS_TLS_CERT_FILE", "", "PEM client certificate for rediss:// (with REDIS_TLS_KEY_FILE)"},
	{"REDIS_TLS_KEY_FILE", "", "PEM client key for rediss:// (with REDIS_TLS_CERT_FILE)"},
	{"REDIS_MAX_FLUSH_DELAY", "250us", "while several commands are in flight, pause up to this long after each write to Redis so that the next write carries more commands (rueidis MaxFlushDelay; 0s: write at once)"},
	{"JWKS_URL", "", "identity provider key set: https://, http:// (loopback unless JWKS_ALLOW_HTTP) or file://"},
	{"JWKS_REFRESH", "10m", "background refresh interval of the key set"},
	{"JWKS_MIN_REFRESH", "30s", "at most one unknown-kid refresh per this interval; cap of the start-up retry backoff"},
	{"JWKS_ALLOW_HTTP", "false", "allow a non-loopback http:// JWKS_URL"},
	{"JWKS_CA_FILE", "", "PEM file of CA certificates trusted for an https:// JWKS_URL"},
	{"JWKS_TIMEOUT", "5s", "timeout of one key set fetch"},
	{"JWT_HS256_SECRET", "", "legacy HS256 secret (at least 32 bytes)"},
	{"JWT_ISSUER", "", "required iss; * disables the check (required with JWKS_URL)"},
	{"JWT_AUDIENCE", "", "required aud; * disables the check (required with JWKS_URL)"},
	{"JWT_ALGORITHMS", "", "comma-separated allowed algorithms; empty: those the keys imply"},
	{"JWT_LEEWAY", "30s", "clock skew allowed for exp, nbf and iat (at most 5m)"},
	{"JWT_REQUIRE_EXP", "true", "refuse tokens without exp"},
	{"JWT_USER_ID_CLAIMS", "userId,sub", "claims tried in order for the user id"},
	{"JWT_EMAIL_CLAIM", "email", "claim holding the email"},
	{"JWT_REQUIRE_VERIFIED_EMAIL", "true", "refuse tokens whose email_verified is false"},
	{"ENGINE_TRANSPORT", TransportRedis, "Engine bus: redis-streams or memory"},
	{"ENGINE_REQUEST_STREAM", "engine:requests", "stream the createUser commands go to"},
	{"ENGINE_REPLY_STREAM", "engine:replies", "stream the Engine replies on"},
	{"ENGINE_REPLY_TIMEOUT", "5s", "how long a request waits for the Engine's reply"},
	{"ENGINE_SEND_TIMEOUT", "2s", "bound of the XADD that sends a command (redis-streams; capped by ENGINE_REPLY_TIMEOUT): past it the outcome is unknown and the answer is 502"},
	{"ENGINE_SEND_BATCH_WINDOW", "1ms", "while many requests wait for the Engine, an XADD waits at most this long for others to share one write to Redis (0: each is written at once)"},
	{"ENGINE_REQUEST_MAXLEN", "1000000", "approximate length cap of the request stream (MAXLEN ~)"},
	{"ENGINE_MAX_WAITING", "20000", "requests waiting at once beyond which new ones get 503 busy"},
	{"ENGINE_COALESCE", "false", "concurrent requests for the same user share one in-flight command (off: every call sends)"},
	{"ENGINE_DURABLE_SEND", redisbus.DurableOff, "after XADD wait until the command is on disk (aof, Redis >= 7.2) or on a replica (replica); off"},
	{"INSTANCE_ID", "", "this instance's id for {instance} in ENGINE_REPLY_STREAM (default hostname-pid)"},
	{"LOG_LEVEL", "info", "debug, info, warn or error"},
	{"LOG_FORMAT", "json", "json or console"},
	{"LOG_FLUSH_INTERVAL", "100ms", "buffer log lines and write them at least this often (and at once for warn and worse, and at exit); 0s: one write per line"},
}

// Lookup reads one variable; it has the signature of os.LookupEnv.
type Lookup func(name string) (string, bool)

// FlagName is the command-line flag matching an environment variable:
// HTTP_ADDR becomes http-addr.
func FlagName(env string) string {
	return strings.ReplaceAll(strings.ToLower(env), "_", "-")
}

// WithFlags parses args as flags named after Vars (--http-addr=:9000) and
// returns a Lookup in which a flag given on the command line wins over env.
// It returns the arguments left after the flags.
func WithFlags(fs *flag.FlagSet, args []string, env Lookup) (Lookup, []string, error) {
	vals := make(map[string]*string, len(Vars))
	for _, v := range Vars {
		vals[v.Name] = fs.String(FlagName(v.Name), "", v.Usage+" (env "+v.Name+")")
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return func(name string) (string, bool) {
		if set[FlagName(name)] {
			return *vals[name], true
		}
		return env(name)
	}, fs.Args(), nil
}

// Load reads every variable through lookup, applies serve's defaults, and
// validates the result. The error lists every problem, each naming its
// variable.
func Load(lookup Lookup) (Config, error) {
	p := NewParser(lookup, Vars)
	c := Config{
		HTTP: echohttp.Config{
			Addr:              p.Str("HTTP_ADDR"),
			MetricsAddr:       p.Str("METRICS_ADDR"),
			ShutdownDelay:     p.Duration("SHUTDOWN_DELAY"),
			ShutdownTimeout:   p.Duration("SHUTDOWN_TIMEOUT"),
			MaxHeaderBytes:    p.Int("HTTP_MAX_HEADER_BYTES"),
			ReadHeaderTimeout: p.Duration("HTTP_READ_HEADER_TIMEOUT"),
			MaxConnections:    p.Int("HTTP_MAX_CONNECTIONS"),
			CORSOrigins:       p.List("CORS_ALLOWED_ORIGINS"),
			ParkAbove:         p.Int("HTTP_PARK_ABOVE"),
		},
		Redis: redisbus.ConnConfig{
			URL:           Secret(p.Str("REDIS_URL")),
			CAFile:        p.Str("REDIS_TLS_CA_FILE"),
			CertFile:      p.Str("REDIS_TLS_CERT_FILE"),
			KeyFile:       p.Str("REDIS_TLS_KEY_FILE"),
			MaxFlushDelay: p.Duration("REDIS_MAX_FLUSH_DELAY"),
		},
		Auth: jwksauth.Config{
			JWKSURL:              p.Str("JWKS_URL"),
			Refresh:              p.Duration("JWKS_REFRESH"),
			MinRefresh:           p.Duration("JWKS_MIN_REFRESH"),
			AllowHTTP:            p.Bool("JWKS_ALLOW_HTTP"),
			CAFile:               p.Str("JWKS_CA_FILE"),
			Timeout:              p.Duration("JWKS_TIMEOUT"),
			HS256Secret:          Secret(p.Str("JWT_HS256_SECRET")),
			Issuer:               p.Str("JWT_ISSUER"),
			Audience:             p.Str("JWT_AUDIENCE"),
			Algorithms:           p.List("JWT_ALGORITHMS"),
			Leeway:               p.Duration("JWT_LEEWAY"),
			RequireExp:           p.Bool("JWT_REQUIRE_EXP"),
			UserIDClaims:         p.List("JWT_USER_ID_CLAIMS"),
			EmailClaim:           p.Str("JWT_EMAIL_CLAIM"),
			RequireVerifiedEmail: p.Bool("JWT_REQUIRE_VERIFIED_EMAIL"),
		},
		Bus: redisbus.Config{
			RequestStream:   p.Str("ENGINE_REQUEST_STREAM"),
			ReplyStream:     p.Str("ENGINE_REPLY_STREAM"),
			InstanceID:      p.Str("INSTANCE_ID"),
			ReplyTimeout:    p.Duration("ENGINE_REPLY_TIMEOUT"),
			SendTimeout:     p.Duration("ENGINE_SEND_TIMEOUT"),
			SendBatchWindow: p.Duration("ENGINE_SEND_BATCH_WINDOW"),
			RequestMaxLen:   int64(p.Int("ENGINE_REQUEST_MAXLEN")),
			MaxWaiting:      p.Int("ENGINE_MAX_WAITING"),
			DurableSend:     p.Str("ENGINE_DURABLE_SEND"),
		},
		UseCase: ensureuser.Config{
			ReplyTimeout: p.Duration("ENGINE_REPLY_TIMEOUT"),
			MaxWaiting:   p.Int("ENGINE_MAX_WAITING"),
			Coalesce:     p.Bool("ENGINE_COALESCE"),
		},
		Transport: p.Str("ENGINE_TRANSPORT"),
		Log:       zaplog.Config{Level: p.Str("LOG_LEVEL"), Format: p.Str("LOG_FORMAT"), FlushInterval: p.Duration("LOG_FLUSH_INTERVAL")},
	}
	c.effective = p.Seen(secretVars)
	errs := p.Errs()
	tracing, err := oteltrace.ConfigFromEnv(lookup, ServiceName)
	if err != nil {
		errs = append(errs, err)
	}
	c.Tracing = tracing
	for _, v := range oteltrace.Vars {
		if raw, ok := lookup(v.Name); ok {
			if v.Secret && raw != "" {
				raw = Secret(raw).String()
			}
			c.effective[v.Name] = raw
		}
	}
	if len(errs) == 0 {
		errs = c.Validate()
	}
	return c, errors.Join(errs...)
}

// Which variable fills which field of each adapter's Config, to name the
// variable in the adapter's problems.
var (
	httpVars = map[string]string{
		"Addr": "HTTP_ADDR", "MetricsAddr": "METRICS_ADDR", "ShutdownDelay": "SHUTDOWN_DELAY",
		"ShutdownTimeout": "SHUTDOWN_TIMEOUT", "MaxHeaderBytes": "HTTP_MAX_HEADER_BYTES",
		"ReadHeaderTimeout": "HTTP_READ_HEADER_TIMEOUT", "MaxConnections": "HTTP_MAX_CONNECTIONS",
		"CORSOrigins": "CORS_ALLOWED_ORIGINS", "ParkAbove": "HTTP_PARK_ABOVE",
	}
	redisVars = map[string]string{
		"URL": "REDIS_URL", "CAFile": "REDIS_TLS_CA_FILE", "CertFile": "REDIS_TLS_CERT_FILE",
		"KeyFile": "REDIS_TLS_KEY_FILE", "MaxFlushDelay": "REDIS_MAX_FLUSH_DELAY",
	}
	authVars = map[string]string{
		"JWKSURL": "JWKS_URL", "Refresh": "JWKS_REFRESH", "MinRefresh": "JWKS_MIN_REFRESH",
		"AllowHTTP": "JWKS_ALLOW_HTTP", "CAFile": "JWKS_CA_FILE", "Timeout": "JWKS_TIMEOUT",
		"HS256Secret": "JWT_HS256_SECRET", "Issuer": "JWT_ISSUER", "Audience": "JWT_AUDIENCE",
		"Algorithms": "JWT_ALGORITHMS", "Leeway": "JWT_LEEWAY", "RequireExp": "JWT_REQUIRE_EXP",
		"UserIDClaims": "JWT_USER_ID_CLAIMS", "EmailClaim": "JWT_EMAIL_CLAIM",
		"RequireVerifiedEmail": "JWT_REQUIRE_VERIFIED_EMAIL",
	}
	busVars = map[string]string{
		"RequestStream": "ENGINE_REQUEST_STREAM", "ReplyStream": "ENGINE_REPLY_STREAM", "InstanceID": "INSTANCE_ID",
		"ReplyTimeout": "ENGINE_REPLY_TIMEOUT", "SendTimeout": "ENGINE_SEND_TIMEOUT",
		"SendBatchWindow": "ENGINE_SEND_BATCH_WINDOW", "RequestMaxLen": "ENGINE_REQUEST_MAXLEN",
		"MaxWaiting": "ENGINE_MAX_WAITING", "DurableSend": "ENGINE_DURABLE_SEND",
	}
	logVars = map[string]string{"Level": "LOG_LEVEL", "Format": "LOG_FORMAT", "FlushInterval": "LOG_FLUSH_INTERVAL"}
)

// named turns an adapter's problems into errors naming their variables.
func named(problems setting.Problems, vars map[string]string) []error {
	var errs []error
	for _, p := range problems {
		name, ok := vars[p.Field]
		if !ok {
			name = p.Field // a field no variable fills: a programming error the tests catch
		}
		errs = append(errs, fmt.Errorf("%s: %s", name, p.Message))
	}
	return errs
}

// Validate reports every problem with c, each naming its variable: the
// adapters' own, then the rules that span adapters.
func (c Config) Validate() []error {
	var errs []error
	errs = append(errs, named(c.HTTP.Validate(), httpVars)...)
	errs = append(errs, named(c.Auth.Validate(), authVars)...)
	errs = append(errs, named(c.Log.Validate(), logVars)...)
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	if c.HTTP.ReadHeaderTimeout == 0 { // the adapter reads 0 as its default; a variable set to 0s is a mistake
		bad("HTTP_READ_HEADER_TIMEOUT", "must be between 1s and 5m")
	}
	if c.HTTP.ShutdownTimeout <= c.UseCase.ReplyTimeout {
		bad("SHUTDOWN_TIMEOUT", "must be longer than ENGINE_REPLY_TIMEOUT (%s), or in-flight requests are cut", c.UseCase.ReplyTimeout)
	}
	if c.UseCase.ReplyTimeout <= 0 {
		bad("ENGINE_REPLY_TIMEOUT", "must be positive")
	}
	if c.UseCase.MaxWaiting <= 0 {
		bad("ENGINE_MAX_WAITING", "must be positive")
	}
	switch c.Transport {
	case TransportRedis:
		errs = append(errs, named(c.Redis.Validate(), redisVars)...)
	case TransportMemory:
		if c.Bus.DurableSend != redisbus.DurableOff {
			bad("ENGINE_DURABLE_SEND", "needs ENGINE_TRANSPORT=%s", TransportRedis)
		}
	default:
		bad("ENGINE_TRANSPORT", "must be %s or %s, not %q", TransportRedis, TransportMemory, c.Transport)
	}
	// The bus's rules hold whatever the transport: the in-memory bus names
	// its reply stream the same way, and a staging setup swaps transports.
	// INSTANCE_ID defaults to host-pid after Load (WithInstanceID).
	bus := c.Bus
	if bus.InstanceID == "" {
		bus.InstanceID = "host-1"
	}
	errs = append(errs, named(bus.Validate(), busVars)...)
	return errs
}

// Warnings lists settings that are valid but weaken security, for start-up logs.
func (c Config) Warnings() []string {
	var w []string
	if c.Auth.Issuer == jwksauth.WildcardDisable {
		w = append(w, "JWT_ISSUER=* : the token issuer is not checked")
	}
	if c.Auth.Audience == jwksauth.WildcardDisable {
		w = append(w, "JWT_AUDIENCE=* : the token audience is not checked")
	}
	if !c.Auth.RequireExp {
		w = append(w, "JWT_REQUIRE_EXP=false : tokens without exp never expire")
	}
	return w
}

// IsLoopbackHost reports whether host names the local machine (see
// setting.IsLoopbackHost).
func IsLoopbackHost(host string) bool { return setting.IsLoopbackHost(host) }

// secretVars are redacted in Effective.
var secretVars = map[string]func(string) string{
	"JWT_HS256_SECRET": func(v string) string { return Secret(v).String() },
	"REDIS_URL":        RedactedURL,
}

// Package config turns environment variables (and matching command-line flags)
// into one typed, validated Config for the whole service. Load is pure: it reads
// only through the lookup function it is given, so tests need no environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ensure-user/ensure-user/adapters/oteltrace"
)

// Config is the whole service configuration, one sub-struct per adapter.
type Config struct {
	HTTP    HTTP
	Redis   Redis
	Auth    Auth
	Engine  Engine
	Log     Log
	Tracing oteltrace.Config // the standard OTEL_* variables; off without an endpoint

	effective map[string]string // variable -> value in force, secrets redacted
}

// Effective returns every variable with the value in force (set or default),
// secrets redacted: what the service logs at start.
func (c Config) Effective() map[string]string { return c.effective }

// HTTP configures the Echo server.
type HTTP struct {
	Addr            string        // HTTP_ADDR
	MetricsAddr     string        // METRICS_ADDR: serve /metrics there instead of on Addr
	ShutdownDelay   time.Duration // SHUTDOWN_DELAY: readiness is 503 this long before the listener closes
	ShutdownTimeout time.Duration // SHUTDOWN_TIMEOUT: bound of the drain of in-flight requests
	MaxHeaderBytes  int           // HTTP_MAX_HEADER_BYTES: larger request headers get 431
	MaxConnections  int           // HTTP_MAX_CONNECTIONS: open client connections at most; 0: from the open-file limit
	CORSOrigins     []string      // CORS_ALLOWED_ORIGINS: empty turns CORS off
	ParkAbove       int           // HTTP_PARK_ABOVE: beyond this many waits in place, park waits; beyond this many connections in the HTTP server, park idle ones; -1: never
	// ReadHeaderTimeout (HTTP_READ_HEADER_TIMEOUT) bounds reading a
	// request's headers, from when the server starts to read them; the
	// whole request gets 5 s more.
	ReadHeaderTimeout time.Duration
}

// Redis configures the connection used by the Redis Streams bus.
type Redis struct {
	URL      Secret // REDIS_URL; may carry a password, so it is redacted in logs
	CAFile   string // REDIS_TLS_CA_FILE: PEM roots for rediss://
	CertFile string // REDIS_TLS_CERT_FILE: client certificate (mutual TLS)
	KeyFile  string // REDIS_TLS_KEY_FILE: client key (mutual TLS)

	MaxFlushDelay time.Duration // REDIS_MAX_FLUSH_DELAY: rueidis' pause after a write, to send more commands per write
}

// Auth configures token verification (JWKS and legacy HS256).
type Auth struct {
	JWKSURL              string        // JWKS_URL: https://, http:// (loopback unless AllowHTTP) or file://
	Refresh              time.Duration // JWKS_REFRESH
	MinRefresh           time.Duration // JWKS_MIN_REFRESH: unknown-kid refresh rate limit, start-up backoff cap
	AllowHTTP            bool          // JWKS_ALLOW_HTTP
	CAFile               string        // JWKS_CA_FILE: PEM roots for an https:// JWKS_URL
	Timeout              time.Duration // JWKS_TIMEOUT: bound of one key set fetch
	HS256Secret          Secret        // JWT_HS256_SECRET, at least 32 bytes
	Issuer               string        // JWT_ISSUER; "*" disables the check
	Audience             string        // JWT_AUDIENCE; "*" disables the check
	Algorithms           []string      // JWT_ALGORITHMS; empty: the algorithms the keys imply
	Leeway               time.Duration // JWT_LEEWAY, at most MaxLeeway
	RequireExp           bool          // JWT_REQUIRE_EXP
	UserIDClaims         []string      // JWT_USER_ID_CLAIMS, first present non-null wins
	EmailClaim           string        // JWT_EMAIL_CLAIM
	RequireVerifiedEmail bool          // JWT_REQUIRE_VERIFIED_EMAIL
}

// Engine configures the Engine bus and the use case's wait.
type Engine struct {
	Transport     string        // ENGINE_TRANSPORT: TransportRedis or TransportMemory
	RequestStream string        // ENGINE_REQUEST_STREAM
	ReplyStream   string        // ENGINE_REPLY_STREAM
	ReplyTimeout  time.Duration // ENGINE_REPLY_TIMEOUT
	SendTimeout   time.Duration // ENGINE_SEND_TIMEOUT: bound of one XADD (and the bus's other single commands), capped by ReplyTimeout
	// SendBatchWindow (ENGINE_SEND_BATCH_WINDOW) is how long an XADD may
	// wait for others to share its write while the service is busy; 0
	// writes each at once.
	SendBatchWindow time.Duration
	RequestMaxLen   int64  // ENGINE_REQUEST_MAXLEN, approximate (MAXLEN ~)
	MaxWaiting      int    // ENGINE_MAX_WAITING
	Coalesce        bool   // ENGINE_COALESCE: concurrent requests for one user share one command
	DurableSend     string // ENGINE_DURABLE_SEND: DurableOff, DurableAOF or DurableReplica
	InstanceID      string // INSTANCE_ID: replaces {instance} in ReplyStream; default hostname-pid
}

// Durability modes of ENGINE_DURABLE_SEND.
const (
	DurableOff     = "off"
	DurableAOF     = "aof"     // WAITAOF after XADD: on the master's disk
	DurableReplica = "replica" // WAIT after XADD: on at least one replica
)

// InstancePlaceholder in ENGINE_REPLY_STREAM is replaced, braces and all, by
// the instance id, giving each instance its own reply stream.
const InstancePlaceholder = "{instance}"

// ReplyStreamName is the reply stream this instance reads: ReplyStream with
// InstancePlaceholder replaced by InstanceID.
func (e Engine) ReplyStreamName() string {
	return strings.ReplaceAll(e.ReplyStream, InstancePlaceholder, e.InstanceID)
}

// WithInstanceID returns c with Engine.InstanceID defaulted to host-pid when
// INSTANCE_ID was not set; characters an id may not hold become '-'.
func (c Config) WithInstanceID(host string, pid int) Config {
	if c.Engine.InstanceID != "" {
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
	c.Engine.InstanceID = clean + "-" + strconv.Itoa(pid)
	if c.effective != nil {
		c.effective["INSTANCE_ID"] = c.Engine.InstanceID
	}
	return c
}

// PerInstanceReplies reports whether each instance has its own reply stream.
func (e Engine) PerInstanceReplies() bool {
	return strings.Contains(e.ReplyStream, InstancePlaceholder)
}

// Log configures zap.
type Log struct {
	Level  string // LOG_LEVEL: debug, info, warn, error
	Format string // LOG_FORMAT: json or console
	// FlushInterval (LOG_FLUSH_INTERVAL) buffers log lines and writes them
	// at least this often (and when 256 KiB are pending, at a warn or worse
	// line, and at exit); 0 writes every line at once.
	FlushInterval time.Duration
}

// Engine transports.
const (
	TransportRedis  = "redis-streams"
	TransportMemory = "memory"
)

// Limits enforced by Validate.
const (
	MaxLeeway       = 5 * time.Minute
	MinHS256Secret  = 32
	WildcardDisable = "*" // JWT_ISSUER / JWT_AUDIENCE value that turns the check off
)

// Secret is a string that never prints: String, GoString and MarshalText all
// redact it, so a Config can be logged whole.
type Secret string

// String redacts the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString redacts the secret in %#v.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// MarshalText redacts the secret in JSON and zap's reflection encoder.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret itself, for the one adapter that needs it.
func (s Secret) Reveal() string { return string(s) }

// RedactedURL returns u with any password replaced, for logs.
func RedactedURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "[unparsable URL]"
	}
	return p.Redacted()
}

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
	{"ENGINE_DURABLE_SEND", DurableOff, "after XADD wait until the command is on disk (aof, Redis >= 7.2) or on a replica (replica); off"},
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
		HTTP: HTTP{
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
		Redis: Redis{
			URL:      Secret(p.Str("REDIS_URL")),
			CAFile:   p.Str("REDIS_TLS_CA_FILE"),
			CertFile: p.Str("REDIS_TLS_CERT_FILE"),
			KeyFile:  p.Str("REDIS_TLS_KEY_FILE"),

			MaxFlushDelay: p.Duration("REDIS_MAX_FLUSH_DELAY"),
		},
		Auth: Auth{
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
		Engine: Engine{
			Transport:       p.Str("ENGINE_TRANSPORT"),
			RequestStream:   p.Str("ENGINE_REQUEST_STREAM"),
			ReplyStream:     p.Str("ENGINE_REPLY_STREAM"),
			ReplyTimeout:    p.Duration("ENGINE_REPLY_TIMEOUT"),
			SendTimeout:     p.Duration("ENGINE_SEND_TIMEOUT"),
			SendBatchWindow: p.Duration("ENGINE_SEND_BATCH_WINDOW"),
			RequestMaxLen:   int64(p.Int("ENGINE_REQUEST_MAXLEN")),
			MaxWaiting:      p.Int("ENGINE_MAX_WAITING"),
			Coalesce:        p.Bool("ENGINE_COALESCE"),
			DurableSend:     p.Str("ENGINE_DURABLE_SEND"),
			InstanceID:      p.Str("INSTANCE_ID"),
		},
		Log: Log{Level: p.Str("LOG_LEVEL"), Format: p.Str("LOG_FORMAT"), FlushInterval: p.Duration("LOG_FLUSH_INTERVAL")},
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
				raw = "REDACTED"
			}
			c.effective[v.Name] = raw
		}
	}
	if len(errs) == 0 {
		errs = c.Validate()
	}
	return c, errors.Join(errs...)
}

// Validate reports every problem with c, each naming its variable.
func (c Config) Validate() []error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	if c.HTTP.Addr == "" {
		bad("HTTP_ADDR", "must not be empty")
	}
	if c.HTTP.ShutdownDelay < 0 {
		bad("SHUTDOWN_DELAY", "must not be negative")
	}
	if c.HTTP.ShutdownTimeout <= c.Engine.ReplyTimeout {
		bad("SHUTDOWN_TIMEOUT", "must be longer than ENGINE_REPLY_TIMEOUT (%s), or in-flight requests are cut", c.Engine.ReplyTimeout)
	}
	if c.HTTP.ReadHeaderTimeout < time.Second || c.HTTP.ReadHeaderTimeout > 5*time.Minute {
		bad("HTTP_READ_HEADER_TIMEOUT", "must be between 1s and 5m")
	}
	if c.HTTP.MaxHeaderBytes < 1024 || c.HTTP.MaxHeaderBytes > 1<<20 {
		bad("HTTP_MAX_HEADER_BYTES", "must be between 1024 and 1048576")
	}
	if c.HTTP.MaxConnections < 0 {
		bad("HTTP_MAX_CONNECTIONS", "must not be negative")
	}
	if c.Redis.MaxFlushDelay < 0 || c.Redis.MaxFlushDelay > 10*time.Millisecond {
		bad("REDIS_MAX_FLUSH_DELAY", "must be between 0 and 10ms")
	}
	if c.HTTP.ParkAbove < -1 {
		bad("HTTP_PARK_ABOVE", "must be -1 (never park), 0 (park every wait) or a positive count")
	}
	for _, o := range c.HTTP.CORSOrigins {
		if u, err := url.Parse(o); o != "*" && (err != nil || u.Scheme == "" || u.Host == "") {
			bad("CORS_ALLOWED_ORIGINS", "%q is not an origin (scheme://host[:port]) or *", o)
		}
	}
	a := c.Auth
	if a.JWKSURL == "" && a.HS256Secret == "" {
		bad("JWKS_URL", "set JWKS_URL, JWT_HS256_SECRET, or both")
	}
	if a.JWKSURL != "" {
		if err := checkJWKSURL(a.JWKSURL, a.AllowHTTP); err != nil {
			bad("JWKS_URL", "%v", err)
		}
		if a.Issuer == "" {
			bad("JWT_ISSUER", "required with JWKS_URL (use * to disable the check explicitly)")
		}
		if a.Audience == "" {
			bad("JWT_AUDIENCE", "required with JWKS_URL (use * to disable the check explicitly)")
		}
	}
	if a.HS256Secret != "" && len(a.HS256Secret) < MinHS256Secret {
		bad("JWT_HS256_SECRET", "must be at least %d bytes", MinHS256Secret)
	}
	if a.Refresh <= 0 {
		bad("JWKS_REFRESH", "must be positive")
	}
	if a.MinRefresh <= 0 {
		bad("JWKS_MIN_REFRESH", "must be positive")
	}
	if a.Timeout <= 0 {
		bad("JWKS_TIMEOUT", "must be positive")
	}
	if (c.Redis.CertFile == "") != (c.Redis.KeyFile == "") {
		bad("REDIS_TLS_CERT_FILE", "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together")
	}
	if a.Leeway < 0 || a.Leeway > MaxLeeway {
		bad("JWT_LEEWAY", "must be between 0 and %s", MaxLeeway)
	}
	for _, alg := range a.Algorithms {
		if !knownAlgorithm(alg) {
			bad("JWT_ALGORITHMS", "unsupported algorithm %q", alg)
		}
	}
	if len(a.UserIDClaims) == 0 {
		bad("JWT_USER_ID_CLAIMS", "must name at least one claim")
	}
	if a.EmailClaim == "" {
		bad("JWT_EMAIL_CLAIM", "must not be empty")
	}
	e := c.Engine
	switch e.Transport {
	case TransportRedis:
		if c.Redis.URL == "" {
			bad("REDIS_URL", "required with ENGINE_TRANSPORT=%s", TransportRedis)
		} else if err := checkRedisURL(c.Redis.URL.Reveal()); err != nil {
			bad("REDIS_URL", "%v", err)
		}
	case TransportMemory:
	default:
		bad("ENGINE_TRANSPORT", "must be %s or %s, not %q", TransportRedis, TransportMemory, e.Transport)
	}
	if e.RequestStream == "" {
		bad("ENGINE_REQUEST_STREAM", "must not be empty")
	}
	if e.ReplyStream == "" {
		bad("ENGINE_REPLY_STREAM", "must not be empty")
	}
	if e.RequestStream != "" && e.RequestStream == e.ReplyStream {
		bad("ENGINE_REPLY_STREAM", "must differ from ENGINE_REQUEST_STREAM")
	}
	if e.ReplyTimeout <= 0 {
		bad("ENGINE_REPLY_TIMEOUT", "must be positive")
	}
	if e.SendBatchWindow < 0 || e.SendBatchWindow > 100*time.Millisecond {
		bad("ENGINE_SEND_BATCH_WINDOW", "must be between 0 (off) and 100ms")
	}
	if e.SendTimeout < 10*time.Millisecond || e.SendTimeout > time.Minute {
		bad("ENGINE_SEND_TIMEOUT", "must be between 10ms and 1m")
	}
	if e.RequestMaxLen <= 0 {
		bad("ENGINE_REQUEST_MAXLEN", "must be positive")
	}
	if e.MaxWaiting <= 0 {
		bad("ENGINE_MAX_WAITING", "must be positive")
	}
	switch e.DurableSend {
	case DurableOff, DurableAOF, DurableReplica:
	default:
		bad("ENGINE_DURABLE_SEND", "must be off, aof or replica, not %q", e.DurableSend)
	}
	if e.DurableSend != DurableOff && e.Transport != TransportRedis {
		bad("ENGINE_DURABLE_SEND", "needs ENGINE_TRANSPORT=%s", TransportRedis)
	}
	if strings.ContainsAny(e.InstanceID, "{}") || strings.ContainsFunc(e.InstanceID, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		bad("INSTANCE_ID", "must not contain braces, blanks or control characters")
	}
	if e.PerInstanceReplies() && strings.Count(e.ReplyStream, InstancePlaceholder) != 1 {
		bad("ENGINE_REPLY_STREAM", "may contain %s once", InstancePlaceholder)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", "must be debug, info, warn or error, not %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		bad("LOG_FORMAT", "must be json or console, not %q", c.Log.Format)
	}
	if c.Log.FlushInterval < 0 || c.Log.FlushInterval > time.Minute {
		bad("LOG_FLUSH_INTERVAL", "must be between 0s and 1m")
	}
	return errs
}

// Warnings lists settings that are valid but weaken security, for start-up logs.
func (c Config) Warnings() []string {
	var w []string
	if c.Auth.Issuer == WildcardDisable {
		w = append(w, "JWT_ISSUER=* : the token issuer is not checked")
	}
	if c.Auth.Audience == WildcardDisable {
		w = append(w, "JWT_AUDIENCE=* : the token audience is not checked")
	}
	if !c.Auth.RequireExp {
		w = append(w, "JWT_REQUIRE_EXP=false : tokens without exp never expire")
	}
	return w
}

func checkJWKSURL(raw string, allowHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !allowHTTP && !IsLoopbackHost(u.Hostname()) {
			return fmt.Errorf("http:// is allowed only for loopback hosts unless JWKS_ALLOW_HTTP=true")
		}
	case "file":
		if u.Path == "" {
			return fmt.Errorf("file:// URL without a path")
		}
		return nil
	default:
		return fmt.Errorf("scheme must be https, http or file, not %q", u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("missing host")
	}
	return nil
}

func checkRedisURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL (%s)", RedactedURL(raw))
	}
	switch u.Scheme {
	case "redis", "rediss", "unix", "valkey", "valkeys":
		return nil
	}
	return fmt.Errorf("scheme must be redis, rediss or unix, not %q", u.Scheme)
}

// IsLoopbackHost reports whether host names the local machine: localhost or a
// loopback IP literal.
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

var algorithms = []string{
	"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512", "EdDSA", "HS256",
}

func knownAlgorithm(alg string) bool {
	for _, a := range algorithms {
		if a == alg {
			return true
		}
	}
	return false
}

// secretVars are redacted in Effective.
var secretVars = map[string]func(string) string{
	"JWT_HS256_SECRET": func(v string) string { return Secret(v).String() },
	"REDIS_URL":        RedactedURL,
}

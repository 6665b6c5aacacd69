package redisbus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/internal/setting"
)

// Connection timeouts, unless REDIS_URL sets dial_timeout or write_timeout.
const (
	// DialTimeout bounds a TCP connect plus TLS handshake, and separately the
	// HELLO/AUTH that follows. Redis down on a reachable host refuses at once;
	// an unreachable host (dropped SYNs) must not hold a request longer than
	// this, so that Send reports ErrBusUnavailable well under a second. 500 ms
	// still leaves room for a TLS handshake across regions.
	DialTimeout = 500 * time.Millisecond
	// ConnWriteTimeout is how long rueidis waits for a PING answer on a
	// connection that has commands in flight but received nothing for one
	// keep-alive interval (1 s) before it declares the connection dead and
	// fails those commands. 2 s rides out a short Redis stall (fork, slow
	// fsync) yet finds a half-open connection well within the 5 s reply wait.
	ConnWriteTimeout = 2 * time.Second
)

// SentinelRefresh is how often a sentinel client asks the sentinels where
// the master is, besides following their +switch-master events: rueidis'
// sentinel client otherwise relies on that event alone, and a missed one
// would leave it writing to a demoted master (READONLY) until a restart.
const SentinelRefresh = 5 * time.Second

// MaxMovedRedirections bounds the MOVED/ASK redirections rueidis' cluster
// client follows for one command (unbounded by default). During a failover
// nodes may disagree for a moment on who owns a slot; past this bound the
// MOVED error is returned, and as a Redis error it means not sent (503)
// rather than a deadline with an unknown outcome.
const MaxMovedRedirections = 3

// ConnBuffer is the size of each connection's read and write buffers,
// instead of rueidis' 0.5 MiB each. Commands and replies are a few hundred
// bytes, and a pipeline flushes whatever is queued: 64 KiB holds a couple of
// hundred XADDs or an XREAD of 512 replies in two reads. The default would
// cost 1 MiB per connection, and ENGINE_DURABLE_SEND keeps one pooled
// connection per send in flight (up to 1,024).
const ConnBuffer = 64 << 10

// ClientName is the CLIENT SETNAME of the service's connections, unless
// REDIS_URL sets client_name, so operators can find them in CLIENT LIST.
const ClientName = "ensure-user"

// Dial returns a Redis client for cfg and a cleanup that closes it.
//
// REDIS_URL goes through rueidis.ParseURL: redis:// and rediss:// (TLS, with
// REDIS_TLS_CA_FILE and REDIS_TLS_CERT_FILE/KEY_FILE when set), ?addr= for a
// cluster, ?master_set= for sentinel. Client-side caching is off, and so are
// rueidis' own retries: the bus never retries a publish, and its reply reader
// retries by itself so that it knows when it is disconnected.
//
// rueidis.NewClient connects at construction (it must learn whether the
// server is a cluster), so it fails while Redis is down. Dial then falls back,
// for a URL naming one server without a sentinel, to a standalone client that
// rueidis builds without a connection (ForceSingleClient) and that connects
// on first use and after every loss: the service starts, reports not ready
// and answers 503 until Redis is back. The price: a single-address URL that
// names a cluster node which is down at start is treated as standalone;
// clusters should list their nodes with ?addr=. Cluster and sentinel URLs, and
// errors a retry cannot fix (authentication, certificate verification, a
// malformed URL), still fail Dial.
//
// Sentinel (?master_set=): the addresses are the sentinels'. Their
// connections get the same dial timeout, TLS settings (rediss:// means TLS to
// the sentinels too) and client name as the master's, but no credentials:
// the URL's user and password are the master's, and sentinels are expected
// to run without AUTH. The client also re-reads the topology every
// SentinelRefresh. Cluster: redirections are bounded by MaxMovedRedirections.
func Dial(cfg ConnConfig, log *zap.Logger) (rueidis.Client, func(), error) {
	opt, err := clientOptions(cfg)
	if err != nil {
		return nil, nil, err
	}
	where := setting.RedactedURL(cfg.URL.Reveal())
	client, err := rueidis.NewClient(opt)
	if err != nil {
		if !canConnectLater(opt, err) {
			return nil, nil, fmt.Errorf("connect to redis %s: %w", where, err)
		}
		log.Named("redis").Warn("redis unreachable at start: connecting lazily as a standalone client",
			zap.String("url", where), zap.Error(err))
		opt.ForceSingleClient = true
		// With ForceSingleClient rueidis returns the client even when its
		// first dial fails (newSingleClient in rueidis' client.go).
		if client, err = rueidis.NewClient(opt); client == nil {
			return nil, nil, fmt.Errorf("connect to redis %s: %w", where, err)
		}
	}
	return client, client.Close, nil
}

// clientOptions turns cfg into rueidis options; see Dial.
func clientOptions(cfg ConnConfig) (rueidis.ClientOption, error) {
	raw := cfg.URL.Reveal()
	if _, err := url.Parse(raw); err != nil {
		return rueidis.ClientOption{}, errors.New("REDIS_URL is not a URL") // url's error would print the password
	}
	opt, err := rueidis.ParseURL(raw)
	if err != nil {
		return rueidis.ClientOption{}, fmt.Errorf("REDIS_URL %s: %w", setting.RedactedURL(raw), err)
	}
	opt.DisableCache = true
	opt.DisableRetry = true
	// Every connection gets a reading goroutine from the start, so a
	// connection Redis closed is noticed at once and replaced before the next
	// command, instead of failing that command with an ambiguous EOF.
	opt.AlwaysPipelining = true
	opt.MaxFlushDelay = cfg.MaxFlushDelay
	if opt.Dialer.Timeout == 0 {
		opt.Dialer.Timeout = DialTimeout
	}
	if opt.ConnWriteTimeout == 0 {
		opt.ConnWriteTimeout = ConnWriteTimeout
	}
	if opt.ClientName == "" {
		opt.ClientName = ClientName
	}
	opt.ReadBufferEachConn, opt.WriteBufferEachConn = ConnBuffer, ConnBuffer
	if opt.TLSConfig, err = withTLSFiles(opt.TLSConfig, cfg); err != nil {
		return rueidis.ClientOption{}, err
	}
	opt.DialCtxFn = markDialErrors(opt.DialCtxFn) // the sentinel connections use it too
	if opt.Sentinel.MasterSet != "" {
		opt.Sentinel.Dialer = opt.Dialer
		opt.Sentinel.TLSConfig = opt.TLSConfig
		opt.Sentinel.ClientName = opt.ClientName
		if opt.Sentinel.TopologyRefreshInterval == 0 {
			opt.Sentinel.TopologyRefreshInterval = SentinelRefresh
		}
	}
	if opt.ClusterOption.MaxMovedRedirections == 0 {
		opt.ClusterOption.MaxMovedRedirections = MaxMovedRedirections
	}
	return opt, nil
}

// withTLSFiles adds the CA and client certificate files of cfg to base, the
// TLS config ParseURL made for rediss:// (nil for redis://).
func withTLSFiles(base *tls.Config, cfg ConnConfig) (*tls.Config, error) {
	if cfg.CAFile == "" && cfg.CertFile == "" && cfg.KeyFile == "" {
		return base, nil
	}
	if base == nil {
		return nil, errors.New("REDIS_TLS_* files are set but REDIS_URL is not rediss://")
	}
	c := base.Clone()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("REDIS_TLS_CA_FILE: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("REDIS_TLS_CA_FILE %s: no PEM certificate", cfg.CAFile)
		}
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("REDIS_TLS_CERT_FILE/REDIS_TLS_KEY_FILE: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// canConnectLater reports whether Dial may fall back to a lazily connecting
// standalone client after NewClient failed with err.
func canConnectLater(opt rueidis.ClientOption, err error) bool {
	if len(opt.InitAddress) != 1 || opt.Sentinel.MasterSet != "" {
		return false
	}
	if re, ok := rueidis.IsRedisErr(err); ok {
		return re.IsLoading() // WRONGPASS, NOAUTH, NOPERM… will not go away
	}
	var cert *tls.CertificateVerificationError
	return !errors.As(err, &cert)
}

// dialError marks a failure to establish a connection (TCP connect, TLS
// handshake): a command that meets it was provably not written anywhere.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

type dialFunc = func(ctx context.Context, addr string, d *net.Dialer, c *tls.Config) (net.Conn, error)

// markDialErrors wraps dial (nil: rueidis' default, reproduced from its
// rueidis.go) so that its errors are dialErrors. rueidis hands a failed
// dial's error unchanged to every command waiting for that connection.
func markDialErrors(dial dialFunc) dialFunc {
	return func(ctx context.Context, addr string, d *net.Dialer, c *tls.Config) (net.Conn, error) {
		var conn net.Conn
		var err error
		switch {
		case dial != nil:
			conn, err = dial(ctx, addr, d, c)
		case c != nil:
			conn, err = (&tls.Dialer{NetDialer: d, Config: c}).DialContext(ctx, "tcp", addr)
		default:
			conn, err = d.DialContext(ctx, "tcp", addr)
		}
		if err != nil {
			return nil, &dialError{err}
		}
		return conn, nil
	}
}

package echohttp

import (
	"net/url"
	"time"

	"github.com/ensure-user/ensure-user/internal/setting"
)

// Config is the HTTP server's configuration.
type Config struct {
	Addr            string        // listen address
	MetricsAddr     string        // serve /metrics there instead of on Addr ("": on Addr)
	ShutdownDelay   time.Duration // readiness is 503 this long before the listener closes
	ShutdownTimeout time.Duration // bound of the drain of in-flight requests
	MaxHeaderBytes  int           // larger request headers get 431
	MaxConnections  int           // open client connections at most; 0: from the open-file limit
	CORSOrigins     []string      // empty turns CORS off
	// ParkAbove bounds the waits in place and the connections net/http
	// holds before waits and idle connections are parked; -1: never.
	ParkAbove int
	// ReadHeaderTimeout bounds reading a request's headers, from when the
	// server starts to read them; the whole request gets 5 s more. Zero
	// means DefaultReadHeaderTimeout.
	ReadHeaderTimeout time.Duration
}

// Validate reports every problem with c, by field.
func (c Config) Validate() setting.Problems {
	var p setting.Problems
	if c.Addr == "" {
		p.Add("Addr", "must not be empty")
	}
	if c.ShutdownDelay < 0 {
		p.Add("ShutdownDelay", "must not be negative")
	}
	if c.ReadHeaderTimeout != 0 && (c.ReadHeaderTimeout < time.Second || c.ReadHeaderTimeout > 5*time.Minute) {
		p.Add("ReadHeaderTimeout", "must be between 1s and 5m")
	}
	if c.MaxHeaderBytes < 1024 || c.MaxHeaderBytes > 1<<20 {
		p.Add("MaxHeaderBytes", "must be between 1024 and 1048576")
	}
	if c.MaxConnections < 0 {
		p.Add("MaxConnections", "must not be negative")
	}
	if c.ParkAbove < -1 {
		p.Add("ParkAbove", "must be -1 (never park), 0 (park every wait) or a positive count")
	}
	for _, o := range c.CORSOrigins {
		if u, err := url.Parse(o); o != "*" && (err != nil || u.Scheme == "" || u.Host == "") {
			p.Add("CORSOrigins", "%q is not an origin (scheme://host[:port]) or *", o)
		}
	}
	return p
}

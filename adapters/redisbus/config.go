package redisbus

import (
	"net/url"
	"strings"
	"time"

	"github.com/ensure-user/ensure-user/internal/setting"
)

// ConnConfig is the Redis connection's configuration (Dial).
type ConnConfig struct {
	URL      setting.Secret // redis://, rediss://, unix:// (cluster: ?addr=, sentinel: ?master_set=); may carry a password
	CAFile   string         // PEM roots for rediss://
	CertFile string         // client certificate (mutual TLS), with KeyFile
	KeyFile  string         // client key (mutual TLS), with CertFile
	// MaxFlushDelay is rueidis' pause after a write, to send more commands
	// per write while others are still unanswered.
	MaxFlushDelay time.Duration
}

// Validate reports every problem with c, by field.
func (c ConnConfig) Validate() setting.Problems {
	var p setting.Problems
	if c.URL == "" {
		p.Add("URL", "must not be empty")
	} else if u, err := url.Parse(c.URL.Reveal()); err != nil {
		p.Add("URL", "not a URL (%s)", setting.RedactedURL(c.URL.Reveal()))
	} else {
		switch u.Scheme {
		case "redis", "rediss", "unix", "valkey", "valkeys":
		default:
			p.Add("URL", "scheme must be redis, rediss or unix, not %q", u.Scheme)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		p.Add("CertFile", "the client certificate and key go together")
	}
	if c.MaxFlushDelay < 0 || c.MaxFlushDelay > 10*time.Millisecond {
		p.Add("MaxFlushDelay", "must be between 0 and 10ms")
	}
	return p
}

// Durability modes of Config.DurableSend.
const (
	DurableOff     = "off"
	DurableAOF     = "aof"     // WAITAOF after XADD: on the master's disk
	DurableReplica = "replica" // WAIT after XADD: on at least one replica
)

// InstancePlaceholder in Config.ReplyStream is replaced, braces and all, by
// the instance id, giving each instance its own reply stream.
const InstancePlaceholder = "{instance}"

// Config is the Engine bus's configuration.
type Config struct {
	RequestStream string // the Engine reads commands here
	ReplyStream   string // the Engine writes replies here; may hold InstancePlaceholder
	InstanceID    string // replaces InstancePlaceholder
	// ReplyTimeout is the use case's wait: it caps SendTimeout and the
	// durable send's wait.
	ReplyTimeout time.Duration
	// SendTimeout bounds one XADD (and the bus's other single commands);
	// zero means XaddTimeout.
	SendTimeout time.Duration
	// SendBatchWindow is how long an XADD may wait for others to share its
	// write while the service is busy; 0 writes each at once.
	SendBatchWindow time.Duration
	RequestMaxLen   int64  // the request stream's approximate MAXLEN
	MaxWaiting      int    // requests waiting at most: the reply table remembers as many abandoned ids
	DurableSend     string // DurableOff (or ""), DurableAOF or DurableReplica
}

// ReplyStreamName is the reply stream this instance reads: ReplyStream with
// InstancePlaceholder replaced by InstanceID.
func (c Config) ReplyStreamName() string {
	return strings.ReplaceAll(c.ReplyStream, InstancePlaceholder, c.InstanceID)
}

// PerInstanceReplies reports whether each instance has its own reply stream.
func (c Config) PerInstanceReplies() bool {
	return strings.Contains(c.ReplyStream, InstancePlaceholder)
}

// Validate reports every problem with c, by field.
func (c Config) Validate() setting.Problems {
	var p setting.Problems
	if c.RequestStream == "" {
		p.Add("RequestStream", "must not be empty")
	}
	switch {
	case c.ReplyStream == "":
		p.Add("ReplyStream", "must not be empty")
	case c.RequestStream != "" && c.RequestStream == c.ReplyStreamName():
		p.Add("ReplyStream", "must differ from the request stream")
	case c.PerInstanceReplies() && strings.Count(c.ReplyStream, InstancePlaceholder) != 1:
		p.Add("ReplyStream", "may contain %s once", InstancePlaceholder)
	case c.PerInstanceReplies() && c.InstanceID == "":
		p.Add("InstanceID", "must be set when the reply stream holds %s", InstancePlaceholder)
	}
	if strings.ContainsAny(c.InstanceID, "{}") || strings.ContainsFunc(c.InstanceID, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		p.Add("InstanceID", "must not contain braces, blanks or control characters")
	}
	if c.SendTimeout != 0 && (c.SendTimeout < 10*time.Millisecond || c.SendTimeout > time.Minute) {
		p.Add("SendTimeout", "must be between 10ms and 1m")
	}
	if c.SendBatchWindow < 0 || c.SendBatchWindow > 100*time.Millisecond {
		p.Add("SendBatchWindow", "must be between 0 (off) and 100ms")
	}
	if c.RequestMaxLen <= 0 {
		p.Add("RequestMaxLen", "must be positive")
	}
	switch c.DurableSend {
	case "", DurableOff, DurableAOF, DurableReplica:
	default:
		p.Add("DurableSend", "must be off, aof or replica, not %q", c.DurableSend)
	}
	return p
}

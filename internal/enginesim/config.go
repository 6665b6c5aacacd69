package enginesim

import (
	"cmp"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ensure-user/ensure-user/config"
)

// Defaults of Config, applied by New to zero fields and by Load to unset
// variables.
const (
	DefaultRequestStream = "engine:requests"
	DefaultReplyStream   = "engine:replies"
	DefaultGroup         = "engine"
	DefaultReadCount     = 256
	DefaultReadBlock     = time.Second
	DefaultClaimIdle     = 30 * time.Second
	DefaultReplyMaxLen   = 100_000
	DefaultMaxInFlight   = 10_000
)

// UsersKeySuffix follows the request stream's name in the default users key.
const UsersKeySuffix = ":users"

// Config configures a Sim. The zero value of every field means its default,
// so Config{} is the Engine a default service talks to.
type Config struct {
	RequestStream string        // ENGINE_REQUEST_STREAM: the stream the commands arrive on
	ReplyStream   string        // ENGINE_REPLY_STREAM: replies to requests without a replyTo, or naming it
	Group         string        // ENGINE_GROUP: the consumer group every instance joins
	Consumer      string        // ENGINE_CONSUMER: this instance's name, stable to resume its pending list; empty: hostname-pid
	UsersKey      string        // ENGINE_USERS_KEY: the Redis set of known users; empty: RequestStream + ":users"
	ReadCount     int           // ENGINE_READ_COUNT: XREADGROUP COUNT, the largest batch
	ReadBlock     time.Duration // ENGINE_READ_BLOCK: XREADGROUP BLOCK, and the longest wait for a stop
	ClaimIdle     time.Duration // ENGINE_CLAIM_IDLE: entries pending longer are taken over (XAUTOCLAIM)
	ReplyMaxLen   int64         // ENGINE_REPLY_MAXLEN: XADD MAXLEN ~ of the reply streams
	ReplyDelay    time.Duration // ENGINE_REPLY_DELAY: each reply waits this long
	ReplyDelayMax time.Duration // ENGINE_REPLY_DELAY_MAX: if set, the wait is uniform in [ReplyDelay, ReplyDelayMax)
	MaxInFlight   int           // ENGINE_MAX_IN_FLIGHT: replies waiting for their delay before reads pause
	ErrorRatio    float64       // ENGINE_ERROR_RATIO: fraction of createUser answered status error
	DropRatio     float64       // ENGINE_DROP_RATIO: fraction of requests acked without a reply
	Legacy        bool          // ENGINE_LEGACY: replies carry no status, like the old Engine
}

// Vars lists the variables Load reads, with their defaults, in documentation
// order; the engine-sim binary derives its flags from it.
var Vars = []config.Var{
	{Name: "ENGINE_REQUEST_STREAM", Default: DefaultRequestStream, Usage: "stream the createUser commands arrive on"},
	{Name: "ENGINE_REPLY_STREAM", Default: DefaultReplyStream, Usage: "stream for replies to requests without replyTo (created if missing)"},
	{Name: "ENGINE_GROUP", Default: DefaultGroup, Usage: "consumer group shared by all engine-sim instances"},
	{Name: "ENGINE_CONSUMER", Default: "", Usage: "consumer name of this instance (empty: hostname-pid); keep it stable to resume the pending list on restart"},
	{Name: "ENGINE_USERS_KEY", Default: "", Usage: "Redis set of known users (empty: <ENGINE_REQUEST_STREAM>:users)"},
	{Name: "ENGINE_READ_COUNT", Default: strconv.Itoa(DefaultReadCount), Usage: "XREADGROUP COUNT: largest batch"},
	{Name: "ENGINE_READ_BLOCK", Default: DefaultReadBlock.String(), Usage: "XREADGROUP BLOCK; also how long a stop may wait for the read in flight"},
	{Name: "ENGINE_CLAIM_IDLE", Default: DefaultClaimIdle.String(), Usage: "entries pending longer than this, on any consumer, are claimed and answered (XAUTOCLAIM)"},
	{Name: "ENGINE_REPLY_MAXLEN", Default: strconv.Itoa(DefaultReplyMaxLen), Usage: "approximate cap of the reply streams (MAXLEN ~)"},
	{Name: "ENGINE_REPLY_DELAY", Default: "0s", Usage: "delay before each reply"},
	{Name: "ENGINE_REPLY_DELAY_MAX", Default: "0s", Usage: "if set, each reply waits a uniform random time between ENGINE_REPLY_DELAY and this"},
	{Name: "ENGINE_MAX_IN_FLIGHT", Default: strconv.Itoa(DefaultMaxInFlight), Usage: "replies waiting for their delay beyond which reads pause"},
	{Name: "ENGINE_ERROR_RATIO", Default: "0", Usage: "fraction (0 to 1) of createUser answered with status error"},
	{Name: "ENGINE_DROP_RATIO", Default: "0", Usage: "fraction (0 to 1) of requests acked but never answered"},
	{Name: "ENGINE_LEGACY", Default: "false", Usage: "answer without a status field, exactly like the old Engine"},
}

// Load reads the ENGINE_* variables of Vars through lookup, applying their
// defaults, and validates the result. The error lists every problem, each
// naming its variable.
func Load(lookup config.Lookup) (Config, error) {
	p := config.NewParser(lookup, Vars)
	c := Config{
		RequestStream: p.Str("ENGINE_REQUEST_STREAM"),
		ReplyStream:   p.Str("ENGINE_REPLY_STREAM"),
		Group:         p.Str("ENGINE_GROUP"),
		Consumer:      p.Str("ENGINE_CONSUMER"),
		UsersKey:      p.Str("ENGINE_USERS_KEY"),
		ReadCount:     p.Int("ENGINE_READ_COUNT"),
		ReadBlock:     p.Duration("ENGINE_READ_BLOCK"),
		ClaimIdle:     p.Duration("ENGINE_CLAIM_IDLE"),
		ReplyMaxLen:   int64(p.Int("ENGINE_REPLY_MAXLEN")),
		ReplyDelay:    p.Duration("ENGINE_REPLY_DELAY"),
		ReplyDelayMax: p.Duration("ENGINE_REPLY_DELAY_MAX"),
		MaxInFlight:   p.Int("ENGINE_MAX_IN_FLIGHT"),
		ErrorRatio:    p.Ratio("ENGINE_ERROR_RATIO"),
		DropRatio:     p.Ratio("ENGINE_DROP_RATIO"),
		Legacy:        p.Bool("ENGINE_LEGACY"),
	}
	if errs := p.Errs(); len(errs) > 0 {
		return c, errors.Join(errs...)
	}
	// Validate before the defaults, so that an explicit zero is refused rather
	// than replaced; only the two names that default to empty are filled, as
	// New will fill them.
	check := c
	check.UsersKey = cmp.Or(c.UsersKey, c.RequestStream+UsersKeySuffix)
	check.Consumer = cmp.Or(c.Consumer, "hostname-pid")
	return c, check.Validate()
}

// Validate reports every problem with c, each naming its variable. It does
// not apply defaults: New does, then validates.
func (c Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	for _, v := range []struct{ name, value string }{
		{"ENGINE_REQUEST_STREAM", c.RequestStream},
		{"ENGINE_REPLY_STREAM", c.ReplyStream},
		{"ENGINE_GROUP", c.Group},
		{"ENGINE_CONSUMER", c.Consumer},
		{"ENGINE_USERS_KEY", c.UsersKey},
	} {
		if v.value == "" {
			bad(v.name, "must not be empty")
		}
	}
	if c.RequestStream != "" && c.ReplyStream == c.RequestStream {
		bad("ENGINE_REPLY_STREAM", "must differ from ENGINE_REQUEST_STREAM")
	}
	if c.UsersKey != "" && (c.UsersKey == c.RequestStream || c.UsersKey == c.ReplyStream) {
		bad("ENGINE_USERS_KEY", "must differ from the request and reply streams")
	}
	if c.ReadCount <= 0 {
		bad("ENGINE_READ_COUNT", "must be positive")
	}
	if c.ReadBlock < time.Millisecond {
		bad("ENGINE_READ_BLOCK", "must be at least 1ms (BLOCK 0 would wait forever)")
	}
	if c.ClaimIdle < time.Millisecond {
		bad("ENGINE_CLAIM_IDLE", "must be at least 1ms")
	} else if longest := max(c.ReplyDelay, c.ReplyDelayMax); c.ClaimIdle <= longest {
		bad("ENGINE_CLAIM_IDLE", "must be longer than the longest reply delay (%s), or replies still waiting are claimed and answered twice", longest)
	}
	if c.ReplyMaxLen <= 0 {
		bad("ENGINE_REPLY_MAXLEN", "must be positive")
	}
	if c.ReplyDelay < 0 {
		bad("ENGINE_REPLY_DELAY", "must not be negative")
	}
	if c.ReplyDelayMax != 0 && c.ReplyDelayMax < c.ReplyDelay {
		bad("ENGINE_REPLY_DELAY_MAX", "must be 0 or at least ENGINE_REPLY_DELAY (%s)", c.ReplyDelay)
	}
	if c.MaxInFlight <= 0 {
		bad("ENGINE_MAX_IN_FLIGHT", "must be positive")
	}
	if !(c.ErrorRatio >= 0 && c.ErrorRatio <= 1) { // also refuses NaN
		bad("ENGINE_ERROR_RATIO", "must be between 0 and 1")
	}
	if !(c.DropRatio >= 0 && c.DropRatio <= 1) {
		bad("ENGINE_DROP_RATIO", "must be between 0 and 1")
	}
	return errors.Join(errs...)
}

// withDefaults fills the zero fields of c; consumer returns the default
// consumer name.
func (c Config) withDefaults(consumer func() string) Config {
	c.RequestStream = cmp.Or(c.RequestStream, DefaultRequestStream)
	c.ReplyStream = cmp.Or(c.ReplyStream, DefaultReplyStream)
	c.Group = cmp.Or(c.Group, DefaultGroup)
	c.UsersKey = cmp.Or(c.UsersKey, c.RequestStream+UsersKeySuffix)
	if c.Consumer == "" {
		c.Consumer = consumer()
	}
	c.ReadCount = cmp.Or(c.ReadCount, DefaultReadCount)
	c.ReadBlock = cmp.Or(c.ReadBlock, DefaultReadBlock)
	c.ClaimIdle = cmp.Or(c.ClaimIdle, DefaultClaimIdle)
	c.ReplyMaxLen = cmp.Or(c.ReplyMaxLen, DefaultReplyMaxLen)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, DefaultMaxInFlight)
	return c
}

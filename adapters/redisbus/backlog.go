package redisbus

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// The request stream is capped by XADD MAXLEN ~ ENGINE_REQUEST_MAXLEN: when
// the Engine falls behind (or is down) by more than MAXLEN commands, each new
// XADD trims the oldest ones, read or not, and those users are never created.
// The maintenance goroutine therefore samples, every BacklogInterval and off
// the hot path, the stream's length (XLEN) and, when the Engine reads through
// consumer groups, each group's lag (XINFO GROUPS, the "lag" field of Redis
// 7.0: entries not yet delivered to the group). The unprocessed backlog is
// the largest lag. An Engine reading with plain XREAD (no group) leaves no
// trace of its position, and the stream's length says nothing then (it sits
// near MAXLEN in normal operation, read or not): without a group only the
// length is exported, near-retention stays 0, and that is logged once. Beyond
// BacklogNearRatio of MAXLEN the bus warns, at most every BacklogWarnEvery,
// and sets ensure_user_engine_backlog_near_retention to 1.
//
// A group whose lag Redis cannot compute (nil after entries were deleted
// from the middle of the stream) counts with the stream's length, an upper
// bound. Every instance samples: a handful of cheap commands per instance
// every few seconds.

// maxGroupLabels bounds the group label values of the backlog gauge; groups
// beyond it (in name order) still count for near-retention.
const maxGroupLabels = 16

// backlogMetrics are the gauges of the backlog; they are written by the
// maintenance goroutine only.
type backlogMetrics struct {
	backlog  *prometheus.GaugeVec // kind=length|lag, group
	near     prometheus.Gauge
	groups   map[string]bool // group label values currently exported
	lastWarn time.Time
	warned   bool // the last sample was near retention
	noGroup  bool // "no group: backlog unknown" has been logged
}

func newBacklogMetrics(reg prometheus.Registerer) (*backlogMetrics, error) {
	m := &backlogMetrics{
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "ensure_user", Name: "engine_request_backlog",
			Help: `Request stream backlog, sampled every few seconds: kind="length" (XLEN), kind="lag" per consumer group (entries not yet delivered to it).`,
		}, []string{"kind", "group"}),
		near: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ensure_user", Name: "engine_backlog_near_retention",
			Help: "1 while the unprocessed backlog exceeds 80% of ENGINE_REQUEST_MAXLEN: beyond MAXLEN the oldest unprocessed commands are trimmed away.",
		}),
		groups: map[string]bool{},
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.backlog, m.near} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// groupLag is one consumer group of the request stream.
type groupLag struct {
	name  string
	lag   int64
	known bool // false: Redis could not compute the lag
}

// sampleBacklog reads the request stream's length and its groups' lag, and
// updates the gauges and the warning. Failures are counted and logged at
// debug level: the next sample retries, and the gauges keep their values.
func (b *Bus) sampleBacklog(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, b.set.xaddTimeout)
	defer cancel()
	c, s := b.client.B(), b.cfg.RequestStream
	res := b.client.DoMulti(ctx, c.Xlen().Key(s).Build(), c.XinfoGroups().Key(s).Build())
	length, err := res[0].AsInt64()
	if err != nil {
		if ctx.Err() == nil {
			b.errs[opXlen].Inc()
			b.log.Debug("backlog sample failed", zap.Error(err))
		}
		return
	}
	groups, err := parseGroups(res[1])
	if err != nil {
		if ctx.Err() == nil {
			b.errs[opXinfo].Inc()
			b.log.Debug("backlog sample failed", zap.Error(err))
		}
		return
	}
	b.recordBacklog(length, groups)
}

// parseGroups reads an XINFO GROUPS answer; a missing stream has no groups.
func parseGroups(res rueidis.RedisResult) ([]groupLag, error) {
	arr, err := res.ToArray()
	if err != nil {
		if re, ok := rueidis.IsRedisErr(err); ok && strings.Contains(strings.ToLower(re.Error()), "no such key") {
			return nil, nil
		}
		return nil, err
	}
	groups := make([]groupLag, 0, len(arr))
	for _, g := range arr {
		m, err := g.AsMap()
		if err != nil {
			return nil, fmt.Errorf("xinfo groups: %w", err)
		}
		nameMsg := m["name"]
		name, err := nameMsg.ToString()
		if err != nil {
			return nil, fmt.Errorf("xinfo groups: name: %w", err)
		}
		gl := groupLag{name: name}
		if lag, ok := m["lag"]; ok && !lag.IsNil() {
			if gl.lag, err = lag.AsInt64(); err != nil {
				return nil, fmt.Errorf("xinfo groups: lag: %w", err)
			}
			gl.known = true
		}
		groups = append(groups, gl)
	}
	slices.SortFunc(groups, func(a, b groupLag) int { return strings.Compare(a.name, b.name) })
	return groups, nil
}

// recordBacklog sets the gauges from one sample, and warns when the
// unprocessed backlog nears MAXLEN.
func (b *Bus) recordBacklog(length int64, groups []groupLag) {
	m := b.backlog
	m.backlog.WithLabelValues("length", "").Set(float64(length))
	unprocessed, behind := int64(-1), ""
	seen := map[string]bool{}
	for i, g := range groups {
		lag := g.lag
		if !g.known {
			lag = length
		}
		if lag > unprocessed {
			unprocessed, behind = lag, g.name
		}
		if i < b.set.maxGroupLabel {
			m.backlog.WithLabelValues("lag", g.name).Set(float64(lag))
			seen[g.name] = true
		}
	}
	for name := range m.groups {
		if !seen[name] {
			m.backlog.DeleteLabelValues("lag", name)
		}
	}
	m.groups = seen
	if len(groups) == 0 {
		m.near.Set(0)
		if !m.noGroup {
			m.noGroup = true
			b.log.Info("no consumer group reads the request stream: the Engine's backlog cannot be measured, only the stream's length",
				zap.String("stream", b.cfg.RequestStream))
		}
		return
	}
	m.noGroup = false

	threshold := int64(BacklogNearRatio * float64(b.cfg.RequestMaxLen))
	if unprocessed <= threshold {
		m.near.Set(0)
		if m.warned {
			b.log.Info("request stream backlog back under its retention threshold",
				zap.Int64("backlog", unprocessed), zap.Int64("threshold", threshold))
		}
		m.warned = false
		return
	}
	m.near.Set(1)
	m.warned = true
	if now := time.Now(); now.Sub(m.lastWarn) >= b.set.backlogWarn {
		m.lastWarn = now
		b.log.Warn("the Engine's backlog nears the request stream's MAXLEN: beyond it the oldest unprocessed commands are trimmed away",
			zap.String("stream", b.cfg.RequestStream), zap.Int64("backlog", unprocessed), zap.String("group", behind),
			zap.Int64("length", length), zap.Int64("maxlen", b.cfg.RequestMaxLen), zap.Int("groups", len(groups)))
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It
// is 100 on every Linux architecture Go supports.
const clockTick = 100

// cpuTimes are a process's CPU times so far.
type cpuTimes struct{ user, sys time.Duration }

func (c cpuTimes) sub(o cpuTimes) cpuTimes { return cpuTimes{c.user - o.user, c.sys - o.sys} }
func (c cpuTimes) add(o cpuTimes) cpuTimes { return cpuTimes{c.user + o.user, c.sys + o.sys} }
func (c cpuTimes) total() time.Duration    { return c.user + c.sys }

// procCPU reads utime and stime of pid ("self" for the tool) from /proc.
func procCPU(pid string) (cpuTimes, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	// The command name, field 2, is in parentheses and may hold blanks: the
	// fields that follow start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return cpuTimes{}, fmt.Errorf("/proc/%s/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return cpuTimes{}, fmt.Errorf("/proc/%s/stat: too few fields", pid)
	}
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return cpuTimes{}, fmt.Errorf("/proc/%s/stat: bad utime/stime", pid)
	}
	tick := time.Second / clockTick
	return cpuTimes{time.Duration(ut) * tick, time.Duration(st) * tick}, nil
}

// redisClient is a small client for the tool's own bookkeeping commands.
type redisClient struct{ c rueidis.Client }

func dialRedis(addr string) (*redisClient, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{addr}, DisableCache: true, ForceSingleClient: true,
		// one connection, no pipelining behind our back: the counts below
		// are exactly the commands this client sent.
		AlwaysRESP2: true, DisableRetry: true,
	})
	if err != nil {
		return nil, err
	}
	return &redisClient{c: c}, nil
}

func (r *redisClient) close() { r.c.Close() }

func (r *redisClient) do(ctx context.Context, args ...string) rueidis.RedisResult {
	return r.c.Do(ctx, r.c.B().Arbitrary(args...).Build())
}

// resetStats runs CONFIG RESETSTAT, which zeroes INFO commandstats.
func (r *redisClient) resetStats(ctx context.Context) error {
	return r.do(ctx, "CONFIG", "RESETSTAT").Error()
}

// commandStats returns the calls per command (lower case) since the last
// RESETSTAT, from INFO commandstats. Subcommands appear as "config|resetstat".
func (r *redisClient) commandStats(ctx context.Context) (map[string]int64, error) {
	s, err := r.do(ctx, "INFO", "commandstats").ToString()
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimSpace(line)
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for kv := range strings.SplitSeq(rest, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok && k == "calls" {
				n, _ := strconv.ParseInt(v, 10, 64)
				out[strings.TrimPrefix(name, "cmdstat_")] = n
			}
		}
	}
	return out, nil
}

// entriesAdded is XINFO STREAM's entries-added of key (Redis >= 7.0): every
// entry ever added, whatever MAXLEN trimmed since; 0 when the stream does not
// exist.
func (r *redisClient) entriesAdded(ctx context.Context, key string) (int64, error) {
	m, err := r.do(ctx, "XINFO", "STREAM", key).AsMap()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return 0, nil
		}
		return 0, err
	}
	v, ok := m["entries-added"]
	if !ok {
		return 0, fmt.Errorf("XINFO STREAM %s: no entries-added (Redis older than 7.0?)", key)
	}
	return v.AsInt64()
}

// loadAvg is the first line of /proc/loadavg, for the report.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return strings.TrimSpace(string(b))
	}
	return strings.Join(f[:3], " ")
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/config"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/enginesim"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/test/testenv"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestBinary starts the real binary with its environment, has it answer a
// command end to end, reads its metrics, and stops it with SIGTERM.
func TestBinary(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	ctx := testContext(t)
	prefix := fmt.Sprintf("bin:%d", rand.Int64())
	requests, replies := prefix+":requests", prefix+":replies"
	p := testenv.StartEngineSim(t, r.URL(), map[string]string{ // waits for "engine running" and "metrics listening"
		"ENGINE_REQUEST_STREAM": requests,
		"ENGINE_REPLY_STREAM":   replies,
		"LOG_LEVEL":             "debug",
	})

	cmd := domain.Command{RequestID: domain.NewRequestID(), User: domain.User{ID: "user-1", Email: "u@example.com"}, SentAt: time.Now()}
	r.MustDo(ctx, "XADD", requests, "*", protocol.Field, string(protocol.EncodeCommand(cmd, replies)))
	var got protocol.Reply
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for got.RequestID == "" {
		entries, err := r.MustDo(ctx, "XRANGE", replies, "-", "+").AsXRangeSlices()
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) > 0 {
			if err := json.Unmarshal([]byte(entries[0].FieldValues[0].Value), &got); err != nil {
				t.Fatal(err)
			}
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("no reply")
		}
	}
	if got.RequestID != cmd.RequestID || got.Status != domain.StatusOK || got.Message != "user-1" {
		t.Errorf("reply %+v, want ok for user-1", got)
	}

	metrics := httpGet(t, p.MetricsURL)
	if !strings.Contains(metrics, `engine_sim_commands_total{result="ok"} 1`) {
		t.Errorf("/metrics does not count the command:\n%s", metrics)
	}

	p.Signal(syscall.SIGTERM)
	code, err := p.Wait(ctx)
	if err != nil || code != 0 {
		t.Fatalf("exit %d, %v after SIGTERM; want 0", code, err)
	}
	if _, err := p.WaitLog(ctx, "engine stopped"); err != nil {
		t.Errorf("no clean stop logged: %v", err)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBinaryRefusesBadSettings: a bad variable or flag exits 2, naming it.
func TestBinaryRefusesBadSettings(t *testing.T) {
	t.Parallel()
	bin := testenv.BuildBinary(t, "./cmd/engine-sim")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"variable", map[string]string{"ENGINE_ERROR_RATIO": "1.5"}, nil, "ENGINE_ERROR_RATIO"},
		{"flag", nil, []string{"--engine-reply-delay=soon"}, "ENGINE_REPLY_DELAY"},
		{"unknown flag", nil, []string{"--no-such-flag"}, "no-such-flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := testenv.Start(t, bin, tc.env, tc.args...)
			code, err := p.Wait(testContext(t))
			if err != nil || code != exitUsage {
				t.Fatalf("exit %d, %v; want %d", code, err, exitUsage)
			}
			if out := p.Output(); !strings.Contains(out, tc.want) {
				t.Errorf("output does not name %s:\n%s", tc.want, out)
			}
		})
	}
}

// TestLoadRefusesBadValues: every refusal names its variable, and every
// variable is checked.
func TestLoadRefusesBadValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		value string
	}{
		{"ENGINE_REQUEST_STREAM", ""},
		{"ENGINE_REPLY_STREAM", "engine:requests"},
		{"ENGINE_GROUP", ""},
		{"ENGINE_USERS_KEY", "engine:replies"},
		{"ENGINE_READ_COUNT", "0"},
		{"ENGINE_READ_COUNT", "many"},
		{"ENGINE_READ_BLOCK", "0s"},
		{"ENGINE_CLAIM_IDLE", "0s"},
		{"ENGINE_CLAIM_IDLE", "100ms"}, // not above ENGINE_REPLY_DELAY below
		{"ENGINE_REPLY_MAXLEN", "-1"},
		{"ENGINE_REPLY_DELAY", "-1s"},
		{"ENGINE_REPLY_DELAY", "soon"},
		{"ENGINE_REPLY_DELAY_MAX", "1ms"}, // below ENGINE_REPLY_DELAY below
		{"ENGINE_MAX_IN_FLIGHT", "0"},
		{"ENGINE_ERROR_RATIO", "1.01"},
		{"ENGINE_ERROR_RATIO", "NaN"},
		{"ENGINE_DROP_RATIO", "-0.1"},
		{"ENGINE_LEGACY", "yes please"},
		{"REDIS_URL", "http://127.0.0.1:6379"},
		{"REDIS_URL", "redis://user:hunter2@host:6379/%zz"},
		{"REDIS_TLS_CERT_FILE", "/cert.pem"},
		{"REDIS_TLS_CA_FILE", "/ca.pem"}, // with a redis:// URL
		{"LOG_LEVEL", "verbose"},
		{"LOG_FORMAT", "xml"},
		{"METRICS_ADDR", "9090"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{tc.name: tc.value}
			switch tc.name {
			case "ENGINE_CLAIM_IDLE", "ENGINE_REPLY_DELAY_MAX":
				env["ENGINE_REPLY_DELAY"] = "200ms"
			}
			_, err := load(lookup(env))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.name) {
				t.Errorf("error does not name %s: %v", tc.name, err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error reveals the password: %v", err)
			}
		})
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	s, err := load(lookup(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s.redis.URL.Reveal() != "redis://127.0.0.1:6379/0" || s.log != (config.Log{Level: "info", Format: "json"}) || s.metrics != "" {
		t.Errorf("defaults: %+v", s)
	}
	if s.engine.RequestStream != enginesim.DefaultRequestStream || s.engine.ClaimIdle != enginesim.DefaultClaimIdle {
		t.Errorf("engine defaults: %+v", s.engine)
	}
}

func TestFlagWinsOverVariable(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("engine-sim", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	look, err := withFlags(fs, []string{"--engine-group=from-flag", "--engine-legacy=true"},
		lookup(map[string]string{"ENGINE_GROUP": "from-env", "ENGINE_CONSUMER": "env-only"}))
	if err != nil {
		t.Fatal(err)
	}
	s, err := load(look)
	if err != nil {
		t.Fatal(err)
	}
	if s.engine.Group != "from-flag" || !s.engine.Legacy || s.engine.Consumer != "env-only" {
		t.Errorf("engine settings %+v: want the flags over the environment", s.engine)
	}
}

func TestHelpExitsZero(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	if err := run(context.Background(), []string{"--help"}, lookup(nil), &out); err != nil {
		t.Fatal(err)
	}
	for _, v := range vars() {
		if !strings.Contains(out.String(), config.FlagName(v.Name)) {
			t.Errorf("--help does not list --%s", config.FlagName(v.Name))
		}
	}
}

func lookup(env map[string]string) config.Lookup {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

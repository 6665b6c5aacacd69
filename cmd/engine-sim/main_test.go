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
	"github.com/ensure-user/ensure-user/internal/zaplog"
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

// waitStreamLen polls stream until it holds n entries: Redis has no event
// to wait on.
func waitStreamLen(ctx context.Context, t *testing.T, r *testenv.Redis, stream string, n int64) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if l, err := r.MustDo(ctx, "XLEN", stream).AsInt64(); err == nil && l >= n {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("%s never held %d entries", stream, n)
		}
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
		{"tracing variable", map[string]string{"OTEL_TRACES_SAMPLER": "sometimes"}, nil, "OTEL_TRACES_SAMPLER"},
		{"tracing flag", nil, []string{"--otel-exporter-otlp-protocol=udp"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
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
		{"OTEL_SDK_DISABLED", "perhaps"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"},
		{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"},
		{"OTEL_EXPORTER_OTLP_TIMEOUT", "5s"},
		{"OTEL_TRACES_SAMPLER", "sometimes"},
		{"OTEL_RESOURCE_ATTRIBUTES", "no-equals"},
		{"OTEL_BSP_MAX_QUEUE_SIZE", "0"},
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
	if s.redis.URL.Reveal() != "redis://127.0.0.1:6379/0" || s.log != (zaplog.Config{Level: "info", Format: "json"}) || s.metrics != "" {
		t.Errorf("defaults: %+v", s)
	}
	if s.engine.RequestStream != enginesim.DefaultRequestStream || s.engine.ClaimIdle != enginesim.DefaultClaimIdle {
		t.Errorf("engine defaults: %+v", s.engine)
	}
	if s.tracing.Enabled() || s.tracing.ServiceName != "engine-sim" {
		t.Errorf("tracing defaults: %+v", s.tracing)
	}
}

// TestBinaryTraces runs the real binary against a real OTLP/gRPC receiver:
// the command's spans continue its traceparent, and those still queued at
// SIGTERM are flushed (the export interval is longer than the test).
func TestBinaryTraces(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	recv := testenv.StartOTLPReceiver(t)
	ctx := testContext(t)
	prefix := fmt.Sprintf("bin-trace:%d", rand.Int64())
	requests, replies := prefix+":requests", prefix+":replies"
	p := testenv.StartEngineSim(t, r.URL(), map[string]string{
		"ENGINE_REQUEST_STREAM":       requests,
		"ENGINE_REPLY_STREAM":         replies,
		"OTEL_EXPORTER_OTLP_ENDPOINT": recv.GRPCEndpoint(),
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_BSP_SCHEDULE_DELAY":     "600000",
		"OTEL_RESOURCE_ATTRIBUTES":    "deployment.environment.name=test",
	})
	const traceID, parentID, email = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "traced@example.com"
	cmd := domain.Command{RequestID: domain.NewRequestID(), User: domain.User{ID: "user-1", Email: email}, SentAt: time.Now(),
		Trace: domain.Trace{Parent: "00-" + traceID + "-" + parentID + "-01"}}
	r.MustDo(ctx, "XADD", requests, "*", protocol.Field, string(protocol.EncodeCommand(cmd, replies)))
	waitStreamLen(ctx, t, r, replies, 1)
	if metrics := httpGet(t, p.MetricsURL); !strings.Contains(metrics, `ensure_user_trace_exports_total{result="ok"}`) {
		t.Errorf("/metrics has no trace export counter:\n%s", metrics)
	}

	p.Signal(syscall.SIGTERM)
	if code, err := p.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("exit %d, %v after SIGTERM; want 0", code, err)
	}
	spans, err := recv.WaitSpans(ctx, func(s []testenv.ReceivedSpan) bool { return len(testenv.SpansOf(s, traceID)) == 4 })
	if err != nil {
		t.Fatalf("%v: %+v", err, spans)
	}
	var consumer testenv.ReceivedSpan
	for _, s := range testenv.SpansOf(spans, traceID) {
		if s.Name == "engine createUser" {
			consumer = s
		}
		if s.Service != "engine-sim" || s.Resource["deployment.environment.name"] != "test" {
			t.Errorf("span %s from %s, resource %v", s.Name, s.Service, s.Resource)
		}
		if all := fmt.Sprint(s.Attributes); strings.Contains(all, email) {
			t.Errorf("span %s carries the email: %s", s.Name, all)
		}
	}
	if consumer.ParentSpanID != parentID || consumer.Attributes["ensure_user.engine_request_id"] != cmd.RequestID {
		t.Errorf("consumer span %+v", consumer)
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

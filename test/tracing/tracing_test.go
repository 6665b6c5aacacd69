// Package tracing proves the service's OpenTelemetry tracing on the real
// binaries: ensure-user and engine-sim export over OTLP to a real receiver
// (test/testenv's, which decodes the protobuf exports), and a request's
// trace runs from the caller's traceparent through the server span, the
// token check, the send and the wait, into the Engine's spans.
package tracing

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ensure-user/ensure-user/test/testenv"
)

const (
	gatewayTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	gatewaySpan  = "00f067aa0ba902b7"
)

// rig is a traced stack: Redis, the IdP, the receiver, engine-sim and the
// service, both exporting every 10 ms.
type rig struct {
	t      *testing.T
	redis  *testenv.Redis
	idp    *testenv.IdP
	recv   *testenv.OTLPReceiver
	engine *testenv.EngineSim
	svc    *testenv.Service
	client *http.Client
}

func newRig(t *testing.T, extra map[string]string) *rig {
	r := &rig{t: t, client: &http.Client{Timeout: 30 * time.Second}}
	r.redis = testenv.StartRedis(t)
	r.idp = testenv.NewIdP(t)
	r.recv = testenv.StartOTLPReceiver(t)
	otel := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": r.recv.Endpoint(), "OTEL_BSP_SCHEDULE_DELAY": "10"}
	r.engine = testenv.StartEngineSim(t, r.redis.URL(), otel)
	env := map[string]string{"ENGINE_REPLY_TIMEOUT": "1s", "ENGINE_SEND_TIMEOUT": "500ms"}
	for k, v := range otel {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	r.svc = testenv.StartService(t, r.idp.ServiceEnv(r.redis.URL(), env))
	r.svc.RequireReady(t, 30*time.Second)
	r.svc.CheckOutput(t)
	return r
}

// post sends the gateway's request for user (no token when user is "",
// "bad" for a token that fails verification) under the gateway's trace,
// with span id spanID, and returns the status.
func (r *rig) post(user, spanID string) int {
	r.t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.svc.URL+testenv.EnsurePath, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	switch user {
	case "":
	case "bad":
		req.Header.Set("Authorization", "Bearer "+testenv.NewJWKSKey(r.t, "ES256", "key-1").UserToken(r.t, "mallory"))
	default:
		req.Header.Set("Authorization", "Bearer "+r.idp.Key.UserToken(r.t, user))
	}
	req.Header.Set("traceparent", "00-"+gatewayTrace+"-"+spanID+"-01")
	req.Header.Set("tracestate", "gw=1")
	resp, _ := testenv.Do(r.t, r.client, req)
	return resp.StatusCode
}

// spansUnder waits until the spans of the request whose gateway span is
// spanID satisfy ok, and returns the service's and the Engine's.
func (r *rig) spansUnder(spanID string, ok func(svc, engine []testenv.ReceivedSpan) bool) (svc, engine []testenv.ReceivedSpan) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	split := func(all []testenv.ReceivedSpan) (svc, engine []testenv.ReceivedSpan) {
		byID := map[string]testenv.ReceivedSpan{}
		for _, s := range testenv.SpansOf(all, gatewayTrace) {
			byID[s.SpanID] = s
		}
		// Descendants of the request's server span, whose parent is spanID.
		for _, s := range byID {
			for p := s; ; {
				if p.ParentSpanID == spanID {
					if s.Service == "engine-sim" {
						engine = append(engine, s)
					} else {
						svc = append(svc, s)
					}
					break
				}
				next, found := byID[p.ParentSpanID]
				if !found {
					break
				}
				p = next
			}
		}
		return svc, engine
	}
	all, err := r.recv.WaitSpans(ctx, func(all []testenv.ReceivedSpan) bool { return ok(split(all)) })
	if err != nil {
		s, e := split(r.recv.Spans())
		r.t.Fatalf("spans under %s: %v\nservice: %v\nengine: %v", spanID, err, names(s), names(e))
	}
	return split(all)
}

func names(spans []testenv.ReceivedSpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

func find(spans []testenv.ReceivedSpan, prefix string) (testenv.ReceivedSpan, bool) {
	for _, s := range spans {
		if strings.HasPrefix(s.Name, prefix) {
			return s, true
		}
	}
	return testenv.ReceivedSpan{}, false
}

func has(spans []testenv.ReceivedSpan, prefixes ...string) bool {
	for _, p := range prefixes {
		if _, ok := find(spans, p); !ok {
			return false
		}
	}
	return true
}

// must finds the span named with prefix or fails.
func must(t *testing.T, spans []testenv.ReceivedSpan, prefix string) testenv.ReceivedSpan {
	t.Helper()
	s, ok := find(spans, prefix)
	if !ok {
		t.Fatalf("no span %q among %v", prefix, names(spans))
	}
	return s
}

func attr(t *testing.T, s testenv.ReceivedSpan, key string, want any) {
	t.Helper()
	if got := s.Attributes[key]; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("span %q: %s = %v, want %v", s.Name, key, got, want)
	}
}

// TestTraceThroughServiceAndEngine: a confirmed request, one that times
// out, an invalid token and a send while Redis is down, each with the
// structure and attributes the issue asks for; and no token or email in any
// attribute of any span.
func TestTraceThroughServiceAndEngine(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)

	t.Run("confirmed: HTTP, verify, send, Engine, wait", func(t *testing.T) {
		checkConfirmed(t, r, "00f067aa0ba90201")
	})

	t.Run("invalid token: a verify span, no send, not a server error", func(t *testing.T) {
		const gw = "00f067aa0ba90202"
		if st := r.post("bad", gw); st != 401 {
			t.Fatalf("status %d", st)
		}
		svc, _ := r.spansUnder(gw, func(svc, _ []testenv.ReceivedSpan) bool {
			return has(svc, "POST /api/v1/auth/ensure-user", "verify token")
		})
		server := must(t, svc, "POST /api/v1/auth/ensure-user")
		attr(t, server, "http.response.status_code", 401)
		attr(t, server, "ensure_user.outcome", "invalid_token")
		if server.StatusCode == codes.Error {
			t.Error("a bad token made the server span an error")
		}
		attr(t, must(t, svc, "verify token"), "ensure_user.verify_error", "invalid_token")
		if _, sent := find(svc, "send "); sent {
			t.Error("a command was sent for an invalid token")
		}
	})

	t.Run("initiated: the wait times out", func(t *testing.T) {
		r.engine.Stop(t, 10*time.Second)
		const gw = "00f067aa0ba90203"
		if st := r.post("trace-slow", gw); st != 202 {
			t.Fatalf("status %d", st)
		}
		svc, _ := r.spansUnder(gw, func(svc, _ []testenv.ReceivedSpan) bool {
			return has(svc, "POST /api/v1/auth/ensure-user", "wait for engine reply")
		})
		wait := must(t, svc, "wait for engine reply")
		attr(t, wait, "ensure_user.outcome", "initiated")
		attr(t, wait, "ensure_user.timed_out", true)
		attr(t, must(t, svc, "POST /api/v1/auth/ensure-user"), "http.response.status_code", 202)
	})

	t.Run("Redis down: 503, the send span says not sent", func(t *testing.T) {
		r.redis.Kill()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := testenv.WaitHTTP(ctx, r.svc.URL+"/readyz", http.StatusServiceUnavailable); err != nil {
			t.Fatalf("the service never noticed Redis was gone: %v", err)
		}
		// A request that races rueidis' own notice of the dead connection
		// is written to it and answered 502 "outcome unknown", which is
		// right for it; the next one is refused before anything is written.
		var gw string
		for attempt := range 5 {
			gw = fmt.Sprintf("00f067aa0ba902%02x", 0x10+attempt)
			st := r.post("trace-down", gw)
			if st == 503 {
				break
			}
			if st != 502 || attempt == 4 {
				t.Fatalf("status %d, want 503 (502 only while the dead connection is being noticed)", st)
			}
		}
		svc, _ := r.spansUnder(gw, func(svc, _ []testenv.ReceivedSpan) bool {
			return has(svc, "POST /api/v1/auth/ensure-user", "send ")
		})
		send := must(t, svc, "send ")
		attr(t, send, "ensure_user.sent", false)
		if send.StatusCode != codes.Error {
			t.Errorf("send span status %v, want error", send.StatusCode)
		}
		server := must(t, svc, "POST /api/v1/auth/ensure-user")
		attr(t, server, "http.response.status_code", 503)
		if server.StatusCode != codes.Error {
			t.Errorf("server span status %v, want error for a 503", server.StatusCode)
		}
	})

	t.Run("no token or email in any attribute", func(t *testing.T) {
		for _, s := range r.recv.Spans() {
			for k, v := range s.Attributes {
				if str := fmt.Sprint(v); strings.Contains(str, "eyJ") || strings.Contains(str, "@example.com") {
					t.Errorf("span %q (%s): %s = %q holds a token or an email", s.Name, s.Service, k, str)
				}
			}
		}
	})
}

// checkConfirmed sends a confirmed request under the gateway span gw and
// checks its whole trace: HTTP, verify, send, the Engine, the wait.
func checkConfirmed(t *testing.T, r *rig, gw string) {
	t.Helper()
	if st := r.post("trace-ok", gw); st != 200 {
		t.Fatalf("status %d", st)
	}
	svc, engine := r.spansUnder(gw, func(svc, engine []testenv.ReceivedSpan) bool {
		return has(svc, "POST /api/v1/auth/ensure-user", "verify token", "send ", "wait for engine reply") &&
			has(engine, "engine createUser")
	})
	server := must(t, svc, "POST /api/v1/auth/ensure-user")
	if server.ParentSpanID != gw || server.Kind != trace.SpanKindServer || server.Service != "ensure-user" {
		t.Errorf("server span: parent %s, kind %v, service %s", server.ParentSpanID, server.Kind, server.Service)
	}
	attr(t, server, "http.route", "/api/v1/auth/ensure-user")
	attr(t, server, "http.response.status_code", 200)
	attr(t, server, "ensure_user.outcome", "confirmed")
	if server.Attributes["ensure_user.request_id"] == nil || server.StatusCode == codes.Error {
		t.Errorf("server span: %v, status %v", server.Attributes, server.StatusCode)
	}
	verify := must(t, svc, "verify token")
	attr(t, verify, "jwt.alg", "ES256")
	attr(t, verify, "jwt.kid", "key-1")
	attr(t, verify, "ensure_user.token_cache_hit", false)
	send := must(t, svc, "send ")
	attr(t, send, "messaging.system", "redis")
	attr(t, send, "messaging.destination.name", testenv.RequestStream)
	attr(t, send, "ensure_user.sent", true)
	if send.Kind != trace.SpanKindProducer || send.Attributes["messaging.message.id"] == nil || send.Attributes["ensure_user.engine_request_id"] == nil {
		t.Errorf("send span: kind %v, %v", send.Kind, send.Attributes)
	}
	wait := must(t, svc, "wait for engine reply")
	attr(t, wait, "ensure_user.outcome", "confirmed")
	attr(t, wait, "ensure_user.timed_out", false)
	for _, s := range []testenv.ReceivedSpan{verify, send, wait} {
		if s.ParentSpanID != server.SpanID {
			t.Errorf("span %q: parent %s, want the server span %s", s.Name, s.ParentSpanID, server.SpanID)
		}
	}
	// The command carried the send span's context: the Engine's span is
	// its child, in the caller's trace, with the caller's tracestate.
	consumer := must(t, engine, "engine createUser")
	if consumer.ParentSpanID != send.SpanID {
		t.Errorf("engine span's parent %s, want the send span %s", consumer.ParentSpanID, send.SpanID)
	}
	attr(t, consumer, "ensure_user.engine_request_id", send.Attributes["ensure_user.engine_request_id"])
	if !strings.Contains(consumer.TraceState, "gw=1") {
		t.Errorf("engine span's tracestate %q lost the caller's", consumer.TraceState)
	}
}

// TestTraceOfAParkedRequest: a request that waits parked (HTTP_PARK_ABOVE=0)
// has the same trace; its server span ends when its answer is written.
func TestTraceOfAParkedRequest(t *testing.T) {
	t.Parallel()
	r := newRig(t, map[string]string{"HTTP_PARK_ABOVE": "0"})
	checkConfirmed(t, r, "00f067aa0ba90301")
	if parked := r.svc.Metric(t, "ensure_user_http_parked_total"); parked != 1 {
		t.Fatalf("%v requests parked, want the one", parked)
	}
}

// TestCollectorDown: the collector refuses every connection; requests are
// answered as usual, within a sanity bound, and the lost spans are counted.
func TestCollectorDown(t *testing.T) {
	t.Parallel()
	redis := testenv.StartRedis(t)
	idp := testenv.NewIdP(t)
	testenv.StartEngineSim(t, redis.URL(), nil)
	svc := testenv.StartService(t, idp.ServiceEnv(redis.URL(), map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:" + fmt.Sprint(testenv.FreeRedisPort(t)),
		"OTEL_BSP_SCHEDULE_DELAY":     "10", "OTEL_EXPORTER_OTLP_TIMEOUT": "200",
	}))
	svc.RequireReady(t, 30*time.Second)
	client := &http.Client{Timeout: 30 * time.Second}
	for i := range 20 {
		a := testenv.Ensure(context.Background(), t, client, svc.URL, idp.Key.UserToken(t, fmt.Sprint("down-", i)))
		if a.Status != 200 {
			t.Fatalf("request %d: %s", i, a)
		}
		if a.Took > 5*time.Second { // a sanity bound: the export must never be waited for
			t.Errorf("request %d took %s with the collector down", i, a.Took)
		}
	}
	testenv.Eventually(t, 30*time.Second, "a failed export counted", func() bool {
		return svc.Metric(t, `ensure_user_trace_exports_total{result="error"}`) > 0
	})
	if lost := svc.Metric(t, `ensure_user_trace_spans_dropped_total{reason="export_failed"}`); lost == 0 {
		t.Error("the spans of failed exports are not counted as dropped")
	}
}

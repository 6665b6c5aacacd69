package echohttp_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ensure-user/ensure-user/adapters/echohttp"
	"github.com/ensure-user/ensure-user/adapters/sysclock"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/domain/ensureuser"
	"github.com/ensure-user/ensure-user/test/fake"
)

func BenchmarkBearerToken(b *testing.B) {
	h := "Bearer eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSJ9.c2ln"
	b.ReportAllocs()
	for b.Loop() {
		if echohttp.BearerToken(h) == "" {
			b.Fatal("no token")
		}
	}
}

// benchServer is the HTTP adapter around the real use case with fake ports:
// a fake verifier that knows the token, and a fake bus whose Engine (a
// goroutine) confirms every command at once. The clock is the system clock:
// the fake clock keeps every timer the use case starts until it is advanced,
// so over millions of iterations it would measure its own bookkeeping. The
// logger writes the production JSON encoding to io.Discard, so the log line
// is encoded but not written.
func benchServer(b *testing.B) (http.Handler, func()) {
	b.Helper()
	v := (&fake.Verifier{}).Accept("tok", domain.Identity{UserID: "user-1234567890", Email: "someone@example.com"})
	bus := fake.NewBus(1024)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case cmd := <-bus.Sent:
				bus.Reply(domain.Reply{RequestID: cmd.RequestID, Message: cmd.User.ID, Status: "ok"})
			case <-done:
				return
			}
		}
	}()
	uc := ensureuser.New(ensureuser.Config{ReplyTimeout: 5 * time.Second}, v, bus, sysclock.New())
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(io.Discard), zapcore.InfoLevel))
	s, err := echohttp.New(echohttp.Config{Addr: "127.0.0.1:0", MaxHeaderBytes: 16384}, log, uc,
		echohttp.Options{ReplyTimeout: 5 * time.Second, Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	return s.Handler(), func() {
		close(done)
		<-stopped
	}
}

// BenchmarkEnsureUser is one whole request through Echo, the middlewares,
// the handler, the use case and the fake ports: what the service does per
// request besides verifying the token and talking to Redis and the client.
func BenchmarkEnsureUser(b *testing.B) {
	h, stop := benchServer(b)
	defer stop()
	for _, bc := range []struct {
		name, auth string
		status     int
	}{
		{"confirmed", "Bearer tok", http.StatusOK},
		{"no_token", "", http.StatusUnauthorized},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, "/api/v1/auth/ensure-user", nil)
			if bc.auth != "" {
				req.Header.Set("Authorization", bc.auth)
			}
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				w.status = 0
				h.ServeHTTP(w, req)
				if w.status != bc.status {
					b.Fatalf("status %d, want %d", w.status, bc.status)
				}
			}
		})
	}
}

// discardWriter is a ResponseWriter that keeps only the status, so the
// benchmark does not measure httptest.ResponseRecorder.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }

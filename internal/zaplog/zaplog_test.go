package zaplog

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the flush goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestUnbufferedWritesEachLine(t *testing.T) {
	var out syncBuffer
	log, err := NewTo(Config{Level: "info", Format: "json"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("one")
	var line map[string]any
	if err := json.Unmarshal([]byte(out.String()), &line); err != nil {
		t.Fatalf("not one JSON line: %q: %v", out.String(), err)
	}
	if line["msg"] != "one" || line["level"] != "info" || line["ts"] == nil || line["caller"] == nil {
		t.Errorf("line %v", line)
	}
	log.Debug("hidden")
	if strings.Contains(out.String(), "hidden") {
		t.Error("debug line written at info level")
	}
}

// TestBufferedHoldsInfoUntilWarnOrSync: with LOG_FLUSH_INTERVAL, info lines
// wait in the buffer (the interval is an hour here), a warn line writes them
// and itself, and Sync writes the rest.
func TestBufferedHoldsInfoUntilWarnOrSync(t *testing.T) {
	var out syncBuffer
	log, err := NewTo(Config{Level: "info", Format: "console", FlushInterval: time.Minute}, &out)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("first")
	if out.String() != "" {
		t.Fatalf("info line written at once: %q", out.String())
	}
	log.With().Warn("trouble")
	if got := out.String(); !strings.Contains(got, "first") || !strings.Contains(got, "trouble") ||
		strings.Index(got, "first") > strings.Index(got, "trouble") {
		t.Fatalf("after a warn line: %q", got)
	}
	log.Info("last")
	if err := log.Sync(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "last") {
		t.Fatalf("Sync did not write the buffer: %q", out.String())
	}
}

func TestBadSettings(t *testing.T) {
	if _, err := NewTo(Config{Level: "loud", Format: "json"}, &syncBuffer{}); err == nil {
		t.Error("bad level accepted")
	}
	if _, err := NewTo(Config{Level: "info", Format: "xml"}, &syncBuffer{}); err == nil {
		t.Error("bad format accepted")
	}
}

// TestWarnOnPipe: a warn line on a pipe (stderr in a container) flushes the
// buffer without zap reporting the pipe's failing fsync as a write error.
func TestWarnOnPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	log, err := NewTo(Config{Level: "info", Format: "json", FlushInterval: time.Minute}, w)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("first")
	log.Warn("trouble")
	if err := log.Sync(); err != nil {
		t.Errorf("Sync on a pipe: %v", err)
	}
	w.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "first") || !strings.Contains(string(out), "trouble") || strings.Contains(string(out), "write error") {
		t.Fatalf("pipe got %q: want both lines and no write error", out)
	}
}

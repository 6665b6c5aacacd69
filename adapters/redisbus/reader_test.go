package redisbus

import (
	"errors"
	"testing"
)

// TestStartupStates: the first attempt settles New's wait whatever it
// found; retrying may repeat; started, refused and stopped are final, and
// only started lets Send publish.
func TestStartupStates(t *testing.T) {
	t.Parallel()
	newStartup := func() *startup { return &startup{settled: make(chan struct{}), ready: make(chan struct{})} }
	transient, perm := errors.New("connection refused"), errors.New("WAITAOF unsupported")

	s := newStartup()
	s.set(readerRetrying, transient)
	if st, err := s.firstSettled(); st != readerRetrying || err != transient || s.started() {
		t.Fatalf("after a failed first attempt: %v, %v, started %v", st, err, s.started())
	}
	s.set(readerRetrying, transient) // again: settled is not closed twice
	s.set(readerStarted, nil)
	<-s.ready
	if st, _ := s.get(); st != readerStarted || !s.started() {
		t.Fatalf("after success: %v, started %v", st, s.started())
	}
	s.set(readerRefused, perm) // final states stay
	if st, _ := s.get(); st != readerStarted {
		t.Fatalf("started was left for %v", st)
	}

	s = newStartup()
	s.set(readerRefused, perm)
	if st, err := s.firstSettled(); st != readerRefused || err != perm || s.started() {
		t.Fatalf("refused at once: %v, %v, started %v", st, err, s.started())
	}
	s.set(readerStarted, nil)
	if s.started() {
		t.Fatal("a refused reader started")
	}
}

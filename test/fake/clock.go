// Package fake holds hand-written fakes of the ports for unit tests, each one
// proven faithful by the contract suites in test/contract (see fake_test.go).
package fake

import (
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/ensure-user/ensure-user/ports"
)

// Clock is a manually advanced clock. Advance moves it and fires due timers;
// BlockUntilContext waits until n timers are pending, so a test can advance
// exactly when the code under test is waiting - no sleeps.
type Clock = clockwork.FakeClock

var _ ports.Clock = (*clockwork.FakeClock)(nil)

// NewClock returns a fake clock set to a fixed instant in UTC.
func NewClock() *Clock {
	return clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
}

// NewClockAt returns a fake clock set to t.
func NewClockAt(t time.Time) *Clock { return clockwork.NewFakeClockAt(t) }

// Package sysclock is the production Clock: the machine's wall clock in UTC
// and runtime timers.
package sysclock

import (
	"time"

	"github.com/ensure-user/ensure-user/ports"
)

// Clock reads the system clock. The zero value is ready to use.
type Clock struct{}

var _ ports.Clock = Clock{}

// New returns the system clock.
func New() Clock { return Clock{} }

// Now returns the current time in UTC.
func (Clock) Now() time.Time { return time.Now().UTC() }

// After waits for d on a runtime timer.
func (Clock) After(d time.Duration) <-chan time.Time { return time.After(d) }

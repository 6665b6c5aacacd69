package ports

import "time"

// Clock tells the time and waits, so that tests can drive both token expiry
// checks and the reply wait with a fake clock instead of sleeping.
//
// Now returns the current time. After returns a channel that receives the
// time once d has elapsed on this clock; the timer needs no stopping (it is
// collected when unreferenced). Implementations are safe for concurrent use.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

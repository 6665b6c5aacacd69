package domain

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// Command is the createUser command the use case asks the Engine bus to send.
// RequestID correlates the Engine's reply with this very command.
type Command struct {
	RequestID string
	User      User
	SentAt    time.Time
	Trace     Trace
}

// Trace is the W3C trace context of the HTTP request that caused a command,
// forwarded so that an Engine can continue the trace. Both fields may be empty.
type Trace struct {
	Parent string // traceparent
	State  string // tracestate
}

// Reply statuses the Engine may send. The legacy Engine sends none.
const (
	StatusOK     = "ok"
	StatusExists = "exists"
	StatusError  = "error"
)

// LegacyAlreadyExists is the message the legacy Engine sends for a known user.
const LegacyAlreadyExists = "user Already Exist"

// Reply is the Engine's answer to one Command.
type Reply struct {
	RequestID string
	Message   string
	Status    string // empty when the Engine sent no status (legacy)
}

// Interpret applies the reply rules for a command sent for userID:
// status ok or exists confirms; status error is ErrEngineFailed; without a
// status (legacy Engine) a message equal to the user id or to
// LegacyAlreadyExists confirms; anything else (pending, unknown) is Initiated.
func (r Reply) Interpret(userID string) (Outcome, error) {
	switch r.Status {
	case StatusOK, StatusExists:
		return Confirmed, nil
	case StatusError:
		return 0, ErrEngineFailed
	case "":
		if r.Message == userID || r.Message == LegacyAlreadyExists {
			return Confirmed, nil
		}
	}
	return Initiated, nil
}

// NewRequestID returns a random RFC 4122 version 4 UUID in its canonical
// 36-character form. It reads crypto/rand, which never fails.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

package domain

import (
	"context"
	"errors"
)

// Outcome is how an ensure-user request ended: one row of the contract.
// Confirmed and Initiated end a request without an error; every other
// outcome is the ending of one error sentinel (see OutcomeOf).
type Outcome int

// Outcomes of EnsureUser, one per row of the contract.
const (
	// Confirmed: the Engine confirmed the user exists.
	Confirmed Outcome = iota + 1
	// Initiated: the command was sent, without confirmation (yet).
	Initiated
	NoToken
	InvalidToken
	InvalidPayload
	VerifierUnavailable
	Busy
	NotSent
	SendUnknown
	EngineFailed
	ReplyLost
	// ClientGone: the caller went away before the answer (its context
	// ended); a command already sent stays sent.
	ClientGone
	// Failed: an error no row of the contract names (a bug).
	Failed
)

// outcomes is the one table of endings: each outcome's name (for logs and
// metric labels) and, for the error rows, the sentinel that ends a request
// there. Adding an outcome is one line here (and its answer in each
// adapter that answers, which its tests hold to this table).
var outcomes = [...]struct {
	name string
	err  error
}{
	Confirmed:           {"confirmed", nil},
	Initiated:           {"initiated", nil},
	NoToken:             {"no_token", ErrNoToken},
	InvalidToken:        {"invalid_token", ErrInvalidToken},
	InvalidPayload:      {"invalid_payload", ErrInvalidPayload},
	VerifierUnavailable: {"verifier_unavailable", ErrVerifierUnavailable},
	Busy:                {"busy", ErrBusy},
	NotSent:             {"not_sent", ErrBusUnavailable},
	SendUnknown:         {"send_unknown", ErrSendUnknown},
	EngineFailed:        {"engine_failed", ErrEngineFailed},
	ReplyLost:           {"reply_lost", ErrReplyLost},
	ClientGone:          {"client_gone", context.Canceled},
	Failed:              {"internal_error", nil},
}

// String names the outcome for logs and metrics.
func (o Outcome) String() string {
	if o < Confirmed || o > Failed {
		return "unknown"
	}
	return outcomes[o].name
}

// Err is the sentinel of an error outcome, nil for Confirmed, Initiated and
// Failed.
func (o Outcome) Err() error {
	if o < Confirmed || o > Failed {
		return nil
	}
	return outcomes[o].err
}

// Outcomes lists every outcome, in order.
func Outcomes() []Outcome {
	out := make([]Outcome, 0, len(outcomes)-1)
	for o := Confirmed; o <= Failed; o++ {
		out = append(out, o)
	}
	return out
}

// OutcomeOf is the outcome of a request that ended with err: the row whose
// sentinel err wraps, Failed for any other error. A nil err has no outcome
// of its own (Confirmed or Initiated come with the result): OutcomeOf(nil)
// is Failed too, and callers ask only for errors.
func OutcomeOf(err error) Outcome {
	for o := NoToken; o < Failed; o++ {
		if errors.Is(err, outcomes[o].err) {
			return o
		}
	}
	return Failed
}

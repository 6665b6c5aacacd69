package domain

import "errors"

// Error sentinels returned by the use case and by the adapters behind its ports.
// Adapters wrap them with %w and short context; callers test with errors.Is.
// The HTTP adapter maps each one to exactly one status and body.
var (
	// ErrNoToken means the request carried no bearer token at all.
	ErrNoToken = errors.New("no token provided")
	// ErrInvalidToken means the token failed verification: signature, unknown
	// key, algorithm, exp/nbf/iat, iss/aud, critical headers or plain malformation.
	ErrInvalidToken = errors.New("invalid or expired token")
	// ErrInvalidPayload means the token verified but its identity claims are
	// missing, of the wrong type, or not acceptable values.
	ErrInvalidPayload = errors.New("invalid token payload")
	// ErrVerifierUnavailable means a well-formed token could not be checked
	// because no signing key has ever been loaded (an infrastructure fault).
	ErrVerifierUnavailable = errors.New("token verification unavailable")
	// ErrBusUnavailable means the command was provably not sent to the Engine.
	ErrBusUnavailable = errors.New("engine bus unavailable: command not sent")
	// ErrBusy means too many requests are already waiting; nothing was sent.
	ErrBusy = errors.New("too many requests waiting for the engine: command not sent")
	// ErrEngineFailed means the command was sent and the Engine answered it
	// with status error.
	ErrEngineFailed = errors.New("engine answered the command with an error")
	// ErrSendUnknown means the command may or may not have been sent: the
	// publish began but its outcome is unknown (the connection broke after
	// the write, the send timed out), or the command is in the stream but
	// not proven durable as configured.
	ErrSendUnknown = errors.New("command may have been sent: outcome of the send unknown")
	// ErrReplyLost means the command was sent but no reply came, and the bus
	// was not receiving for part of the wait, so a reply may have been lost.
	ErrReplyLost = errors.New("command sent, but its reply may have been lost")
)

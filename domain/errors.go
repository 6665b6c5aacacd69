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
	// ErrEngineFailed means the command was sent (or may have been), and then
	// the Engine reported an error, or its reply may have been lost.
	ErrEngineFailed = errors.New("engine failed after the command was sent")
)

package ports

import (
	"context"

	"github.com/ensure-user/ensure-user/domain"
)

// TokenVerifier checks a bearer token and returns the identity its claims carry.
//
// Verify receives the raw compact JWS (never empty) and returns:
//   - the claimed identity, unvalidated as values (domain.NewUser does that),
//     when the signature, algorithm, key, exp/nbf/iat (against the Clock port,
//     with the configured leeway), iss and aud all check out;
//   - an error wrapping domain.ErrInvalidToken when any of those checks fail or
//     the token is malformed;
//   - an error wrapping domain.ErrInvalidPayload when the token verifies but the
//     identity claims are missing, not strings, or refused by policy (for
//     example email_verified is false);
//   - an error wrapping domain.ErrVerifierUnavailable when a well-formed token
//     cannot be checked because no signing key has ever been loaded.
//
// Verify performs no network I/O on the common path: keys are cached and
// refreshed in the background; an unknown kid may trigger one rate-limited,
// single-flight refresh, bounded by ctx. Implementations are safe for
// concurrent use and never log the token.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (domain.Identity, error)
}

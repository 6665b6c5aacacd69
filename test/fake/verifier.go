package fake

import (
	"context"
	"fmt"
	"sync"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/ports"
)

// Verifier is a TokenVerifier that knows a fixed set of tokens. Unknown
// tokens are invalid. The zero value knows none; it is safe for concurrent use.
type Verifier struct {
	mu     sync.Mutex
	tokens map[string]verdict
}

type verdict struct {
	id  domain.Identity
	err error
}

var _ ports.TokenVerifier = (*Verifier)(nil)

// Accept makes token verify to id.
func (v *Verifier) Accept(token string, id domain.Identity) *Verifier {
	return v.set(token, verdict{id: id})
}

// Refuse makes token fail with err (a domain sentinel, or wrapping one).
func (v *Verifier) Refuse(token string, err error) *Verifier {
	return v.set(token, verdict{err: err})
}

func (v *Verifier) set(token string, vd verdict) *Verifier {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.tokens == nil {
		v.tokens = map[string]verdict{}
	}
	v.tokens[token] = vd
	return v
}

// Verify returns what Accept or Refuse set for token.
func (v *Verifier) Verify(ctx context.Context, token string) (domain.Identity, error) {
	if err := ctx.Err(); err != nil {
		return domain.Identity{}, err
	}
	v.mu.Lock()
	vd, ok := v.tokens[token]
	v.mu.Unlock()
	if !ok {
		return domain.Identity{}, fmt.Errorf("fake verifier: unknown token: %w", domain.ErrInvalidToken)
	}
	return vd.id, vd.err
}

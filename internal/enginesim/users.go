package enginesim

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/rueidis"

	"github.com/ensure-user/ensure-user/internal/refengine"
)

// UserSet is a refengine.UserStore kept in one Redis set: SADD answers 1 for
// a new member and 0 for a known one, atomically, so every instance sharing
// the set agrees on who was first, and a restarted Engine remembers its
// users. It is safe for concurrent use.
type UserSet struct {
	client rueidis.Client
	key    string
}

var _ refengine.UserStore = (*UserSet)(nil)

// NewUserSet returns the user store in the Redis set key.
func NewUserSet(client rueidis.Client, key string) *UserSet {
	return &UserSet{client: client, key: key}
}

// Add records userID with SADD and reports whether it was new. Errors are
// those of the client: a Redis error reply, or a connection error after
// which the outcome is unknown.
func (u *UserSet) Add(ctx context.Context, userID string) (bool, error) {
	n, err := u.client.Do(ctx, u.sadd(userID)).AsInt64()
	if err != nil {
		return false, fmt.Errorf("sadd: %w", err)
	}
	return n == 1, nil
}

// added is the answer to one SADD of addAll.
type added struct {
	added bool
	err   error
}

// addAll runs one SADD per id in a single round trip, in order, so that of
// two equal ids the first is the new one. A Redis error reply is the answer
// of its id alone; a connection error fails the whole call, since it is
// unknown which SADDs ran.
func (u *UserSet) addAll(ctx context.Context, ids []string) ([]added, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	cmds := make(rueidis.Commands, len(ids))
	for i, id := range ids {
		cmds[i] = u.sadd(id)
	}
	answers := make([]added, len(ids))
	for i, res := range u.client.DoMulti(ctx, cmds...) {
		n, err := res.AsInt64()
		if _, isRedis := rueidis.IsRedisErr(err); err != nil && !isRedis {
			return nil, fmt.Errorf("sadd: %w", err)
		}
		if err != nil {
			answers[i].err = fmt.Errorf("sadd: %w", err)
			continue
		}
		answers[i].added = n == 1
	}
	return answers, nil
}

func (u *UserSet) sadd(id string) rueidis.Completed {
	return u.client.B().Sadd().Key(u.key).Member(id).Build()
}

// errOutOfStep means replay was asked about a user it did not expect: the
// runner and refengine disagree on which requests touch the store.
var errOutOfStep = errors.New("enginesim: user store asked out of step")

// replay is the UserStore of one batch. The runner sends the batch's SADDs
// in one round trip (addAll) before refengine handles its requests; Add then
// hands out their answers in the same order. It is used by one goroutine.
type replay struct {
	users   []string
	answers []added
	next    int
}

// Add returns the next answer, which must be for userID.
func (r *replay) Add(_ context.Context, userID string) (bool, error) {
	if r.next >= len(r.users) || r.users[r.next] != userID {
		return false, errOutOfStep
	}
	a := r.answers[r.next]
	r.next++
	return a.added, a.err
}

// Package correlate hands each Engine reply to the one request waiting for it,
// and to no other. Both Engine buses (Redis Streams and in-memory) use it, so
// they share the same correlation semantics and the same metrics.
package correlate

import (
	"errors"
	"sync"
	"time"

	"github.com/ensure-user/ensure-user/domain"
)

// DefaultRemember is how many abandoned request ids a Table remembers to
// tell late replies from unknown ones.
const DefaultRemember = 4096

// rememberAnswered caps how many answered request ids a Table remembers: a
// duplicate of an answered reply follows it closely, and recording every
// answer in a large set cost a cache-missing map insert per request.
const rememberAnswered = 1024

// Result is what became of one reply entry.
type Result int

// Results of Deliver, and Malformed for entries that never reach it.
const (
	// Delivered: handed to the request waiting for it.
	Delivered Result = iota
	// Late: ours, but nobody waits any more (abandoned, or already answered).
	Late
	// Unknown: not a request this process is waiting for or remembers; with
	// several service instances on one reply stream, most of these are the
	// other instances' replies.
	Unknown
	// Malformed: not JSON, no requestId, no payload field, or too large.
	Malformed
)

// String is the metric label of r.
func (r Result) String() string {
	switch r {
	case Delivered:
		return "delivered"
	case Late:
		return "late"
	case Unknown:
		return "unknown"
	case Malformed:
		return "malformed"
	}
	return "invalid"
}

// ErrDuplicate means a request id was registered while already waiting.
var ErrDuplicate = errors.New("request id already waiting")

// Table is the map of request id to waiting channel. Register and Deliver are
// O(1). A Table is safe for concurrent use; the zero value is not usable.
type Table struct {
	mu        sync.Mutex
	waiting   map[string]waiter
	abandoned recent // abandons are rare, so a short ring spans a long time
	answered  recent // duplicates of answered replies are late, not unknown
}

type waiter struct {
	ch    chan domain.Reply
	since time.Time
}

// NewTable returns an empty table that remembers the last remember abandoned
// request ids (DefaultRemember when <= 0) and the last answered ones, up to
// as many and at most 1024.
func NewTable(remember int) *Table {
	if remember <= 0 {
		remember = DefaultRemember
	}
	return &Table{
		waiting:   make(map[string]waiter),
		abandoned: newRecent(remember),
		answered:  newRecent(min(remember, rememberAnswered)),
	}
}

// Register starts waiting for the reply to id and returns the channel that
// will receive it: buffered for one, never closed. It fails with ErrDuplicate
// when id is already waiting.
func (t *Table) Register(id string) (<-chan domain.Reply, error) {
	w := waiter{ch: make(chan domain.Reply, 1), since: time.Now()}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.waiting[id]; ok {
		return nil, ErrDuplicate
	}
	t.waiting[id] = w
	return w.ch, nil
}

// Deliver hands r to the request waiting for r.RequestID, if any, and stops
// waiting for it, so a duplicate reply is never delivered. It returns what
// became of r and, when Delivered, how long the request had waited. count,
// when not nil, is called with the same two values before the waiter can
// receive r, so that whoever has seen a reply also finds it counted.
func (t *Table) Deliver(r domain.Reply, count func(Result, time.Duration)) (Result, time.Duration) {
	t.mu.Lock()
	w, ok := t.waiting[r.RequestID]
	if !ok {
		late := t.abandoned.has(r.RequestID) || t.answered.has(r.RequestID)
		t.mu.Unlock()
		res := Unknown
		if late {
			res = Late
		}
		if count != nil {
			count(res, 0)
		}
		return res, 0
	}
	delete(t.waiting, r.RequestID)
	t.answered.add(r.RequestID)
	t.mu.Unlock()
	waited := time.Since(w.since)
	if count != nil {
		count(Delivered, waited)
	}
	w.ch <- r // never blocks: buffered for one, and only ever sent here, once
	return Delivered, waited
}

// Abandon stops waiting for id and remembers it, so that its reply, if it
// comes, counts as late. Abandoning an id that is not waiting is a no-op.
func (t *Table) Abandon(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.waiting[id]; ok {
		delete(t.waiting, id)
		t.abandoned.add(id)
	}
}

// Forget stops waiting for id without remembering it: for a command that was
// not sent, no reply can come.
func (t *Table) Forget(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.waiting, id)
}

// Len reports how many requests are waiting.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.waiting)
}

// recent remembers the last len(ids) distinct ids added, in a ring.
type recent struct {
	ids  []string
	next int
	set  map[string]struct{}
}

func newRecent(n int) recent {
	return recent{ids: make([]string, n), set: make(map[string]struct{}, n)}
}

func (r *recent) add(id string) {
	if _, ok := r.set[id]; ok {
		return
	}
	if old := r.ids[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ids[r.next] = id
	r.set[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ids)
}

func (r *recent) has(id string) bool {
	_, ok := r.set[id]
	return ok
}

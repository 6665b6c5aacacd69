package jwksauth

import (
	"encoding/binary"
	"strings"
	"sync"

	"github.com/ensure-user/ensure-user/domain"
)

// cacheSize is how many verified tokens the cache holds: about 3 MB.
const cacheSize = 1 << 15

const cacheShards = 16

// cached is what a verified token established. It answers only while the key
// set it was verified against is still the current one (nil for HS256) and
// only within [from, until), the same window the slow path checks, so the
// cache never changes an answer.
type cached struct {
	id          domain.Identity
	set         *keySet
	from, until int64 // Unix nanoseconds
}

// tokenCache maps the SHA-256 of a token to what verifying it established.
// It is a flat table, direct-mapped by the hash (uniform: it is SHA-256): a
// token's slot is fixed, a newer token for the same slot replaces the
// older, and neither lookup nor insert walks anything. (It was a Go map,
// whose lookups at this size missed the CPU cache and whose eviction
// iterated it: 2 us of every cold verification.) It is sharded to keep lock
// contention low.
type tokenCache struct {
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu    sync.RWMutex
	slots []cacheSlot
}

type cacheSlot struct {
	sum   [32]byte
	entry cached
	used  bool
}

func newTokenCache(size int) *tokenCache {
	c := &tokenCache{}
	for i := range c.shards {
		c.shards[i].slots = make([]cacheSlot, max(1, size/cacheShards))
	}
	return c
}

// slot returns the shard and slot index of sum: the first byte picks the
// shard, the next four the slot.
func (c *tokenCache) slot(sum *[32]byte) (*cacheShard, int) {
	s := &c.shards[sum[0]%cacheShards]
	i := int(binary.LittleEndian.Uint32(sum[1:5]) % uint32(len(s.slots)))
	return s, i
}

// get returns the identity of a token verified earlier, if that answer still
// holds at now under the key set current.
func (c *tokenCache) get(sum *[32]byte, current *keySet, now int64) (domain.Identity, bool) {
	s, i := c.slot(sum)
	s.mu.RLock()
	sl := &s.slots[i]
	ok := sl.used && sl.sum == *sum
	e := sl.entry
	s.mu.RUnlock()
	if !ok || (e.set != nil && e.set != current) || now < e.from || now >= e.until {
		return domain.Identity{}, false
	}
	return e.id, true
}

// put remembers e for sum, in place of whatever held its slot.
func (c *tokenCache) put(sum *[32]byte, e cached) {
	s, i := c.slot(sum)
	s.mu.Lock()
	s.slots[i] = cacheSlot{sum: *sum, entry: e, used: true}
	s.mu.Unlock()
}

// purge drops the entries verified against another key set than current, so
// that the tokens of a removed key leave memory at the refresh that removed it.
func (c *tokenCache) purge(current *keySet) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for j := range s.slots {
			if sl := &s.slots[j]; sl.used && sl.entry.set != nil && sl.entry.set != current {
				*sl = cacheSlot{}
			}
		}
		s.mu.Unlock()
	}
}

// len counts the entries, for tests.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		for j := range s.slots {
			if s.slots[j].used {
				n++
			}
		}
		s.mu.RUnlock()
	}
	return n
}

// headerCacheSize bounds the decoded headers kept: an identity provider
// signs with a handful of keys, so its tokens carry a handful of distinct
// header segments.
const headerCacheSize = 64

// headerCache maps an encoded header segment to its decoded form, so the
// tokens of one key share one base64 and JSON decode of their identical
// header. Only headers that decoded without error are kept, and once full it
// takes no more, so junk headers cannot evict the real ones; a header not
// kept is decoded as before. It never changes an answer: decodeHeader is a
// pure function of the segment.
type headerCache struct {
	mu sync.RWMutex
	m  map[string]header
}

func newHeaderCache() *headerCache { return &headerCache{m: make(map[string]header, headerCacheSize)} }

// decode returns decodeHeader(seg), from the cache when seg was seen before.
func (c *headerCache) decode(seg string) (header, error) {
	c.mu.RLock()
	h, ok := c.m[seg]
	c.mu.RUnlock()
	if ok {
		return h, nil
	}
	h, err := decodeHeader(seg)
	if err != nil {
		return h, err
	}
	c.mu.Lock()
	if len(c.m) < headerCacheSize {
		c.m[strings.Clone(seg)] = h // not a substring: the token may be large and is not ours to keep
	}
	c.mu.Unlock()
	return h, nil
}

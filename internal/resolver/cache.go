package resolver

import (
	"sync"
	"time"
)

type cacheKey struct {
	name  string // normalized, no trailing dot
	qtype uint16
}

// cache holds upstream answers. It is bounded because with the front end's
// Domains "." any client can make it hold one entry per name it invents.
type cache struct {
	mu      sync.RWMutex
	entries map[cacheKey]*Answer
	max     int
}

func (c *cache) get(k cacheKey, now time.Time) (*Answer, bool) {
	c.mu.RLock()
	a, ok := c.entries[k]
	c.mu.RUnlock()
	if !ok || !now.Before(a.Expires) {
		return nil, false
	}
	return a, true
}

func (c *cache) put(k cacheKey, a *Answer, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.max {
		for key, e := range c.entries {
			if !now.Before(e.Expires) {
				delete(c.entries, key)
			}
		}
		// Still full of live entries: drop arbitrary ones (map order is
		// random enough) rather than refuse to cache, so an attacker's
		// flood cannot pin the cache and slow every other lookup.
		for key := range c.entries {
			if len(c.entries) < c.max*7/8 {
				break
			}
			delete(c.entries, key)
		}
	}
	c.entries[k] = a
}

func (c *cache) clear() {
	c.mu.Lock()
	clear(c.entries)
	c.mu.Unlock()
}

// flight coalesces concurrent upstream lookups of one key, so that a burst of
// queries for a name that just expired costs one upstream round trip. It is a
// few lines, and golang.org/x/sync is not a dependency of this module.
type flight struct {
	mu    sync.Mutex
	calls map[cacheKey]*flightCall
}

type flightCall struct {
	done chan struct{}
	ans  *Answer
	err  error
}

func (f *flight) do(k cacheKey, fn func() (*Answer, error)) (*Answer, error) {
	f.mu.Lock()
	if c, ok := f.calls[k]; ok {
		f.mu.Unlock()
		<-c.done
		return c.ans, c.err
	}
	c := &flightCall{done: make(chan struct{})}
	f.calls[k] = c
	f.mu.Unlock()

	c.ans, c.err = fn()

	f.mu.Lock()
	delete(f.calls, k)
	f.mu.Unlock()
	close(c.done)
	return c.ans, c.err
}

package service

import (
	"container/list"
	"context"
	"math"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/pool"
)

// The write rate limit: each caller of the HTTP API (its token once ACLs are
// on, else its source address) may make Options.WriteRate writes a second,
// in bursts of Options.WriteBurst. A write is what reaches the log: an
// allocation that S7 answers from local state costs the cluster nothing and
// is not counted. Past the rate a write fails with rate_limited and says
// when to retry. One caller's flood then grows the state and the log at a
// known pace, and cannot crowd out the other callers' writes.

// DefaultWriteLimiters bounds the callers whose rate is tracked at once.
const DefaultWriteLimiters = 16384

type callerKey struct{}

// WithCaller tells the Service who makes the requests under ctx, for the
// write rate limit; requests without one (the DNS front end, which limits
// its clients itself) are not limited here.
func WithCaller(ctx context.Context, caller string) context.Context {
	return context.WithValue(ctx, callerKey{}, caller)
}

// Caller names a caller for WithCaller: its token when it sent one that
// access control knows, else its source address.
func Caller(t acl.Token, source netip.Addr) string {
	if t.Accessor != "" {
		return "token " + t.Accessor
	}
	return "source " + source.Unmap().String()
}

// RateLimitError is the error of a write past its caller's rate: code
// rate_limited, and when a retry would be admitted.
type RateLimitError struct {
	Err        *pool.Error
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string { return e.Err.Msg }
func (e *RateLimitError) Unwrap() error { return e.Err }

// writeLimiter keeps a token bucket per caller, the most recently used
// max of them: past that the least recently used is dropped, and should
// that caller come back it starts with a full burst. Only more callers at
// once than max can gain from that, and the map never holds more.
type writeLimiter struct {
	limit rate.Limit
	burst int
	max   int

	mu   sync.Mutex
	keys map[string]*list.Element
	lru  list.List // of *callerBucket, most recently used first
	// evicted counts buckets dropped for room.
	evicted uint64
}

type callerBucket struct {
	caller string
	lim    *rate.Limiter
}

func newWriteLimiter(perSecond float64, burst, keep int) *writeLimiter {
	if perSecond <= 0 {
		return nil
	}
	if burst < 1 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	return &writeLimiter{limit: rate.Limit(perSecond), burst: burst, max: keep, keys: map[string]*list.Element{}}
}

// allow takes one write from caller's bucket, or says how long until it
// holds one.
func (w *writeLimiter) allow(caller string, now time.Time) (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	el, ok := w.keys[caller]
	if ok {
		w.lru.MoveToFront(el)
	} else {
		for len(w.keys) >= w.max {
			last := w.lru.Back()
			delete(w.keys, w.lru.Remove(last).(*callerBucket).caller)
			w.evicted++
		}
		el = w.lru.PushFront(&callerBucket{caller: caller, lim: rate.NewLimiter(w.limit, w.burst)})
		w.keys[caller] = el
	}
	r := el.Value.(*callerBucket).lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}

// size is how many callers' buckets are kept.
func (w *writeLimiter) size() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.keys)
}

// admit takes a write from the caller under ctx, if any, or refuses it.
func (s *Service) admit(ctx context.Context) error {
	caller, _ := ctx.Value(callerKey{}).(string)
	if s.limiter == nil || caller == "" {
		return nil
	}
	wait, ok := s.limiter.allow(caller, time.Now())
	if ok {
		return nil
	}
	if s.metrics != nil {
		s.metrics.RateLimited.Inc()
	}
	secs := max(1, int(math.Ceil(wait.Seconds())))
	return &RateLimitError{
		Err: pool.Errorf(pool.CodeRateLimited, "%s is past its write rate of %g a second (burst %d; --http-write-rate, --http-write-burst): retry in %ds",
			caller, float64(s.limiter.limit), s.limiter.burst, secs),
		RetryAfter: time.Duration(secs) * time.Second,
	}
}

// LimitsWrites says whether writes have a rate limit, so that a front end
// need not name callers when they do not.
func (s *Service) LimitsWrites() bool { return s.limiter != nil }

// WriteLimiters is how many callers' write rates are tracked, and the most
// that may be.
func (s *Service) WriteLimiters() (n, limit int) {
	if s.limiter == nil {
		return 0, 0
	}
	return s.limiter.size(), s.limiter.max
}

// Now is the time the service judges mappings by (Options.Now: the
// cluster's time on a server).
func (s *Service) Now() time.Time { return s.opts.Now() }

package dnsfront

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiters holds one token bucket per client. Buckets that have refilled
// are indistinguishable from new ones, so they are dropped when the map
// grows large; that bounds memory under a flood of spoofed sources.
type limiters struct {
	mu    sync.Mutex
	m     map[string]*rate.Limiter
	limit rate.Limit
	burst int
}

const maxLimiters = 1 << 16

func (l *limiters) allow(client string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[client]
	if !ok {
		if len(l.m) >= maxLimiters {
			for id, x := range l.m {
				if x.TokensAt(now) >= float64(l.burst) {
					delete(l.m, id)
				}
			}
		}
		lim = rate.NewLimiter(l.limit, l.burst)
		l.m[client] = lim
	}
	return lim.AllowN(now, 1)
}

// newLimiters returns nil (no limit) when rate is 0; burst 0 means one
// second's worth.
func newLimiters(r float64, burst int) *limiters {
	if r <= 0 {
		return nil
	}
	if burst == 0 {
		burst = max(1, int(r))
	}
	return &limiters{m: make(map[string]*rate.Limiter), limit: rate.Limit(r), burst: burst}
}

// spend takes the token a query needs for work beyond local state (see
// Config.RateLimit) and, for a client the pool holds nothing of, one of the
// new-client bucket shared by all sources (Config.NewClientRate). The
// shared bucket is asked first, so that forged sources, each with a fresh
// bucket of its own, cannot fill the per-client map either. It reports
// false, counted, when either bucket is empty.
func (s *Server) spend(client string) bool {
	now := s.now()
	if s.newClients != nil && !s.pool.HasClient(client) && !s.newClients.AllowN(now, 1) {
		s.stats.newClientLimited.Add(1)
		return false
	}
	if s.limits != nil && !s.limits.allow(client, now) {
		s.stats.rateLimited.Add(1)
		return false
	}
	return true
}

// newClientLimiter returns nil (no limit) when rate is 0; burst 0 means one
// second's worth.
func newClientLimiter(r float64, burst int) *rate.Limiter {
	if r <= 0 {
		return nil
	}
	if burst == 0 {
		burst = max(1, int(r))
	}
	return rate.NewLimiter(rate.Limit(r), burst)
}

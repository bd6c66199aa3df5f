package connector

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limits bounds flows in all and per client, and new flows per client per
// second, so that no client can starve the others and memory stays bounded.
type limits struct {
	mu        sync.Mutex
	total     int
	maxTotal  int
	maxClient int
	rate      rate.Limit // 0: no rate limit
	burst     int
	clients   map[string]*clientLimit
}

type clientLimit struct {
	flows int
	lim   *rate.Limiter // nil without a rate limit
}

// maxTracked bounds the clients tracked for their rate alone (no flow open).
// A refilled bucket is the same as a new one, so such entries are dropped
// when the map reaches it; a flood of sources beyond it is refused.
const maxTracked = 1 << 16

func newLimits(maxTotal, maxClient int, r float64, burst int) *limits {
	l := &limits{maxTotal: maxTotal, maxClient: maxClient, clients: make(map[string]*clientLimit)}
	if r > 0 {
		l.rate, l.burst = rate.Limit(r), burst
	}
	return l
}

// admit takes a place for a new flow of client, or says why not.
func (l *limits) admit(client string, now time.Time) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.maxTotal {
		return fmt.Sprintf("%d flows open, the limit of all clients", l.total)
	}
	cl := l.clients[client]
	if cl == nil {
		if len(l.clients) >= maxTracked {
			l.sweep(now)
			if len(l.clients) >= maxTracked {
				return "too many clients tracked"
			}
		}
		cl = &clientLimit{}
		if l.rate > 0 {
			cl.lim = rate.NewLimiter(l.rate, l.burst)
		}
		l.clients[client] = cl
	}
	if cl.flows >= l.maxClient {
		return fmt.Sprintf("%d flows open, the limit per client", cl.flows)
	}
	if cl.lim != nil && !cl.lim.AllowN(now, 1) {
		return fmt.Sprintf("over %v new flows per second", float64(l.rate))
	}
	cl.flows++
	l.total++
	return ""
}

// release gives back a place taken by admit.
func (l *limits) release(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	cl := l.clients[client]
	if cl == nil {
		return
	}
	cl.flows--
	if cl.flows <= 0 && cl.lim == nil {
		delete(l.clients, client)
	}
}

// sweep drops clients with no flow whose bucket is full again.
func (l *limits) sweep(now time.Time) {
	for id, cl := range l.clients {
		if cl.flows == 0 && (cl.lim == nil || cl.lim.TokensAt(now) >= float64(l.burst)) {
			delete(l.clients, id)
		}
	}
}

// open is the number of flows open, for the tests.
func (l *limits) open() (total, tracked int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, len(l.clients)
}

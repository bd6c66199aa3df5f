package connector

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limits bounds flows in all and per client, and new flows per client per
// second, so that no client can starve the others and memory stays bounded.
//
// The per-client bound alone lets a few clients (or one with a few source
// addresses) take the whole table, since a flow an upstream keeps open is
// held for as long as it lasts. So past half the table each client gets a
// fair share: a new flow that would leave more than half of maxTotal in use
// is refused to a client that would then hold more than
//
//	max(floor, maxTotal / (clients holding flows + 1))
//
// flows, the client itself counted among those holding flows and the +1
// keeping a share for a client yet to come; floor (maxClient/16, at least
// 1) lets an ordinary client open a few flows however many clients there
// are. Below half the table a client may use it all, up to maxClient: a
// flow already open is never taken back, so the first half is what the
// share protects.
type limits struct {
	mu        sync.Mutex
	total     int
	maxTotal  int
	maxClient int
	floor     int
	active    int        // clients holding one flow or more
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
	l := &limits{maxTotal: maxTotal, maxClient: maxClient, floor: max(1, maxClient/16), clients: make(map[string]*clientLimit)}
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
	if share := l.share(cl); cl.flows >= share {
		return fmt.Sprintf("%d flows open, this client's share (%d) while over half of all clients' %d are in use", cl.flows, share, l.maxTotal)
	}
	if cl.lim != nil && !cl.lim.AllowN(now, 1) {
		return fmt.Sprintf("over %v new flows per second", float64(l.rate))
	}
	if cl.flows == 0 {
		l.active++
	}
	cl.flows++
	l.total++
	return ""
}

// share is how many flows cl may hold after a new one is admitted: all it
// is allowed while that flow leaves half the table or less in use, its
// fair share past it.
func (l *limits) share(cl *clientLimit) int {
	if 2*(l.total+1) <= l.maxTotal {
		return l.maxClient
	}
	active := l.active
	if cl.flows == 0 {
		active++
	}
	return max(l.floor, l.maxTotal/(active+1))
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
	if cl.flows == 0 {
		l.active--
	}
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

// clientFlowBuckets are the upper bounds of the histogram of flows per
// client.
var clientFlowBuckets = []float64{1, 2, 4, 8, 16, 64, 256, 1024, 4096}

// clientStats describes how flows are spread over clients, for the
// metrics: how many clients hold flows, the most one holds, and how many
// hold at most each of clientFlowBuckets (cumulative).
func (l *limits) clientStats() (active, busiest int, sum int, buckets []uint64) {
	buckets = make([]uint64, len(clientFlowBuckets))
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, cl := range l.clients {
		if cl.flows <= 0 {
			continue
		}
		busiest = max(busiest, cl.flows)
		for i, b := range clientFlowBuckets {
			if float64(cl.flows) <= b {
				buckets[i]++
			}
		}
	}
	return l.active, busiest, l.total, buckets
}

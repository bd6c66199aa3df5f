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
// are. Below half the table a client may use it all, up to maxClient.
//
// Clients that came first keep what they took below half the table, so
// maxTotal/maxClient + 1 of them (17 at the defaults) could still fill it.
// So a full table is not the end: a client under its share may take the
// place of a flow of the client furthest over the share (reclaim), the one
// of that client's flows (of up to reclaimSample looked at) on which
// neither side has received anything for longest. That flow is ended, as
// an idle one is. Only flows that are relaying can be reclaimed (hold).
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
	// over holds the clients with more than floor flows: the only ones a
	// reclaim can take from (the share is at least floor), at most
	// maxTotal/floor of them, so that a full table is not a scan of every
	// client tracked.
	over map[*clientLimit]struct{}
}

type clientLimit struct {
	flows int
	lim   *rate.Limiter // nil without a rate limit
	held  map[*heldFlow]struct{}
}

// heldFlow is a relaying flow that may be reclaimed.
type heldFlow struct {
	client string
	// quiet is how long neither side has received data; end resets both.
	quiet func() time.Duration
	end   func()
	// reclaimed is set, under limits.mu, when the flow's place was given
	// to another client: its release then gives back nothing.
	reclaimed bool
}

// reclaimSample bounds the flows of the victim client looked at for the
// quietest: each look is a system call or two, made under the lock.
const reclaimSample = 64

// maxTracked bounds the clients tracked for their rate alone (no flow open).
// A refilled bucket is the same as a new one, so such entries are dropped
// when the map reaches it; a flood of sources beyond it is refused.
const maxTracked = 1 << 16

func newLimits(maxTotal, maxClient int, r float64, burst int) *limits {
	l := &limits{maxTotal: maxTotal, maxClient: maxClient, floor: max(1, maxClient/16),
		clients: make(map[string]*clientLimit), over: make(map[*clientLimit]struct{})}
	if r > 0 {
		l.rate, l.burst = rate.Limit(r), burst
	}
	return l
}

// admit takes a place for a new flow of client, or says why not.
func (l *limits) admit(client string, now time.Time) string {
	l.mu.Lock()
	var victim *heldFlow
	defer func() {
		l.mu.Unlock()
		if victim != nil {
			victim.end()
		}
	}()
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
	refuse := func(why string) string {
		if cl.flows == 0 && cl.lim == nil {
			delete(l.clients, client)
		}
		return why
	}
	if cl.flows >= l.maxClient {
		return refuse(fmt.Sprintf("%d flows open, the limit per client", cl.flows))
	}
	share := l.share(cl)
	if cl.flows >= share {
		return refuse(fmt.Sprintf("%d flows open, this client's share (%d) while over half of all clients' %d are in use", cl.flows, share, l.maxTotal))
	}
	var from *clientLimit
	if l.total >= l.maxTotal {
		var ok bool
		if from, ok = l.victim(cl, share); !ok {
			return refuse(l.fullReason())
		}
	}
	if cl.lim != nil && !cl.lim.AllowN(now, 1) {
		return refuse(fmt.Sprintf("over %v new flows per second", float64(l.rate)))
	}
	if from != nil {
		victim = l.reclaim(from)
	}
	if cl.flows == 0 {
		l.active++
	}
	cl.flows++
	if cl.flows == l.floor+1 {
		l.over[cl] = struct{}{}
	}
	l.total++
	return ""
}

func (l *limits) fullReason() string {
	return fmt.Sprintf("%d flows open, the limit of all clients, and no client holds more than its share", l.total)
}

// victim is the client furthest over share, other than asker, with a flow
// that can be reclaimed.
func (l *limits) victim(asker *clientLimit, share int) (*clientLimit, bool) {
	var v *clientLimit
	for cl := range l.over {
		if cl != asker && cl.flows > share && len(cl.held) > 0 && (v == nil || cl.flows > v.flows) {
			v = cl
		}
	}
	return v, v != nil
}

// reclaim takes the place of the quietest of up to reclaimSample of v's
// held flows, which the caller ends once the lock is released.
func (l *limits) reclaim(v *clientLimit) *heldFlow {
	var h *heldFlow
	var longest time.Duration
	n := 0
	for f := range v.held {
		if q := f.quiet(); h == nil || q > longest {
			h, longest = f, q
		}
		if n++; n == reclaimSample {
			break
		}
	}
	delete(v.held, h)
	h.reclaimed = true
	l.drop(h.client, v)
	return h
}

// hold makes an admitted flow of client, now relaying, one that may be
// reclaimed; pass what it returns to release.
func (l *limits) hold(client string, quiet func() time.Duration, end func()) *heldFlow {
	h := &heldFlow{client: client, quiet: quiet, end: end}
	l.mu.Lock()
	defer l.mu.Unlock()
	if cl := l.clients[client]; cl != nil {
		if cl.held == nil {
			cl.held = make(map[*heldFlow]struct{})
		}
		cl.held[h] = struct{}{}
	}
	return h
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

// release gives back a place taken by admit. h is what hold returned for
// the flow, nil if it never relayed; a reclaimed flow's place was given
// back when it was reclaimed.
func (l *limits) release(client string, h *heldFlow) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h != nil && h.reclaimed {
		return
	}
	cl := l.clients[client]
	if cl != nil && h != nil {
		delete(cl.held, h)
	}
	l.drop(client, cl)
}

// drop gives back one of cl's places.
func (l *limits) drop(client string, cl *clientLimit) {
	l.total--
	if cl == nil {
		return
	}
	if cl.flows == l.floor+1 {
		delete(l.over, cl)
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

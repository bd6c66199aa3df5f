package service

import (
	"net/netip"
	"sync"
	"time"
)

// markBuffer coalesces mark-used writes (S5): one pending mark per client
// address, keeping the latest time, bounded in size.
type markBuffer struct {
	mu      sync.Mutex
	pending map[markKey]markVal
	max     int
}

type markKey struct {
	client string
	addr   netip.Addr
}

type markVal struct {
	domain string
	at     time.Time
}

type pendingMark struct {
	client string
	addr   netip.Addr
	domain string
	at     time.Time
}

func newMarkBuffer(max int) *markBuffer {
	return &markBuffer{pending: make(map[markKey]markVal), max: max}
}

// add queues a mark; it returns false when the buffer is full.
func (b *markBuffer) add(client string, addr netip.Addr, domain string, at time.Time) bool {
	k := markKey{client, addr}
	b.mu.Lock()
	defer b.mu.Unlock()
	if v, ok := b.pending[k]; ok {
		if at.After(v.at) || v.domain != domain {
			b.pending[k] = markVal{domain, at}
		}
		return true
	}
	if len(b.pending) >= b.max {
		return false
	}
	b.pending[k] = markVal{domain, at}
	return true
}

func (b *markBuffer) take() []pendingMark {
	b.mu.Lock()
	p := b.pending
	b.pending = make(map[markKey]markVal, len(p))
	b.mu.Unlock()
	out := make([]pendingMark, 0, len(p))
	for k, v := range p {
		out = append(out, pendingMark{k.client, k.addr, v.domain, v.at})
	}
	return out
}

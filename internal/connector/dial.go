package connector

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"
)

// connectionAttemptDelay is RFC 8305's Connection Attempt Delay: how long
// one address has to accept before the next is tried alongside it.
const connectionAttemptDelay = 250 * time.Millisecond

// familyAnswer is one family's lookup.
type familyAnswer struct {
	addrs   []netip.Addr
	ignored bool
	err     error
}

// resolve asks for the domain's A and AAAA records at once, so that a
// domain with one family only costs no extra round trip.
func (c *Connector) resolve(name string) (v4, v6 familyAnswer) {
	ch := make(chan familyAnswer, 1)
	go func() {
		a, ig, err := c.res.LookupAAAA(name)
		ch <- familyAnswer{a, ig, err}
	}()
	a, ig, err := c.res.LookupA(name)
	v4 = familyAnswer{a, ig, err}
	v6 = <-ch
	return v4, v6
}

// interleave orders addresses as RFC 8305 section 4 does: the preferred
// family's first, then the other's first, alternating, the rest of the
// longer list at the end.
func interleave(preferred, other []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(preferred)+len(other))
	for i := 0; i < len(preferred) || i < len(other); i++ {
		if i < len(preferred) {
			out = append(out, preferred[i])
		}
		if i < len(other) {
			out = append(out, other[i])
		}
	}
	return out
}

// dialRace connects to port on addrs as Happy Eyeballs does (RFC 8305):
// each attempt starts when the one before failed or has had the attempt
// delay, attempts overlap, the first to connect wins and the others are
// cancelled (one that connects anyway is closed).
func (c *Connector) dialRace(addrs []netip.Addr, port uint16, local netip.Addr) (net.Conn, netip.AddrPort, error) {
	if len(addrs) == 0 {
		return nil, netip.AddrPort{}, errors.New("no address to dial")
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	type result struct {
		conn net.Conn
		ap   netip.AddrPort
		err  error
	}
	// Buffered for every attempt, so that none blocks once the race is
	// decided.
	results := make(chan result, len(addrs))
	d := net.Dialer{Timeout: c.cfg.DialTimeout, KeepAliveConfig: keepAliveConfig(c.cfg.KeepAlive)}
	if local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
	}
	next, running := 0, 0
	startNext := func() {
		ap := netip.AddrPortFrom(addrs[next], port)
		next++
		running++
		go func() {
			conn, err := d.DialContext(ctx, "tcp", ap.String())
			results <- result{conn, ap, err}
		}()
	}
	startNext()
	delay := time.NewTimer(c.attemptDelay)
	defer delay.Stop()
	var errs []error
	for running > 0 {
		select {
		case r := <-results:
			running--
			if r.err == nil {
				if running > 0 {
					go func(n int) {
						for range n {
							if late := <-results; late.conn != nil {
								late.conn.Close()
							}
						}
					}(running)
				}
				return r.conn, r.ap, nil
			}
			errs = append(errs, r.err)
			if next < len(addrs) {
				startNext()
				delay.Reset(c.attemptDelay)
			}
		case <-delay.C:
			if next < len(addrs) {
				startNext()
				delay.Reset(c.attemptDelay)
			}
		}
	}
	return nil, netip.AddrPort{}, errors.Join(errs...)
}

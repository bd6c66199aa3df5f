package connector

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestRouteHappyEyeballsOrder: both families are resolved, the client's
// family comes first and the families alternate; a domain with IPv6 alone
// is reached from an IPv4 client; private IPv6 is refused like private
// IPv4.
func TestRouteHappyEyeballsOrder(t *testing.T) {
	c, fp := newTest(t, Config{})
	res := c.res.(fakeResolver)
	fp.mappings["10.0.0.1 198.18.0.30"] = "dual.test"
	fp.mappings["10.0.0.1 198.18.0.31"] = "v6only.test"
	fp.mappings["10.0.0.1 198.18.0.32"] = "ula.test"
	res["dual.test"] = []netip.Addr{
		netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("203.0.113.3"),
		netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"),
	}
	res["v6only.test"] = []netip.Addr{netip.MustParseAddr("2001:db8::5")}
	res["ula.test"] = []netip.Addr{netip.MustParseAddr("fd00::5"), netip.MustParseAddr("::1"), netip.MustParseAddr("fe80::1")}
	routeCases(t, c, []routeCase{
		{"10.0.0.1:1000", "198.18.0.30:443", Relayed, "[203.0.113.1,2001:db8::1,203.0.113.2,2001:db8::2,203.0.113.3]"},
		{"10.0.0.1:1000", "[fd7a:115c:a1e0:b1a::c612:1e]:443", Relayed, "[2001:db8::1,203.0.113.1,2001:db8::2,203.0.113.2,203.0.113.3]"},
		{"10.0.0.1:1000", "198.18.0.31:443", Relayed, "[2001:db8::5]"},
		{"10.0.0.1:1000", "198.18.0.32:443", Refused, ""},
	})
}

// TestDialRaceTriesTheNextAtOnceWhenOneFails: an address that refuses
// costs no attempt delay; the flow reaches the next.
func TestDialRaceTriesTheNextAtOnceWhenOneFails(t *testing.T) {
	c, _ := newTest(t, Config{})
	c.attemptDelay = time.Hour
	ln := listenLoopback(t, "127.0.0.1:0")
	port := netip.MustParseAddrPort(ln.Addr().String()).Port()
	addrs := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}
	conn, ap, err := dialRaceWithin(t, c, addrs, port, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if ap.Addr() != addrs[1] {
		t.Fatalf("reached %v, want %v", ap, addrs[1])
	}
	if _, _, err := dialRaceWithin(t, c, addrs[:1], port, 5*time.Second); err == nil {
		t.Fatal("a refusing address alone connected")
	}
}

func listenLoopback(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return ln
}

// dialRaceWithin runs dialRace, failing the test if it outlasts d.
func dialRaceWithin(t *testing.T, c *Connector, addrs []netip.Addr, port uint16, d time.Duration) (net.Conn, netip.AddrPort, error) {
	t.Helper()
	type result struct {
		conn net.Conn
		ap   netip.AddrPort
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		conn, ap, err := c.dialRace(addrs, port, netip.Addr{})
		ch <- result{conn, ap, err}
	}()
	select {
	case r := <-ch:
		return r.conn, r.ap, r.err
	case <-time.After(d):
		t.Fatalf("dialRace %v still running after %v", addrs, d)
		return nil, netip.AddrPort{}, nil
	}
}

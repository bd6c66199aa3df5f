package connector

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDialRaceStartsTheNextAfterTheDelay: an address that never answers
// (a listener whose accept queue is full drops the SYN) is raced by the
// next one after the attempt delay, and the flow reaches that one.
func TestDialRaceStartsTheNextAfterTheDelay(t *testing.T) {
	c, _ := newTest(t, Config{DialTimeout: 30 * time.Second})
	c.attemptDelay = 50 * time.Millisecond
	ln := listenLoopback(t, "127.0.0.1:0")
	port := netip.MustParseAddrPort(ln.Addr().String()).Port()
	silent := fullListener(t, "127.0.0.3", port)
	addrs := []netip.Addr{silent, netip.MustParseAddr("127.0.0.1")}
	t0 := time.Now()
	conn, ap, err := dialRaceWithin(t, c, addrs, port, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if ap.Addr() != addrs[1] || time.Since(t0) > 5*time.Second {
		t.Fatalf("reached %v after %v, want %v after about the attempt delay", ap, time.Since(t0), addrs[1])
	}
}

// fullListener listens on addr:port with an accept queue of one and fills
// it, so that the kernel drops further SYNs: a dial there hangs.
func fullListener(t *testing.T, addr string, port uint16) netip.Addr {
	t.Helper()
	a := netip.MustParseAddr(addr)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: a.As4(), Port: int(port)}); err != nil {
		t.Skipf("bind %v:%d: %v", a, port, err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	// Fill the queue; the handshake completes into it, unaccepted.
	for range 2 {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(a, port).String(), 200*time.Millisecond)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	return a
}

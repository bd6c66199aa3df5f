package connector

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// echoServer accepts on 127.0.0.1 and echoes each connection until EOF,
// then half-closes, so a test sees that a FIN crossed the relay both ways.
func echoServer(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// userspaceConn hides the *net.TCPConn behind a connection, as a network
// stack's connection is not one, but keeps its half-close.
type userspaceConn struct{ net.Conn }

func (c userspaceConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

// servedPair starts ServeConn on one end of a TCP pair and returns the
// other end, the client's.
func servedPair(t *testing.T, c *Connector, client string, dst netip.AddrPort) (net.Conn, chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.ServeConn(userspaceConn{b}, client, dst)
	}()
	return a, done
}

func TestServeConnRelaysAndHalfCloses(t *testing.T) {
	echo := echoServer(t)
	c, fp := newTest(t, Config{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	fp.mappings["nodeA 198.18.0.20"] = "echo.test"
	c.res.(fakeResolver)["echo.test"] = []netip.Addr{echo.Addr()}

	client, done := servedPair(t, c, "nodeA", netip.AddrPortFrom(netip.MustParseAddr("198.18.0.20"), echo.Port()))
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	client.(*net.TCPConn).CloseWrite()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(got, []byte("hello")) {
		t.Fatalf("read %q, %v; want the echo, then EOF", got, err)
	}
	<-done
	if total, _ := c.limits.open(); total != 0 {
		t.Fatalf("%d flows still counted after the flow ended", total)
	}
}

func TestServeConnClosesFlowsItCannotCarry(t *testing.T) {
	echo := echoServer(t)
	c, fp := newTest(t, Config{})
	fp.mappings["nodeA 198.18.0.20"] = "echo.test"
	c.res.(fakeResolver)["echo.test"] = []netip.Addr{echo.Addr()}
	for _, tc := range []struct {
		name, client string
		dst          string
	}{
		// The guard refuses loopback without Allow.
		{"loopback upstream", "nodeA", "198.18.0.20"},
		{"another client's address", "nodeB", "198.18.0.20"},
		{"no mapping", "nodeA", "198.18.0.21"},
	} {
		client, done := servedPair(t, c, tc.client, netip.AddrPortFrom(netip.MustParseAddr(tc.dst), echo.Port()))
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := client.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
			t.Errorf("%s: read %d, %v; want the connection closed", tc.name, n, err)
		}
		<-done
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestCarries(t *testing.T) {
	c, _ := newTest(t, Config{})
	for dst, want := range map[string]bool{
		"198.18.0.1":                 true,
		"198.19.255.255":             true,
		"198.18.0.99":                false, // excluded
		"10.0.0.1":                   false,
		"fd7a:115c:a1e0:b1a::c612:1": true, // 198.18.0.1 in the v6 prefix
		"fd7a:115c:a1e0:b1b::c612:1": false,
		"::ffff:198.18.0.1":          true,
		"fd7a:115c:a1e0:b1a::a00:1":  false, // 10.0.0.1
	} {
		if got := c.Carries(netip.MustParseAddr(dst)); got != want {
			t.Errorf("Carries(%s) = %v, want %v", dst, got, want)
		}
	}
}

func TestCloseEndsServedFlowsAndRefusesNewOnes(t *testing.T) {
	echo := echoServer(t)
	c, fp := newTest(t, Config{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	fp.mappings["nodeA 198.18.0.20"] = "echo.test"
	c.res.(fakeResolver)["echo.test"] = []netip.Addr{echo.Addr()}
	dst := netip.AddrPortFrom(netip.MustParseAddr("198.18.0.20"), echo.Port())
	client, done := servedPair(t, c, "nodeA", dst)
	client.Write([]byte("x"))
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	if _, err := client.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("the flow outlived Close: %v", err)
	}
	late, lateDone := servedPair(t, c, "nodeA", dst)
	<-lateDone
	late.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := late.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("a flow after Close was carried: %v", err)
	}
}

// holdingServer accepts on 127.0.0.1, reads each connection to its EOF and
// then holds it open without a byte or a FIN, as an upstream that never
// closes does.
func holdingServer(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			go io.Copy(io.Discard, c)
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// TestServeConnHalfCloseTimeout: a client that half-closed, facing an
// upstream that never finishes, has its flow ended after the half-close
// timeout, its place released and the flow counted.
func TestServeConnHalfCloseTimeout(t *testing.T) {
	hold := holdingServer(t)
	m := NewMetrics(prometheus.NewRegistry())
	c, fp := newTest(t, Config{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, HalfCloseTimeout: 200 * time.Millisecond, Metrics: m})
	fp.mappings["nodeA 198.18.0.20"] = "hold.test"
	c.res.(fakeResolver)["hold.test"] = []netip.Addr{hold.Addr()}
	client, done := servedPair(t, c, "nodeA", netip.AddrPortFrom(netip.MustParseAddr("198.18.0.20"), hold.Port()))
	client.Write([]byte("request"))
	client.(*net.TCPConn).CloseWrite()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the flow outlived the half-close timeout by far")
	}
	if total, _ := c.limits.open(); total != 0 {
		t.Fatalf("%d flows still counted after the half-close timeout", total)
	}
	if v := testutil.ToFloat64(m.timeouts.WithLabelValues("half_close")); v != 1 {
		t.Fatalf("half-close timeouts counted %v, want 1", v)
	}
	if v := testutil.ToFloat64(m.byFlow["tcp"][Relayed]); v != 1 {
		t.Fatalf("relayed flows counted %v, want 1", v)
	}
}

// TestServeConnHalfClosedFlowLivesWhileDataMoves: the half-close timeout
// counts quiet time, as HAProxy's client-fin does, so a client that
// half-closed after its request gets an answer that streams for longer
// than the timeout whole.
func TestServeConnHalfClosedFlowLivesWhileDataMoves(t *testing.T) {
	const chunks, gap, timeout = 40, 50 * time.Millisecond, 500 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		up, err := ln.Accept()
		if err != nil {
			return
		}
		defer up.Close()
		io.Copy(io.Discard, up)
		// An answer that trickles for longer than the timeout: the pace
		// of the upstream, not a wait for any state of the test's.
		tick := time.NewTicker(gap)
		defer tick.Stop()
		for range chunks {
			if _, err := up.Write([]byte{'x'}); err != nil {
				return
			}
			<-tick.C
		}
	}()
	stream := ln.Addr().(*net.TCPAddr).AddrPort()
	m := NewMetrics(prometheus.NewRegistry())
	c, fp := newTest(t, Config{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, HalfCloseTimeout: timeout, Metrics: m})
	fp.mappings["nodeA 198.18.0.21"] = "stream.test"
	c.res.(fakeResolver)["stream.test"] = []netip.Addr{stream.Addr()}
	client, done := servedPair(t, c, "nodeA", netip.AddrPortFrom(netip.MustParseAddr("198.18.0.21"), stream.Port()))
	client.Write([]byte("request"))
	client.(*net.TCPConn).CloseWrite()
	client.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || len(got) != chunks {
		t.Fatalf("read %d of %d bytes (%v): the half-closed flow was cut while data moved", len(got), chunks, err)
	}
	<-done
	if v := testutil.ToFloat64(m.timeouts.WithLabelValues("half_close")); v != 0 {
		t.Fatalf("half-close timeouts counted %v, want 0", v)
	}
}

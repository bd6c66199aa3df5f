package connector

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); s.Close() })
	return d.(*net.TCPConn), s.(*net.TCPConn)
}

// relayed sets up client <-> (relay) <-> server and returns the outer ends.
func relayed(t *testing.T, c *Connector) (client, server *net.TCPConn, done chan [2]int64) {
	client, in := tcpPair(t)
	out, server := tcpPair(t)
	done = make(chan [2]int64, 1)
	go func() {
		u, d, _ := c.relay("t", in, out)
		done <- [2]int64{u, d}
	}()
	return client, server, done
}

// TestRelayHalfClose: a client that shuts its write side after the request
// still reads the whole answer, and the byte counts are each direction's.
func TestRelayHalfClose(t *testing.T) {
	c, _ := newTest(t, Config{})
	client, server, done := relayed(t, c)
	req := bytes.Repeat([]byte("q"), 100_000)
	go func() {
		client.Write(req)
		client.CloseWrite()
	}()
	got, err := io.ReadAll(server)
	if err != nil || !bytes.Equal(got, req) {
		t.Fatalf("server read %d bytes, %v", len(got), err)
	}
	ans := bytes.Repeat([]byte("a"), 300_000)
	server.Write(ans)
	server.CloseWrite()
	got, err = io.ReadAll(client)
	if err != nil || !bytes.Equal(got, ans) {
		t.Fatalf("client read %d bytes, %v", len(got), err)
	}
	select {
	case n := <-done:
		if n != [2]int64{100_000, 300_000} {
			t.Fatalf("counted %v", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not end after both FINs")
	}
}

// TestRelayHalfCloseTimeout: after the client's FIN, an upstream that
// neither answers nor finishes has the flow reset after the half-close
// timeout, counted; with both sides finished in time nothing is counted.
func TestRelayHalfCloseTimeout(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	c, _ := newTest(t, Config{HalfCloseTimeout: 200 * time.Millisecond, Metrics: m})
	client, server, done := relayed(t, c)
	client.Write([]byte("request"))
	client.CloseWrite()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(server); err != nil || string(got) != "request" {
		t.Fatalf("server read %q, %v", got, err)
	}
	select {
	case n := <-done:
		if n != [2]int64{7, 0} {
			t.Fatalf("counted %v", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the relay outlived the half-close timeout by far")
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read after the timeout: %v, want a reset", err)
	}
	if v := testutil.ToFloat64(m.timeouts.WithLabelValues("half_close")); v != 1 {
		t.Fatalf("half-close timeouts counted %v, want 1", v)
	}
}

// TestRelayReset: a reset on one side resets the other.
func TestRelayReset(t *testing.T) {
	c, _ := newTest(t, Config{})
	client, server, done := relayed(t, c)
	client.Write([]byte("x"))
	buf := make([]byte, 1)
	if _, err := io.ReadFull(server, buf); err != nil {
		t.Fatal(err)
	}
	reset(server)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := client.Read(buf)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read after the server's reset: %v", err)
	}
	<-done
}

// TestRelayIdle: a flow that moves nothing is reset after the idle timeout,
// and one that keeps moving bytes in one direction only is not.
func TestRelayIdle(t *testing.T) {
	c, _ := newTest(t, Config{IdleTimeout: 400 * time.Millisecond})
	client, server, done := relayed(t, c)
	// Bytes downstream only, for three timeouts.
	stop := time.Now().Add(1200 * time.Millisecond)
	buf := make([]byte, 16)
	// Paces the traffic (a byte every 100ms, well inside the timeout); it
	// waits for no state.
	pace := time.NewTicker(100 * time.Millisecond)
	defer pace.Stop()
	for time.Now().Before(stop) {
		if _, err := server.Write([]byte("tick")); err != nil {
			t.Fatalf("write while active: %v", err)
		}
		if _, err := io.ReadFull(client, buf[:4]); err != nil {
			t.Fatalf("read while active: %v", err)
		}
		<-pace.C
	}
	t0 := time.Now()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(buf); err == nil {
		t.Fatal("idle flow still open")
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("idle flow closed after %v", d)
	}
	<-done
}

// TestAcceptedKeepAlive: accepted sockets inherit the listener's keepalive
// settings (the listener sets them once instead of per flow).
func TestAcceptedKeepAlive(t *testing.T) {
	lc := listenConfig(42 * time.Second)
	ln, err := lc.Listen(t.Context(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Skipf("transparent listener (needs CAP_NET_ADMIN): %v", err)
	}
	defer ln.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, _ := c.(*net.TCPConn).SyscallConn()
	var on, idle, cnt int
	rc.Control(func(fd uintptr) {
		on, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		idle, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
		cnt, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPCNT)
	})
	if on != 1 || idle != 42 || cnt != 4 {
		t.Fatalf("accepted socket: SO_KEEPALIVE %d, TCP_KEEPIDLE %d, TCP_KEEPCNT %d", on, idle, cnt)
	}
}

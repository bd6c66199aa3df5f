package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/pool"
)

// The cluster port under abuse (issue 17): frames cost what arrives,
// every phase of a connection has a deadline, and connections are capped
// in all and per source. Servers here listen on 127.0.0.109.

// Twenty frames each announcing the largest body and carrying 1 KiB cost a
// few chunks, not 20 x 16 MiB; frames that arrive
// whole read back as sent at every size around the chunk.
func TestAnnouncedFrameCostsOnlyWhatArrives(t *testing.T) {
	var frames [20][]byte
	for i := range frames {
		var h [frameHeader]byte
		binary.BigEndian.PutUint32(h[:4], uint32(8+maxApplyBody))
		frames[i] = append(h[:], make([]byte, 1024)...)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, f := range frames {
		if _, _, err := readFrame(bufio.NewReader(bytes.NewReader(f)), maxApplyBody); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("a frame cut short: %v, want unexpected EOF", err)
		}
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > maxApplyBody {
		t.Fatalf("20 frames announcing %d bytes and sending 1 KiB allocated %d bytes", maxApplyBody, got)
	} else {
		t.Logf("20 frames announcing %d bytes and sending 1 KiB allocated %d bytes", maxApplyBody, got)
	}

	for _, size := range []int{0, 1, frameChunk - 1, frameChunk, frameChunk + 1, 3*frameChunk + 7, maxApplyBody} {
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(rand.Uint32())
		}
		var buf bytes.Buffer
		if err := writeFrame(bufio.NewWriter(&buf), 7, body); err != nil {
			t.Fatal(err)
		}
		seq, got, err := readFrame(bufio.NewReader(&buf), maxApplyBody)
		if err != nil || seq != 7 || !bytes.Equal(got, body) {
			t.Fatalf("a frame of %d bytes read back as %d bytes, seq %d, %v", size, len(got), seq, err)
		}
	}
}

// startLimited starts a lone plain-TCP server on 127.0.0.109 with limits
// set by mutate.
func startLimited(t *testing.T, mutate func(*Config)) *Node {
	t.Helper()
	cfg := Config{ID: "solo", DataDir: t.TempDir(), ClusterAddr: "127.0.0.109:0", Insecure: true, Logger: testLogger(t)}
	mutate(&cfg)
	n := startSolo(t, cfg)
	t.Cleanup(func() { n.Shutdown() })
	return n
}

// dialFrom opens a TCP connection to addr from the loopback address src
// and writes what, if anything.
func dialFrom(t *testing.T, src, addr string, what []byte) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if len(what) > 0 {
		if _, err := c.Write(what); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// closedWithin reports whether the server closed c within d: a read ends
// with EOF or a reset, not this end's deadline.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// A connection that stops after its protocol byte (each protocol), inside
// its first forwarding frame, or before sending anything, is closed after
// the handshake deadline; before it, it is open.
func TestClusterConnectionsThatStallAreClosed(t *testing.T) {
	const deadline = 500 * time.Millisecond
	n := startLimited(t, func(c *Config) { c.HandshakeTimeout = deadline })
	var bigFrame [frameHeader]byte
	binary.BigEndian.PutUint32(bigFrame[:4], uint32(8+maxApplyBody))
	stalls := map[string][]byte{
		"nothing":                     nil,
		"R":                           {protoRaft},
		"R and one byte of an RPC":    {protoRaft, 0},
		"C":                           {protoRPC},
		"C and half a request line":   append([]byte{protoRPC}, "GET /internal/v1/in"...),
		"F":                           {protoForward},
		"F and a 16 MiB frame header": append([]byte{protoForward}, bigFrame[:]...),
	}
	conns := map[string]net.Conn{}
	start := time.Now()
	for name, what := range stalls {
		conns[name] = dialFrom(t, "127.0.0.2", n.ClusterAddr(), what)
	}
	for name, c := range conns {
		if !closedWithin(c, deadline+5*time.Second) {
			t.Errorf("%s: still open %v after the handshake deadline", name, time.Since(start)-deadline)
		}
	}
	if took := time.Since(start); took < deadline {
		t.Errorf("closed after %v, before the %v deadline", took, deadline)
	}
}

// Past the per-source cap a source's next connection is closed at once,
// as is anyone's past the cap in all, while those admitted stay open;
// ConnStats counts both refusals.
func TestClusterConnectionCaps(t *testing.T) {
	n := startLimited(t, func(c *Config) { c.MaxConns, c.MaxConnsPerSource = 6, 4 })
	var held []net.Conn
	for range 4 {
		held = append(held, dialFrom(t, "127.0.0.2", n.ClusterAddr(), nil))
	}
	poll.Until(t, 5*time.Second, "4 connections open", func() bool { return n.ConnStats().Open == 4 })
	if !closedWithin(dialFrom(t, "127.0.0.2", n.ClusterAddr(), nil), 3*time.Second) {
		t.Fatal("a fifth connection from one source was not closed at once")
	}
	held = append(held, dialFrom(t, "127.0.0.3", n.ClusterAddr(), nil), dialFrom(t, "127.0.0.3", n.ClusterAddr(), nil))
	poll.Until(t, 5*time.Second, "6 connections open", func() bool { return n.ConnStats().Open == 6 })
	if !closedWithin(dialFrom(t, "127.0.0.4", n.ClusterAddr(), nil), 3*time.Second) {
		t.Fatal("a connection past the cap in all was not closed at once")
	}
	for i, c := range held {
		if closedWithin(c, 50*time.Millisecond) {
			t.Fatalf("admitted connection %d was closed", i)
		}
	}
	if st := n.ConnStats(); st.RefusedPerSource != 1 || st.RefusedTotal != 1 || st.Open != 6 {
		t.Fatalf("ConnStats %+v, want one refusal of each and 6 open", st)
	}
}

// With idle timeouts far shorter than the gaps between writes, a cluster
// keeps working: the leader closes a follower's idle forwarding stream and
// RPC connections, and the follower's next write and read barrier dial
// again. Raft's own connections are left to idle (firstRPCConn).
func TestShortIdleTimeoutsKeepAClusterWorking(t *testing.T) {
	tc := startCluster(t, 3, func(i int, c *Config) {
		c.HandshakeTimeout = time.Second
		c.IdleTimeout = 300 * time.Millisecond
	})
	leader := tc.waitReady(3)
	_, leaderAddr := leader.Leader()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for round := range 3 {
		for _, n := range tc.nodes {
			res, err := n.Propose(ctx, []pool.Op{allocOp(n, n.ID(), fmt.Sprintf("r%d.example", round))})
			if err == nil {
				err = res[0].Err
			}
			if err != nil {
				t.Fatalf("round %d, write through %s: %v", round, n.ID(), err)
			}
			if err := n.ReadBarrier(ctx); err != nil {
				t.Fatalf("round %d, read barrier on %s: %v", round, n.ID(), err)
			}
		}
		for _, n := range tc.nodes {
			if n != leader {
				poll.Until(t, 10*time.Second, n.ID()+"'s idle forwarding stream to close", func() bool { return n.fwd.live(leaderAddr) == nil })
			}
		}
	}
	if id, _ := leader.Leader(); id != leader.ID() {
		t.Fatalf("leadership moved to %s while idle connections were closed", id)
	}
}

package connlimit

import (
	"io"
	"net"
	"testing"
	"time"
)

// dialFrom opens a connection to ln from the loopback address src.
func dialFrom(t *testing.T, ln net.Listener, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reports whether the server closed c: a read ends with EOF
// or a reset rather than timing out.
func closedByServer(c net.Conn, within time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(within))
	_, err := c.Read(make([]byte, 1))
	ne, ok := err.(net.Error)
	return err == io.EOF || (err != nil && !(ok && ne.Timeout()))
}

// Past the per-source cap a source's next connection is closed at once
// while another source still gets in; past the total cap everyone's is;
// closing an admitted connection gives its place back.
func TestCapsInAllAndPerSource(t *testing.T) {
	base, err := net.Listen("tcp", "127.0.0.101:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(base, 3, 2)
	defer l.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	accept := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("no connection accepted")
			return nil
		}
	}

	dialFrom(t, base, "127.0.0.2")
	s1 := accept()
	dialFrom(t, base, "127.0.0.2")
	accept()
	third := dialFrom(t, base, "127.0.0.2")
	if !closedByServer(third, 5*time.Second) {
		t.Fatal("a third connection from one source was not closed")
	}
	dialFrom(t, base, "127.0.0.3")
	accept()
	if st := l.Stats(); st.Open != 3 || st.RefusedPerSource != 1 || st.RefusedTotal != 0 {
		t.Fatalf("stats %+v, want 3 open and one per-source refusal", st)
	}
	fourth := dialFrom(t, base, "127.0.0.4")
	if !closedByServer(fourth, 5*time.Second) {
		t.Fatal("a connection past the total cap was not closed")
	}
	if st := l.Stats(); st.RefusedTotal != 1 {
		t.Fatalf("stats %+v, want one total refusal", st)
	}

	s1.Close()
	s1.Close() // a second close gives nothing back twice
	dialFrom(t, base, "127.0.0.2")
	accept()
	if st := l.Stats(); st.Open != 3 {
		t.Fatalf("after a close and a new connection: %+v, want 3 open", st)
	}
}

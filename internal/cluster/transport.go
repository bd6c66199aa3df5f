package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// One cluster address carries all server-to-server traffic. Every connection
// opens with one byte that says what follows, like Consul's RPC port.
const (
	protoRaft    byte = 'R'
	protoRPC     byte = 'C'
	protoForward byte = 'F'
)

// mux accepts connections on the cluster address, completes TLS when it is
// on, reads the protocol byte and hands the connection to Raft or to the
// cluster's own RPC server.
type mux struct {
	ln     net.Listener
	tls    *tls.Config // nil: plain TCP
	raftCh chan net.Conn
	rpcCh  chan net.Conn
	fwdCh  chan net.Conn
	done   chan struct{}
	once   sync.Once
	log    func(msg string, args ...any)
	// refused counts connections authorize refused.
	refused atomic.Uint64
	// localAddr is the IP outgoing connections bind to; nil lets the
	// kernel choose.
	localAddr *net.TCPAddr
	// handshakeTimeout is Config.HandshakeTimeout.
	handshakeTimeout time.Duration
	// dialer and authorize are Config.Network's; nil: TCP, and no check
	// beyond TLS.
	dialer    func(ctx context.Context, addr string) (net.Conn, error)
	authorize func(net.Conn) error
}

func newMux(ln net.Listener, tlsConf *tls.Config, handshakeTimeout time.Duration, log func(string, ...any)) *mux {
	return &mux{ln: ln, tls: tlsConf, raftCh: make(chan net.Conn), rpcCh: make(chan net.Conn), fwdCh: make(chan net.Conn), done: make(chan struct{}), log: log,
		handshakeTimeout: handshakeTimeout}
}

func (m *mux) serve() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			m.log("cluster listener stopped", "err", err)
			return
		}
		go m.handshake(c)
	}
}

// handshake runs per connection so a slow or hostile peer holds up nobody.
// Every phase has a deadline: the TLS handshake and the protocol byte
// here, then each protocol's own (firstRPCConn for Raft, the RPC server's
// header and idle timeouts, serveForward's per frame).
func (m *mux) handshake(c net.Conn) {
	c.SetDeadline(time.Now().Add(m.handshakeTimeout))
	if m.authorize != nil {
		if err := m.authorize(c); err != nil {
			m.refused.Add(1)
			m.log("refused a cluster connection", "remote", c.RemoteAddr(), "err", err)
			c.Close()
			return
		}
	}
	if m.tls != nil {
		tc := tls.Server(c, m.tls)
		if err := tc.Handshake(); err != nil {
			m.log("refused a cluster connection", "remote", c.RemoteAddr(), "err", err)
			c.Close()
			return
		}
		c = tc
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	var ch chan net.Conn
	switch b[0] {
	case protoRaft:
		ch = m.raftCh
		c = &firstRPCConn{Conn: c, timeout: m.handshakeTimeout}
	case protoRPC:
		ch = m.rpcCh
	case protoForward:
		ch = m.fwdCh
	default:
		m.log("refused a cluster connection with an unknown protocol byte", "remote", c.RemoteAddr(), "byte", b[0])
		c.Close()
		return
	}
	select {
	case ch <- c:
	case <-m.done:
		c.Close()
	}
}

// firstRPCConn bounds each read of a Raft connection by timeout until this
// server has answered an RPC on it, then lets it idle. Raft's handler waits
// for RPCs with no deadline of its own, and it must: a peer keeps
// connections in a pool and may reuse one after hours, and closing them
// would fail its next vote or append. But a peer dials only to send an RPC
// at once, so a connection that sends the protocol byte and then nothing,
// or stalls inside its first RPC, is not a peer's and is closed.
type firstRPCConn struct {
	net.Conn
	timeout  time.Duration
	answered atomic.Bool
}

func (c *firstRPCConn) Read(p []byte) (int, error) {
	if !c.answered.Load() {
		c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	}
	return c.Conn.Read(p)
}

func (c *firstRPCConn) Write(p []byte) (int, error) {
	if c.answered.CompareAndSwap(false, true) {
		c.Conn.SetReadDeadline(time.Time{})
	}
	return c.Conn.Write(p)
}

func (m *mux) close() {
	m.once.Do(func() {
		close(m.done)
		m.ln.Close()
	})
}

// dial opens a connection to a cluster address for the given protocol.
func (m *mux) dial(addr string, proto byte, timeout time.Duration) (net.Conn, error) {
	// Dial from the cluster address's own IP, so a peer (and a firewall
	// rule, or a test partitioning 127.0.0.x addresses) sees traffic come
	// from the address this server is known by.
	var c net.Conn
	var err error
	if m.dialer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		c, err = m.dialer(ctx, addr)
		cancel()
	} else {
		d := net.Dialer{Timeout: timeout, LocalAddr: m.localAddr}
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	if m.tls != nil {
		tc := tls.Client(c, m.tls)
		tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		tc.SetDeadline(time.Time{})
		c = tc
	}
	if _, err := c.Write([]byte{proto}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// chanListener is a net.Listener fed by the mux.
type chanListener struct {
	m      *mux
	ch     chan net.Conn
	addr   net.Addr
	closed chan struct{}
	once   sync.Once
}

func newChanListener(m *mux, ch chan net.Conn, addr net.Addr) *chanListener {
	return &chanListener{m: m, ch: ch, addr: addr, closed: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.m.done:
		return nil, net.ErrClosed
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}
func (l *chanListener) Addr() net.Addr { return l.addr }

// raftLayer is the raft.StreamLayer over the mux.
type raftLayer struct {
	*chanListener
	advertise net.Addr
}

func (l *raftLayer) Addr() net.Addr { return l.advertise }

func (l *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return l.m.dial(string(address), protoRaft, timeout)
}

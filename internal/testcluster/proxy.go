package testcluster

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// DelayProxy forwards TCP connections to a target, holding back every chunk
// of data by a delay plus random jitter (order is kept). With Net.Redirect it
// puts latency on the traffic from one server to another, which tc netem
// would do if the kernel had it.
type DelayProxy struct {
	ln     net.Listener
	target string
	delay  atomic.Int64
	jitter atomic.Int64
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// NewDelayProxy listens on 127.0.0.1 and forwards to target; it stops when
// the test ends.
func NewDelayProxy(t testing.TB, target string, delay, jitter time.Duration) *DelayProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &DelayProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.SetDelay(delay, jitter)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's listening address.
func (p *DelayProxy) Addr() string { return p.ln.Addr().String() }

// SetDelay changes the delay of data sent from now on.
func (p *DelayProxy) SetDelay(delay, jitter time.Duration) {
	p.delay.Store(int64(delay))
	p.jitter.Store(int64(jitter))
}

func (p *DelayProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *DelayProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Timeout: 5 * time.Second}
		out, err := d.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		if !p.track(in) || !p.track(out) {
			in.Close()
			out.Close()
			return
		}
		p.wg.Add(2)
		go p.pump(in, out)
		go p.pump(out, in)
	}
}

type chunk struct {
	at   time.Time
	data []byte
}

// pump copies src to dst, each chunk no earlier than its arrival plus the
// delay, and never before the chunk ahead of it.
func (p *DelayProxy) pump(src, dst net.Conn) {
	defer p.wg.Done()
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				d := time.Duration(p.delay.Load())
				if j := p.jitter.Load(); j > 0 {
					d += time.Duration(rand.Int64N(j))
				}
				q <- chunk{time.Now().Add(d), append([]byte(nil), buf[:n]...)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.data); err != nil {
			break
		}
	}
	// Close both ends so the other pump ends too.
	src.Close()
	dst.Close()
	for range q {
	}
}

// Close stops the proxy and its connections.
func (p *DelayProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

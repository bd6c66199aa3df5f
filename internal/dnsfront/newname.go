package dnsfront

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/pool"
)

// newNames answers, for the UDP read loops, the A and AAAA queries that
// fastAnswer could not: mostly the first query for a name, which costs an
// upstream lookup and a write through the log. The loop hands such a query
// to a worker and reads on; the worker runs allocate, the same decision
// ServeDNS makes, and writes a pool address by hand (packAddress), as
// fastAnswer does. Any other outcome, and any query the worker does not
// take, goes through the DNS library as before.
//
// Workers live on between queries, so their stacks are grown once rather
// than through every query's call, and a new name skips the library's parse
// and pack of the query and reply and the hop through slowConn's queue.
type newNames struct {
	s    *Server
	slow *slowConn

	jobs    chan newNameJob // unbuffered: a send succeeds only to an idle worker
	running atomic.Int32
	wg      sync.WaitGroup
	bufs    sync.Pool
}

type newNameJob struct {
	buf  *[]byte // the query
	src  netip.AddrPort
	conn *net.UDPConn // the socket it came in on, to answer from
}

const (
	// maxNewNameWorkers bounds the queries in this path at once; past it
	// the library's path takes them, with its own bound (slowQueue).
	maxNewNameWorkers = 512
	// newNameIdle is how long a worker waits for a query before it ends.
	newNameIdle = 10 * time.Second
	// maxNewNameQuery: a query parseQuery takes (a name of at most 253
	// bytes, a cookie) fits; only long padding makes one longer, and that
	// one goes to the library.
	maxNewNameQuery = 512
)

func newNewNames(s *Server, slow *slowConn) *newNames {
	return &newNames{s: s, slow: slow, jobs: make(chan newNameJob),
		bufs: sync.Pool{New: func() any { b := make([]byte, 0, maxNewNameQuery); return &b }}}
}

// take hands the query b from src to a worker, starting one when none is
// idle and there is room; false leaves the query to the caller.
func (n *newNames) take(b []byte, src netip.AddrPort, conn *net.UDPConn) bool {
	if len(b) > maxNewNameQuery {
		return false
	}
	bp := n.bufs.Get().(*[]byte)
	*bp = append((*bp)[:0], b...)
	j := newNameJob{buf: bp, src: src, conn: conn}
	select {
	case n.jobs <- j:
		return true
	default:
	}
	if n.running.Add(1) > maxNewNameWorkers {
		n.running.Add(-1)
		n.bufs.Put(bp)
		return false
	}
	n.wg.Add(1)
	go n.work(j)
	return true
}

func (n *newNames) work(j newNameJob) {
	defer n.wg.Done()
	defer n.running.Add(-1)
	idle := time.NewTimer(newNameIdle)
	defer idle.Stop()
	name := make([]byte, 0, 256)
	out := make([]byte, 0, maxReply)
	for {
		name, out = n.answer(j, name, out)
		idle.Reset(newNameIdle)
		select {
		case j = <-n.jobs:
		case <-idle.C:
			return
		case <-n.s.ctx.Done():
			return
		}
	}
}

// answer answers one query and returns its scratch buffers for the next.
func (n *newNames) answer(j newNameJob, name, out []byte) ([]byte, []byte) {
	s := n.s
	b := *j.buf
	defer n.bufs.Put(j.buf)
	q, name, ok := parseQuery(b, name)
	src := j.src.Addr()
	if !ok || !s.allowedAddr(src) {
		n.toLibrary(b, j.src)
		return name, out
	}
	norm, err := pool.NormalizeDomain(string(name))
	if err != nil {
		n.toLibrary(b, j.src)
		return name, out
	}
	apex, ok := s.match(norm)
	client, known := s.clientsBySrc.get(s, src)
	if !ok || !known {
		n.toLibrary(b, j.src)
		return name, out
	}
	s.stats.queries.Add(1)
	a := s.allocate(client, src, norm, q.qtype)
	if a.kind == allocOK && (a.addr.Is4() || a.addr.Is4In6()) {
		out = s.packAddress(out, b, q, a.addr)
		s.stats.answered.Add(1)
		if _, err := j.conn.WriteToUDPAddrPort(out, j.src); err != nil {
			s.log.Debug("writing reply failed", "remote", j.src, "err", err)
		}
		return name, out
	}
	// Rare outcomes (NXDOMAIN, passthrough, a refusal, a failure): the
	// library builds and writes the reply from what allocate decided, as
	// ServeDNS would.
	r := new(dns.Msg)
	if err := r.Unpack(b); err != nil || len(r.Question) != 1 {
		return name, out // parseQuery took it, so the library can read it
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	rep := s.addressReply(reply{msg: m}, r.Question[0], apex, a)
	s.write(udpReplyWriter{conn: j.conn, to: j.src}, r, rep)
	return name, out
}

func (n *newNames) toLibrary(b []byte, src netip.AddrPort) {
	if !n.slow.push(b, src, 0) {
		n.s.stats.dropped.Add(1)
	}
}

// wait waits for the workers, which end once the server's context is done.
func (n *newNames) wait() { n.wg.Wait() }

// udpReplyWriter is the dns.ResponseWriter write needs to send one reply.
type udpReplyWriter struct {
	conn *net.UDPConn
	to   netip.AddrPort
}

func (w udpReplyWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func (w udpReplyWriter) Write(b []byte) (int, error) { return w.conn.WriteToUDPAddrPort(b, w.to) }
func (w udpReplyWriter) LocalAddr() net.Addr         { return w.conn.LocalAddr() }
func (w udpReplyWriter) RemoteAddr() net.Addr        { return net.UDPAddrFromAddrPort(w.to) }
func (w udpReplyWriter) Close() error                { return nil }
func (w udpReplyWriter) TsigStatus() error           { return nil }
func (w udpReplyWriter) TsigTimersOnly(bool)         {}
func (w udpReplyWriter) Hijack()                     {}

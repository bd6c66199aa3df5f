// Package testdns is a fake upstream resolver for tests: a real DNS server
// on loopback, UDP and TCP on one port, answering from a zone the test
// gives and counting the questions it gets, so that a test sees caching,
// coalescing and what reached the upstream.
package testdns

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Zone fills m, the reply to q; name is q's name in lower case, and udp
// says whether the query came over UDP (a zone may answer truncated there).
type Zone func(name string, q dns.Question, m *dns.Msg, udp bool)

// Upstream answers from its Zone. It is a dns.Handler, so that a test can
// serve it over other transports too.
type Upstream struct {
	Addr string // UDP and TCP, once started
	zone Zone

	mu       sync.Mutex
	hits     map[string]int // "name/type" -> count
	udp, tcp *dns.Server
}

// New is an upstream that is not listening: a handler for a test's own
// server.
func New(zone Zone) *Upstream { return &Upstream{zone: zone, hits: make(map[string]int)} }

// Start runs an upstream on 127.0.0.1 until the test ends.
func Start(tb testing.TB, zone Zone) *Upstream {
	tb.Helper()
	u := New(zone)
	pc, ln := ListenBoth(tb)
	u.Addr = pc.LocalAddr().String()
	u.udp = &dns.Server{PacketConn: pc, Handler: u}
	u.tcp = &dns.Server{Listener: ln, Handler: u}
	for _, srv := range []*dns.Server{u.udp, u.tcp} {
		up := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(up) }
		go func() { _ = srv.ActivateAndServe() }()
		<-up
	}
	tb.Cleanup(u.Stop)
	return u
}

// ListenBoth finds a loopback port free for both UDP and TCP, for a
// test's own fake upstream.
func ListenBoth(tb testing.TB) (net.PacketConn, net.Listener) {
	for range 16 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
	}
	tb.Fatal("no port free for both UDP and TCP")
	return nil, nil
}

// Count is how often name (any case) was asked with qtype.
func (u *Upstream) Count(name string, qtype uint16) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits[strings.ToLower(name)+"/"+dns.TypeToString[qtype]]
}

// Total is how many questions it was asked.
func (u *Upstream) Total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.hits {
		n += c
	}
	return n
}

// Stop shuts it down, early for tests of an upstream that fails.
func (u *Upstream) Stop() {
	if u.udp != nil {
		_ = u.udp.ShutdownContext(context.Background())
		_ = u.tcp.ShutdownContext(context.Background())
	}
}

// ServeDNS answers from the zone; over UDP the reply is cut to the size
// the query's OPT record allows (512 bytes without one), as a resolver's is.
func (u *Upstream) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	u.mu.Lock()
	u.hits[name+"/"+dns.TypeToString[q.Qtype]]++
	u.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(r)
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	u.zone(name, q, m, udp)
	if udp {
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
			m.SetEdns0(opt.UDPSize(), false)
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

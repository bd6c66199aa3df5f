package resolver

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/testcerts"
	"github.com/ippool/ippool/internal/testdns"
)

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startDoT runs the fake upstream's zone over TLS on loopback with a
// certificate from a test CA, and returns its address, the CA's file and
// the accepted connections' counter.
func startDoT(t *testing.T) (string, string, *atomic.Int64) {
	t.Helper()
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "ca")
	pair := ca.Server(t, dir, "dot", "127.0.0.1")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	u := testdns.New(zone)
	srv := &dns.Server{Listener: cl, Net: "tcp-tls", Handler: u}
	up := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(up) }
	go srv.ActivateAndServe()
	<-up
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String(), ca.CertFile, &cl.n
}

// TestDNSOverTLS: lookups over TLS, the server's name checked against its
// certificate, one connection for queries in a row.
func TestDNSOverTLS(t *testing.T) {
	addr, caFile, conns := startDoT(t)
	r, err := New(Config{Upstreams: []string{"tls://" + addr + "@localhost"}, UpstreamCA: caFile})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.ownNetwork = notOwn
	for i := range 3 {
		addrs, _, err := r.LookupA(fmt.Sprintf("n%d.example.test", i))
		if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.10") {
			t.Fatalf("%d: %v %v", i, addrs, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for three queries in a row, want 1", n)
	}

	wrong, err := New(Config{Upstreams: []string{"tls://" + addr + "@other.example"}, UpstreamCA: caFile, UpstreamTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if _, _, err := wrong.LookupA("a.example.test"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a server without the name's certificate was believed: %v", err)
	}
	untrusted, err := New(Config{Upstreams: []string{"tls://" + addr + "@localhost"}, UpstreamTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer untrusted.Close()
	if _, _, err := untrusted.LookupA("a.example.test"); err == nil {
		t.Fatal("a certificate of an untrusted CA was believed")
	}
}

// TestDNSOverHTTPS: lookups posted to a URL (RFC 8484) over kept-alive
// connections.
func TestDNSOverHTTPS(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "ca")
	pair := ca.Server(t, dir, "doh", "127.0.0.1")
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/dns-message" {
			http.Error(w, "want a POST of application/dns-message", http.StatusBadRequest)
			return
		}
		b, _ := io.ReadAll(req.Body)
		q := new(dns.Msg)
		if q.Unpack(b) != nil || len(q.Question) != 1 {
			http.Error(w, "bad message", http.StatusBadRequest)
			return
		}
		m := new(dns.Msg)
		m.SetReply(q)
		rr, _ := dns.NewRR(q.Question[0].Name + " 300 IN A 203.0.113.53")
		m.Answer = []dns.RR{rr}
		p, _ := m.Pack()
		w.Header().Set("Content-Type", "application/dns-message")
		w.Write(p)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair.TLS}}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()

	r, err := New(Config{Upstreams: []string{srv.URL + "/dns-query"}, UpstreamCA: ca.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.ownNetwork = notOwn
	for i := range 3 {
		addrs, _, err := r.LookupA(fmt.Sprintf("n%d.example.test", i))
		if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("203.0.113.53") {
			t.Fatalf("%d: %v %v", i, addrs, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for three queries in a row, want 1", n)
	}
}

// TestParseUpstream: the forms an upstream is written in.
func TestParseUpstream(t *testing.T) {
	for _, c := range []struct {
		in, addr, name string
		kind           int
	}{
		{"192.0.2.1", "192.0.2.1:53", "", kindPlain},
		{"[2001:db8::1]:5353", "[2001:db8::1]:5353", "", kindPlain},
		{"tls://1.1.1.1@one.one.one.one", "1.1.1.1:853", "one.one.one.one", kindTLS},
		{"tls://dns.example:8853", "dns.example:8853", "dns.example", kindTLS},
		{"https://dns.example/dns-query", "https://dns.example/dns-query", "", kindHTTPS},
	} {
		u, err := parseUpstream(c.in, nil)
		if err != nil || u.addr != c.addr || u.kind != c.kind || c.kind == kindTLS && u.tls.ServerName != c.name {
			t.Errorf("%s: %+v %v", c.in, u, err)
		}
	}
	for _, bad := range []string{"dns.example", "tls://", "https://", "1.2.3.4:"} {
		if _, err := parseUpstream(bad, nil); err == nil {
			t.Errorf("%q was taken", bad)
		}
	}
}

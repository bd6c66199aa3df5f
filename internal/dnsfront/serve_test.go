package dnsfront

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/clientid"
	"github.com/ippool/ippool/localpool"
	"github.com/ippool/ippool/pool"
)

// namerFunc names clients by a function, as a tailnet names the node behind
// an address.
type namerFunc func(net.Addr) (string, error)

func (f namerFunc) OfRemote(a net.Addr) (string, error) { return f(a) }

// TestServeOnGivenSocketsWithAnotherNamer serves on sockets the caller
// opened, with clients named by Config.Clients: both transports answer,
// the named client holds the mapping (not the source address), a source the
// namer refuses is REFUSED, and Shutdown closes the sockets.
func TestServeOnGivenSocketsWithAnotherNamer(t *testing.T) {
	pc, err := pool.ParseConfig("100.64.0.0/24", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lp, err := localpool.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t)
	names := namerFunc(func(a net.Addr) (string, error) {
		ip, _ := clientid.Source(a)
		switch ip {
		case netip.MustParseAddr("127.0.0.1"):
			return "nodeA", nil
		case netip.MustParseAddr("127.0.0.2"):
			return "nodeB", nil
		}
		return "", errors.New("not a node of the tailnet")
	})
	s, err := New(Config{Domains: []string{"example.test"}, Upstreams: []string{up.Addr}, AllowPrivate: docRanges, Clients: names,
		V6Prefix: netip.MustParsePrefix("fd7a:115c:a1e0::/96")}, lp)
	if err != nil {
		t.Fatal(err)
	}
	if s.fastLoopsFit() {
		t.Fatal("the fast path, which names clients by address, would run beside another namer")
	}
	// listenBoth retries when the TCP port of the UDP socket's is taken,
	// as it can be by another package's test running beside this one.
	udp, tcp, err := listenBoth("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(udp, tcp); err != nil {
		t.Fatal(err)
	}
	e := &env{srv: s, pool: lp, up: up, addr: udp.LocalAddr().String()}
	a := answerA(t, e.query(t, "m.example.test.", dns.TypeA, qopts{}))
	if m, ok := lp.Get("nodeA", "m.example.test"); !ok || m.Addr != a {
		t.Fatalf("nodeA's mapping: %v %v, answered %v", m, ok, a)
	}
	if _, ok := lp.Get("127.0.0.1", "m.example.test"); ok {
		t.Fatal("the source address was named instead of the node")
	}
	b := answerA(t, e.query(t, "m.example.test.", dns.TypeA, qopts{network: "tcp", src: "127.0.0.2"}))
	if m, ok := lp.Get("nodeB", "m.example.test"); !ok || m.Addr != b {
		t.Fatalf("nodeB's mapping over TCP: %v %v, answered %v", m, ok, b)
	}
	v6 := answerA(t, e.query(t, "m.example.test.", dns.TypeAAAA, qopts{}))
	b16, a4 := v6.As16(), a.As4()
	if netip.PrefixFrom(v6, 96).Masked() != netip.MustParsePrefix("fd7a:115c:a1e0::/96") || [4]byte(b16[12:]) != a4 {
		t.Fatalf("AAAA %v does not carry %v in the v6 prefix", v6, a)
	}
	if r := e.query(t, "m.example.test.", dns.TypeA, qopts{src: "127.0.0.3"}); r.Rcode != dns.RcodeRefused {
		t.Fatalf("a source the namer refuses: %v", dns.RcodeToString[r.Rcode])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tcp.Accept(); err == nil {
		t.Fatal("Shutdown left the given listener open")
	}
}

func TestClientMapAndNamerExcludeEachOther(t *testing.T) {
	lp, _ := localpool.New(pool.Config{})
	_, err := New(Config{Domains: []string{"."}, Upstreams: []string{"127.0.0.1:53"}, ClientMap: "x",
		Clients: namerFunc(func(net.Addr) (string, error) { return "", nil })}, lp)
	if err == nil {
		t.Fatal("New took both a client map and a namer")
	}
}

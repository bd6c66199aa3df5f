package testcluster

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/poll"
)

// StartUpstream runs a DNS server on 127.0.0.1 (UDP) that answers every
// query with handler, for servers started with --dns-upstream: their DNS
// front end resolves every name upstream before it gives it an address. It
// returns the address and stops the server when the test ends.
func StartUpstream(t testing.TB, handler dns.Handler) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: handler}
	up := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(up) }
	go srv.ActivateAndServe()
	<-up
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// FreeDNSAddr finds a port on ip free for both UDP and TCP, for --dns-addr.
func FreeDNSAddr(t testing.TB, ip string) string {
	t.Helper()
	for range 32 {
		pc, err := net.ListenPacket("udp", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		ln, err := net.Listen("tcp", addr)
		pc.Close()
		if err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatalf("no port on %s free for both UDP and TCP", ip)
	return ""
}

// WaitDNS waits until a DNS server answers at addr over UDP and TCP (any
// answer: the question is the SOA of example.test., which needs no
// upstream).
func WaitDNS(t testing.TB, addr string, within time.Duration) {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion("example.test.", dns.TypeSOA)
	deadline := time.Now().Add(within)
	for _, network := range []string{"udp", "tcp"} {
		cl := &dns.Client{Net: network, Timeout: time.Second}
		var err error
		if !poll.Wait(time.Until(deadline), func() bool {
			_, _, err = cl.Exchange(q, addr)
			return err == nil
		}) {
			t.Fatalf("DNS at %s (%s) not answering after %v: %v", addr, network, within, err)
		}
	}
}

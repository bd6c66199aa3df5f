// Command demo-upstream is the upstream resolver of examples/dns-demo.sh, so
// the demo needs no network: ippool's DNS front end resolves every name
// upstream before it gives it a pool address, and keeps NXDOMAIN for names
// that do not exist. It answers A and AAAA for a few documentation names
// (RFC 5737 and RFC 3849 addresses), 203.0.113.1 for any name under
// bench.test (for examples/bench-reads.sh) and NXDOMAIN for everything else.
//
//	go run ./examples/demo-upstream 127.0.0.1:5354
package main

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/miekg/dns"
)

var zone = map[string][2]string{ // name: A, AAAA
	"example.com.":     {"203.0.113.10", "2001:db8::10"},
	"www.example.com.": {"203.0.113.11", "2001:db8::11"},
	"www.example.org.": {"198.51.100.20", "2001:db8::20"},
	"example.org.":     {"198.51.100.21", "2001:db8::21"},
	"example.net.":     {"203.0.113.30", "2001:db8::30"},
}

func answer(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	addrs, ok := zone[strings.ToLower(q.Name)]
	if strings.HasSuffix(strings.ToLower(q.Name), ".bench.test.") {
		addrs, ok = [2]string{"203.0.113.1", "2001:db8::1"}, true
	}
	if !ok {
		m.Rcode = dns.RcodeNameError
		w.WriteMsg(m)
		return
	}
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 300}
	switch q.Qtype {
	case dns.TypeA:
		hdr.Rrtype = dns.TypeA
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.ParseIP(addrs[0])})
	case dns.TypeAAAA:
		hdr.Rrtype = dns.TypeAAAA
		m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.ParseIP(addrs[1])})
	}
	w.WriteMsg(m)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: demo-upstream HOST:PORT")
		os.Exit(2)
	}
	srv := &dns.Server{Addr: os.Args[1], Net: "udp", Handler: dns.HandlerFunc(answer)}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "demo-upstream:", err)
		os.Exit(1)
	}
}

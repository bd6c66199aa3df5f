// Command connector-upstream is the far side of examples/connector-demo.sh:
// the "internet" the connector carries flows to, offline. It answers DNS A
// questions for the names it is given and serves HTTP saying which name and
// address a request reached and where it came from, so the demo shows that a
// request to a pool address arrived at the domain's real address, from the
// connector's address.
//
//	connector-upstream -dns 10.250.2.2:53 -http 10.250.2.2:80 app.demo=10.250.2.2 api.demo=10.250.2.2
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/miekg/dns"
)

func main() {
	dnsAddr := flag.String("dns", "", "UDP address of the DNS server")
	httpAddr := flag.String("http", "", "address of the HTTP server")
	flag.Parse()
	zone := map[string]string{}
	for _, arg := range flag.Args() {
		name, addr, ok := strings.Cut(arg, "=")
		if !ok || net.ParseIP(addr) == nil {
			fmt.Fprintf(os.Stderr, "connector-upstream: %q is not NAME=ADDRESS\n", arg)
			os.Exit(2)
		}
		zone[dns.Fqdn(strings.ToLower(name))] = addr
	}
	if *dnsAddr == "" || *httpAddr == "" {
		fmt.Fprintln(os.Stderr, "usage: connector-upstream -dns ADDR:53 -http ADDR:80 NAME=ADDRESS...")
		os.Exit(2)
	}
	srv := &dns.Server{Addr: *dnsAddr, Net: "udp", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if len(r.Question) != 1 {
			m.Rcode = dns.RcodeFormatError
			w.WriteMsg(m)
			return
		}
		q := r.Question[0]
		addr, ok := zone[strings.ToLower(q.Name)]
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(addr)})
		}
		w.WriteMsg(m)
	})}
	go func() {
		if err := srv.ListenAndServe(); err != nil {
			fmt.Fprintln(os.Stderr, "connector-upstream: DNS:", err)
			os.Exit(1)
		}
	}()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		local := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		fmt.Fprintf(w, "hello from %s at %s; you came from %s\n", r.Host, local, r.RemoteAddr)
	})
	if err := http.ListenAndServe(*httpAddr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "connector-upstream: HTTP:", err)
		os.Exit(1)
	}
}

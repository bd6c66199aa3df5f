package dnsfront

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ippool/ippool/internal/connlimit"
)

// RegisterMetrics exports the DNS server's counters, read at scrape time.
func (dns *Server) RegisterMetrics(reg prometheus.Registerer) {
	counter := func(name, help string, f func(Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f(dns.Stats())) }))
	}
	counter("ippool_dns_queries_total", "DNS queries received.", func(s Stats) uint64 { return s.Queries })
	counter("ippool_dns_answered_total", "DNS replies with NOERROR or NXDOMAIN.", func(s Stats) uint64 { return s.Answered })
	counter("ippool_dns_refused_total", "DNS replies with REFUSED.", func(s Stats) uint64 { return s.Refused })
	counter("ippool_dns_servfail_total", "DNS replies with SERVFAIL.", func(s Stats) uint64 { return s.ServFail })
	counter("ippool_dns_policy_denied_total", "DNS A and AAAA queries for a name the policy denies the client (answered NXDOMAIN or REFUSED, --policy-deny-rcode).", func(s Stats) uint64 { return s.PolicyDenied })
	counter("ippool_dns_rate_limited_total", "DNS allocations refused by the per-client rate limit.", func(s Stats) uint64 { return s.RateLimited })
	counter("ippool_dns_upstream_errors_total", "Upstream lookups no upstream answered.", func(s Stats) uint64 { return s.UpstreamErrors })
	counter("ippool_dns_cache_hits_total", "Upstream lookups answered from the cache.", func(s Stats) uint64 { return s.CacheHits })
	counter("ippool_dns_upstream_lookups_total", "Upstream lookups sent upstream (cache misses).", func(s Stats) uint64 { return s.CacheMisses })
	counter("ippool_dns_not_allowed_total", "DNS queries refused because --dns-allow does not admit their source.", func(s Stats) uint64 { return s.NotAllowed })
	counter("ippool_dns_new_clients_limited_total", "DNS queries of new clients refused by --dns-new-clients-rate.", func(s Stats) uint64 { return s.NewClientLimited })
	counter("ippool_dns_dropped_total", "DNS queries dropped unanswered: a compressed or truncated question, or a UDP query that found the queue to the full path (past the fast path) full.", func(s Stats) uint64 { return s.Dropped })
	for reason, f := range map[string]func(Stats) uint64{
		connlimit.ReasonTotal:     func(s Stats) uint64 { return s.TCPRefusedTotal },
		connlimit.ReasonPerSource: func(s Stats) uint64 { return s.TCPRefusedPerSource },
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "ippool_dns_tcp_refused_total", ConstLabels: prometheus.Labels{"reason": reason},
			Help: "DNS-over-TCP connections closed at accept, by the cap they were past: total (--dns-tcp-max-conns) or per_source (--dns-tcp-max-conns-per-source).",
		}, func() float64 { return float64(f(dns.Stats())) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ippool_dns_tcp_connections", Help: "DNS-over-TCP connections open."}, func() float64 { return float64(dns.Stats().TCPConns) }))
}

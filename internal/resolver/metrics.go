package resolver

import "github.com/prometheus/client_golang/prometheus"

// RegisterMetrics exports the counters of the resolver's defences. Its
// cache hits, misses and errors are the DNS front end's to export, which
// has always counted them as its own.
func (r *Resolver) RegisterMetrics(reg prometheus.Registerer) {
	counter := func(name, help string, f func(Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f(r.Stats())) }))
	}
	counter("ippool_dns_upstream_unwanted_replies_total", "Upstream UDP replies that were not the awaited one (short, wrong ID, or a question other than asked, case included): a steady rise means someone is forging replies.", func(s Stats) uint64 { return s.UnwantedReplies })
	counter("ippool_dns_cache_cleared_total", "Times the upstream cache was cleared because unwanted replies passed --dns-unwanted-reply-threshold.", func(s Stats) uint64 { return s.CacheCleared })
	counter("ippool_dns_private_answers_dropped_total", "Private addresses dropped from upstream answers for names outside --dns-private-domains.", func(s Stats) uint64 { return s.PrivateDropped })
}

package connlimit

import "github.com/prometheus/client_golang/prometheus"

// RegisterMetrics exports a port's connection caps at work: the
// connections open and those closed at accept, by the cap that refused
// them.
func RegisterMetrics(reg prometheus.Registerer, port string, stats func() Stats) {
	refused := func(reason string, f func(Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "ippool_connections_refused_total",
			Help:        "Connections closed at accept because a cap was reached, by port (http, cluster) and cap (total, per_source).",
			ConstLabels: prometheus.Labels{"port": port, "reason": reason},
		}, func() float64 { return float64(f(stats())) })
	}
	reg.MustRegister(
		refused(ReasonTotal, func(s Stats) uint64 { return s.RefusedTotal }),
		refused(ReasonPerSource, func(s Stats) uint64 { return s.RefusedPerSource }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ippool_connections_open", Help: "Connections open, by port (http, cluster).", ConstLabels: prometheus.Labels{"port": port},
		}, func() float64 { return float64(stats().Open) }))
}

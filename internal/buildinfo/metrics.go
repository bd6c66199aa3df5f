package buildinfo

import "github.com/prometheus/client_golang/prometheus"

// RegisterMetrics exports ippool_build_info, always 1, labelled with what
// this binary is, as Prometheus' own build_info gauges are: a dashboard
// joins it to see which servers an upgrade has reached.
func RegisterMetrics(reg prometheus.Registerer) {
	v := Get()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ippool_build_info",
		Help: "1, labelled with this server's release version, commit, Go version and the log entry versions it reads.",
		ConstLabels: prometheus.Labels{
			"version": v.Version, "commit": v.Commit, "goversion": v.Go, "entry_versions": v.Reads(),
		},
	}, func() float64 { return 1 }))
}

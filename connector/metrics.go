package connector

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the connector's Prometheus collectors. A nil *Metrics counts
// nothing.
type Metrics struct {
	flows  *prometheus.CounterVec
	active *prometheus.GaugeVec
	bytes  *prometheus.CounterVec
	dial   prometheus.Histogram
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ippool_connector_flows_total",
			Help: "Flows to pool addresses by protocol and result: relayed, no_mapping, lookup_failed, resolve_failed, refused (the domain resolves to a forbidden address), dial_failed, limited.",
		}, []string{"proto", "result"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ippool_connector_active_flows", Help: "Flows open now, by protocol.",
		}, []string{"proto"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ippool_connector_bytes_total",
			Help: "Bytes relayed by protocol and direction (upstream: client to domain; downstream: back). A TCP flow's bytes are counted when it ends.",
		}, []string{"proto", "direction"}),
		dial: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ippool_connector_dial_seconds",
			Help:    "Time to connect to the domain's address (TCP) or open the socket to it (UDP), failed tries included.",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5},
		}),
	}
	for _, p := range []string{"tcp", "udp"} {
		for _, r := range []Result{Relayed, NoMapping, LookupFailed, ResolveFailed, Refused, DialFailed, Limited} {
			m.flows.WithLabelValues(p, string(r))
		}
		m.active.WithLabelValues(p)
		m.bytes.WithLabelValues(p, "upstream")
		m.bytes.WithLabelValues(p, "downstream")
	}
	reg.MustRegister(m.flows, m.active, m.bytes, m.dial)
	return m
}

func (m *Metrics) flow(proto string, r Result) {
	if m != nil {
		m.flows.WithLabelValues(proto, string(r)).Inc()
	}
}

func (m *Metrics) open(proto string, delta float64) {
	if m != nil {
		m.active.WithLabelValues(proto).Add(delta)
	}
}

func (m *Metrics) relayed(proto string, up, down int64) {
	if m != nil {
		m.bytes.WithLabelValues(proto, "upstream").Add(float64(up))
		m.bytes.WithLabelValues(proto, "downstream").Add(float64(down))
	}
}

func (m *Metrics) dialed(d time.Duration) {
	if m != nil {
		m.dial.Observe(d.Seconds())
	}
}

package connector

import (
	"sync/atomic"
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
	// timeouts counts flows ended by a timeout, by which.
	timeouts *prometheus.CounterVec
	// reclaims counts flows ended to give their place to another client.
	reclaims prometheus.Counter
	clients  *clientCollector
	// conn is the connector whose missing egress addresses are counted.
	conn atomic.Pointer[Connector]
	// The series a flow touches, looked up once rather than hashed per flow.
	byFlow   map[string]map[Result]prometheus.Counter
	byActive map[string]prometheus.Gauge
	byBytes  map[string][2]prometheus.Counter
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
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ippool_connector_timeouts_total",
			Help: "TCP flows ended by a timeout: idle (no byte either way for --connector-idle-timeout), half_close (one side finished, then no byte either way for --connector-half-close-timeout).",
		}, []string{"kind"}),
	}
	m.reclaims = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ippool_connector_reclaimed_flows_total",
		Help: "Flows ended to give their place to a client under its fair share while all of --connector-max-flows were taken: the quietest of the client furthest over its share.",
	})
	m.clients = &clientCollector{
		active: prometheus.NewDesc("ippool_connector_clients", "Clients holding one flow or more.", nil, nil),
		busiest: prometheus.NewDesc("ippool_connector_busiest_client_flows",
			"Flows held by the client holding the most, against --connector-client-flows and the fair share past half of --connector-max-flows.", nil, nil),
		perClient: prometheus.NewDesc("ippool_connector_client_flows",
			"Flows per client, over the clients holding one or more, as of the scrape (a distribution, so that no client is a label).", nil, nil),
	}
	m.timeouts.WithLabelValues("idle")
	m.timeouts.WithLabelValues("half_close")
	m.byFlow = make(map[string]map[Result]prometheus.Counter)
	m.byActive = make(map[string]prometheus.Gauge)
	m.byBytes = make(map[string][2]prometheus.Counter)
	for _, p := range []string{"tcp", "udp"} {
		m.byFlow[p] = make(map[Result]prometheus.Counter)
		for _, r := range []Result{Relayed, NoMapping, LookupFailed, ResolveFailed, Refused, Denied, NoEgress, DialFailed, Limited} {
			m.byFlow[p][r] = m.flows.WithLabelValues(p, string(r))
		}
		m.byActive[p] = m.active.WithLabelValues(p)
		m.byBytes[p] = [2]prometheus.Counter{m.bytes.WithLabelValues(p, "upstream"), m.bytes.WithLabelValues(p, "downstream")}
	}
	egress := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ippool_connector_egress_missing",
		Help: "Egress addresses of the policy that no interface of this host has; flows the policy sends from them are refused (no_egress).",
	}, func() float64 {
		if c := m.conn.Load(); c != nil {
			return float64(len(c.MissingEgress()))
		}
		return 0
	})
	reg.MustRegister(m.flows, m.active, m.bytes, m.dial, m.timeouts, m.reclaims, m.clients, egress)
	return m
}

func (m *Metrics) flow(proto string, r Result) {
	if m != nil {
		m.byFlow[proto][r].Inc()
	}
}

func (m *Metrics) open(proto string, delta float64) {
	if m != nil {
		m.byActive[proto].Add(delta)
	}
}

func (m *Metrics) relayed(proto string, up, down int64) {
	if m != nil {
		m.byBytes[proto][0].Add(float64(up))
		m.byBytes[proto][1].Add(float64(down))
	}
}

func (m *Metrics) dialed(d time.Duration) {
	if m != nil {
		m.dial.Observe(d.Seconds())
	}
}

func (m *Metrics) timedOut(kind string) {
	if m != nil {
		m.timeouts.WithLabelValues(kind).Inc()
	}
}

func (m *Metrics) reclaimed() {
	if m != nil {
		m.reclaims.Inc()
	}
}

// watch makes the per-client metrics describe l.
func (m *Metrics) watch(l *limits) {
	if m != nil {
		m.clients.limits.Store(l)
	}
}

// watchEgress exports how many of the policy's egress addresses this host
// lacks, read at each scrape.
func (m *Metrics) watchEgress(c *Connector) {
	if m != nil {
		m.conn.Store(c)
	}
}

// clientCollector reads how flows are spread over clients at each scrape,
// from the limits' own table, so that nothing is kept per client for it.
type clientCollector struct {
	limits                     atomic.Pointer[limits]
	active, busiest, perClient *prometheus.Desc
}

func (cc *clientCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cc.active
	ch <- cc.busiest
	ch <- cc.perClient
}

func (cc *clientCollector) Collect(ch chan<- prometheus.Metric) {
	l := cc.limits.Load()
	if l == nil {
		return
	}
	active, busiest, sum, buckets := l.clientStats()
	ch <- prometheus.MustNewConstMetric(cc.active, prometheus.GaugeValue, float64(active))
	ch <- prometheus.MustNewConstMetric(cc.busiest, prometheus.GaugeValue, float64(busiest))
	hb := make(map[float64]uint64, len(buckets))
	for i, b := range clientFlowBuckets {
		hb[b] = buckets[i]
	}
	ch <- prometheus.MustNewConstHistogram(cc.perClient, uint64(active), float64(sum), hb)
}

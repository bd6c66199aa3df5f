package cluster

import (
	"time"

	gometrics "github.com/hashicorp/go-metrics"
	gometricsprom "github.com/hashicorp/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ippool/ippool/internal/connlimit"
)

// RegisterMetrics exports the node's cluster port: its connections, the
// peers it refused, and when its certificate expires.
func (n *Node) RegisterMetrics(reg prometheus.Registerer) {
	if notAfter, ok := n.CertificateExpiry(); ok {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ippool_tls_certificate_expiry_seconds", ConstLabels: prometheus.Labels{"port": "cluster"},
			Help: "When this server's certificate expires, Unix seconds, by port (cluster, http): alert well before (nothing renews them; docs/security.md says how to rotate).",
		}, func() float64 { return float64(notAfter.Unix()) }))
	}
	connlimit.RegisterMetrics(reg, "cluster", n.ConnStats)
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ippool_cluster_peers_refused_total",
		Help: "Cluster connections refused because the peer is not one of the cluster's (with --tailnet: a node without --cluster-tag).",
	}, func() float64 { return float64(n.RefusedPeers()) }))
}

// ExportRaftMetrics publishes hashicorp/raft's own timings (commitTime,
// leader.dispatchLog for the leader's append and fsync,
// replication.appendEntries.rpc per follower, fsm.apply ...) under
// ippool_raft_ on /metrics, as Consul does: they tell where a slow write
// spends its time. Raft reports them through go-metrics' process-wide sink,
// so a process calls this once, for its one server;
// series that stop being updated (a former leader's) expire after a minute.
func ExportRaftMetrics(reg prometheus.Registerer) error {
	sink, err := gometricsprom.NewPrometheusSinkFrom(gometricsprom.PrometheusOpts{Registerer: reg, Expiration: time.Minute, Name: "ippool_raft_metrics"})
	if err != nil {
		return err
	}
	cfg := gometrics.DefaultConfig("ippool")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false
	_, err = gometrics.NewGlobal(cfg, sink)
	return err
}

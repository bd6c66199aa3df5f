package service

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// Metrics are the service's and the cluster's Prometheus collectors, all
// under the ippool_ prefix. The cluster reports its events (bad entries,
// batches, read barriers, snapshots) through its Metrics interface, which
// *Metrics implements; internal/server checks that it does.
type Metrics struct {
	Allocations  *prometheus.CounterVec
	Reuses       prometheus.Counter
	Exhaustions  prometheus.Counter
	Lookups      *prometheus.CounterVec
	MarkBatches  *prometheus.CounterVec
	MarksDropped prometheus.Counter
	Batches      *prometheus.HistogramVec
	BatchOps     prometheus.Histogram
	ReadBarriers *prometheus.HistogramVec
	Snapshots    prometheus.Histogram
	BadEntries   prometheus.Counter
	Leadership   prometheus.Counter
	AuthFailures *prometheus.CounterVec
	// The bounds' refusals: allocations past a quota (by quota: clients,
	// mappings, mappings_per_client, domain_bytes), writes past a caller's
	// rate.
	QuotaExceeded *prometheus.CounterVec
	RateLimited   prometheus.Counter
}

var latencyBuckets = []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ippool_allocations_total",
			Help: "IPForDomain answers, by path: local (S7 fast path, no consensus), new (a new mapping through the log), existing (an existing mapping refreshed through the log).",
		}, []string{"path"}),
		Reuses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ippool_reuses_total", Help: "Allocations that took the address of an expired mapping.",
		}),
		Exhaustions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ippool_exhaustions_total", Help: "Allocations refused because the client's pool was exhausted.",
		}),
		Lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ippool_lookups_total",
			Help: "DomainForIP lookups by result: hit (local), miss (not found after the read barrier), confirmed (found after the read barrier), error.",
		}, []string{"result"}),
		MarkBatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ippool_mark_batches_total", Help: "Batches of coalesced mark-used writes, by result.",
		}, []string{"result"}),
		MarksDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ippool_marks_dropped_total", Help: "Mark-used writes dropped because the buffer was full.",
		}),
		Batches: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ippool_write_batch_seconds", Help: "Time to commit one batch of writes, by whether it was forwarded to the leader and its result.",
			Buckets: latencyBuckets,
		}, []string{"forwarded", "result"}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ippool_http_auth_failures_total", Help: "HTTP requests refused by access control, by code: unauthorized (no valid token, 401), forbidden (the token's role does not allow it, 403).",
		}, []string{"code"}),
		BatchOps: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ippool_write_batch_ops", Help: "Ops per committed batch (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		ReadBarriers: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ippool_read_barrier_seconds", Help: "Time of read barriers (S4), by result.", Buckets: latencyBuckets,
		}, []string{"result"}),
		Snapshots: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ippool_snapshot_encode_seconds", Help: "Time to encode the state for a Raft snapshot or a backup (snapshot save); applies wait meanwhile.",
			Buckets: latencyBuckets,
		}),
		BadEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ippool_bad_log_entries_total", Help: "Log entries that did not decode and were refused (S10).",
		}),
		Leadership: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ippool_leadership_changes_total", Help: "Times this server gained or lost leadership.",
		}),
		QuotaExceeded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ippool_quota_exceeded_total", Help: "Allocations this server took that were refused by a quota, by quota: clients (--max-clients), mappings (--max-mappings), mappings_per_client (--max-mappings-per-client), domain_bytes (--max-domain-bytes).",
		}, []string{"quota"}),
		RateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ippool_http_rate_limited_total", Help: "HTTP writes refused because their caller (token, or source address without ACLs) was past its write rate (--http-write-rate).",
		}),
	}
	for _, q := range []string{"clients", "mappings", "mappings_per_client", "domain_bytes"} {
		m.QuotaExceeded.WithLabelValues(q)
	}
	reg.MustRegister(m.Allocations, m.Reuses, m.Exhaustions, m.Lookups, m.MarkBatches, m.MarksDropped,
		m.Batches, m.BatchOps, m.ReadBarriers, m.Snapshots, m.BadEntries, m.Leadership, m.AuthFailures,
		m.QuotaExceeded, m.RateLimited)
	return m
}

func (m *Metrics) BadEntry()             { m.BadEntries.Inc() }
func (m *Metrics) LeadershipChange(bool) { m.Leadership.Inc() }

func (m *Metrics) Batch(ops int, forwarded bool, d time.Duration, err error) {
	m.Batches.WithLabelValues(boolLabel(forwarded), resultLabel(err)).Observe(d.Seconds())
	if err == nil {
		m.BatchOps.Observe(float64(ops))
	}
}

func (m *Metrics) ReadIndex(d time.Duration, err error) {
	m.ReadBarriers.WithLabelValues(resultLabel(err)).Observe(d.Seconds())
}

func (m *Metrics) Snapshot(d time.Duration) { m.Snapshots.Observe(d.Seconds()) }

func boolLabel(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func resultLabel(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, pool.ErrNoQuorum), errors.Is(err, pool.ErrNoLeader):
		return "unavailable"
	}
	return "error"
}

// RegisterClusterGauges exports the Raft state of node and the size of the
// state, read at scrape time.
func RegisterClusterGauges(reg prometheus.Registerer, node Node) {
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	states := map[string]float64{"Follower": 0, "Candidate": 1, "Leader": 2, "Shutdown": 3}
	gauge("ippool_raft_state", "Raft state: 0 follower, 1 candidate, 2 leader, 3 shutdown.", func() float64 { return states[node.Local().State] })
	gauge("ippool_raft_term", "Current Raft term.", func() float64 { return float64(node.Local().Term) })
	gauge("ippool_raft_commit_index", "Raft commit index known to this server.", func() float64 { return float64(node.Local().Commit) })
	gauge("ippool_raft_applied_index", "Index of the last entry applied to this server's state.", func() float64 { return float64(node.Local().Applied) })
	gauge("ippool_raft_last_snapshot_index", "Index of the last snapshot.", func() float64 { return float64(node.RaftStats()["last_snapshot_index"]) })
	gauge("ippool_local_reads", "1 while this server answers reads from its local state (current: within its stale bound), else 0.", func() float64 {
		if node.LocalReadOK() {
			return 1
		}
		return 0
	})
	var clients, mappings, held float64
	sizes := func() {
		node.Read(func(s *pool.State) {
			c, m, _ := s.Counts()
			clients, mappings, held = float64(c), float64(m), float64(s.HeldCount())
		})
	}
	gauge("ippool_clients", "Clients with at least one mapping.", func() float64 { sizes(); return clients })
	gauge("ippool_mappings", "Mappings held.", func() float64 { sizes(); return mappings })
	gauge("ippool_held_addresses", "Addresses under a reuse hold (released less than the reuse hold ago).", func() float64 { sizes(); return held })
}

// RegisterBoundGauges exports how close the state and the callers are to
// each bound: clients, mappings and domain text against the limits this
// server stamps when it leads (ippool_clients and ippool_mappings are the
// counts), tokens against acl.MaxTokens, callers whose write rate is
// tracked against their limit.
func RegisterBoundGauges(reg prometheus.Registerer, svc *Service, limits wire.QuotaLimits) {
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	gauge("ippool_max_clients", "The most clients the cluster may hold (--max-clients); compare ippool_clients.", func() float64 { return float64(limits.MaxClients) })
	gauge("ippool_max_mappings", "The most mappings the cluster may hold (--max-mappings; 0: no bound); compare ippool_mappings.", func() float64 { return float64(limits.MaxMappings) })
	gauge("ippool_max_mappings_per_client", "The most mappings one client may hold (--max-mappings-per-client; 0: no bound).", func() float64 { return float64(limits.MaxMappingsPerClient) })
	gauge("ippool_max_domain_bytes", "The most bytes of distinct domain names the cluster may hold (--max-domain-bytes; 0: no bound); compare ippool_domain_bytes.", func() float64 { return float64(limits.MaxDomainBytes) })
	gauge("ippool_domain_bytes", "Bytes of the distinct domain names held, each counted once.", func() float64 {
		var n int64
		svc.node.Read(func(s *pool.State) { n = s.DomainBytes() })
		return float64(n)
	})
	gauge("ippool_quotas_enforced", "1 while the cluster writes the log entry version that carries the mapping quotas (every server reads it), else 0: until then only --max-clients is enforced.", func() float64 {
		if svc.node.Local().QuotasEnforced {
			return 1
		}
		return 0
	})
	gauge("ippool_acl_tokens", "ACL tokens the cluster holds.", func() float64 { return float64(len(svc.node.ACL().Tokens())) })
	gauge("ippool_acl_max_tokens", "The most ACL tokens the cluster may hold.", func() float64 { return acl.MaxTokens })
	gauge("ippool_http_write_limiters", "HTTP callers whose write rate this server tracks.", func() float64 { n, _ := svc.WriteLimiters(); return float64(n) })
	gauge("ippool_http_write_limiters_max", "The most HTTP callers whose write rate this server tracks at once (0: no write rate limit).", func() float64 { _, m := svc.WriteLimiters(); return float64(m) })
}

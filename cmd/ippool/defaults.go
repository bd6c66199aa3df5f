package main

import (
	"strconv"
	"time"

	"github.com/alecthomas/kong"

	"github.com/ippool/ippool/internal/cluster"
	"github.com/ippool/ippool/internal/connector"
	"github.com/ippool/ippool/internal/dnsfront"
	"github.com/ippool/ippool/internal/httpapi"
	"github.com/ippool/ippool/internal/resolver"
	"github.com/ippool/ippool/wire"
)

// defaults are the flags' defaults, taken from the constants of the
// packages the flags configure (default:"${name}" in a flag's tag), so
// that each default is written once.
func defaults() kong.Vars {
	d := func(v time.Duration) string { return v.String() }
	i := strconv.Itoa
	return kong.Vars{
		"http_addr":                    httpapi.DefaultAddr,
		"http_header_timeout":          d(httpapi.DefaultHeaderTimeout),
		"http_body_timeout":            d(httpapi.DefaultBodyTimeout),
		"http_idle_timeout":            d(httpapi.DefaultIdleTimeout),
		"max_restore_bytes":            strconv.FormatInt(wire.DefaultMaxRestoreBytes, 10),
		"cluster_addr":                 cluster.DefaultAddr,
		"raft_timeout":                 d(cluster.DefaultRaftTimeout),
		"snapshot_threshold":           i(cluster.DefaultSnapshotThreshold),
		"snapshot_interval":            d(cluster.DefaultSnapshotInterval),
		"write_timeout":                d(cluster.DefaultWriteTimeout),
		"max_clients":                  i(cluster.DefaultMaxClients),
		"max_mappings":                 i(cluster.DefaultMaxMappings),
		"max_mappings_per_client":      i(cluster.DefaultMaxMappingsPerClient),
		"max_domain_bytes":             i(cluster.DefaultMaxDomainBytes),
		"cluster_max_conns":            i(cluster.DefaultMaxConns),
		"cluster_max_conns_per_ip":     i(cluster.DefaultMaxConnsPerSource),
		"cluster_handshake_timeout":    d(cluster.DefaultHandshakeTimeout),
		"cluster_idle_timeout":         d(cluster.DefaultIdleTimeout),
		"dns_ttl":                      d(dnsfront.DefaultTTL),
		"dns_cache_min_ttl":            d(dnsfront.DefaultCacheMinTTL),
		"dns_cache_max_ttl":            d(dnsfront.DefaultCacheMaxTTL),
		"dns_allow":                    dnsfront.DefaultAllowText,
		"dns_unwanted_reply_threshold": i(resolver.DefaultUnwantedReplyThreshold),
		"dns_tcp_max_conns":            i(dnsfront.DefaultTCPMaxConns),
		"dns_tcp_max_conns_per_source": i(dnsfront.DefaultTCPMaxConnsPerSource),
		"dns_tcp_timeout":              d(dnsfront.DefaultTCPTimeout),
		"connector_port":               i(connector.DefaultPort),
		"connector_mark":               "0x" + strconv.FormatUint(connector.DefaultMark, 16),
		"connector_table":              i(connector.DefaultTable),
		"connector_max_flows":          i(connector.DefaultMaxFlows),
		"connector_client_flows":       i(connector.DefaultMaxClientFlows),
		"connector_client_rate":        i(connector.DefaultClientRate),
		"connector_half_close_timeout": d(connector.DefaultHalfCloseTimeout),
	}
}

package wire

import (
	"net/netip"
	"time"
)

// The answers of the read endpoints the web console uses (GET /v1/stats,
// /v1/pool/clients and /v1/clients/{client}/occupancy). Each is bounded in
// size whatever the state holds.

// Stats is the answer to GET /v1/stats: the size of the answering server's
// state and its counters, read without a read barrier.
type Stats struct {
	Server string    `json:"server"`
	Time   time.Time `json:"time"`
	// PoolSize is how many addresses each client can hold.
	PoolSize      int  `json:"pool_size"`
	Clients       int  `json:"clients"`
	Mappings      int  `json:"mappings"`
	Domains       int  `json:"domains"`
	HeldAddresses int  `json:"held_addresses"`
	LocalReads    bool `json:"local_reads"`
	// Counters are this server's totals since it started, by name:
	// allocations (every path), allocations_new, lookups, reuses and
	// exhaustions, and dns_queries and connector_flows when those run. A
	// rate is the difference of two reads over the difference of their
	// Times.
	Counters map[string]float64 `json:"counters"`
}

// ClientUsage is how much of the pool a client holds: its mappings (expired
// ones included, which keep their addresses until reused), how many of
// them are expired, and its addresses under a reuse hold.
type ClientUsage struct {
	Client   string `json:"client"`
	Mappings int    `json:"mappings"`
	Expired  int    `json:"expired"`
	Held     int    `json:"held"`
}

// ClientRanking is the answer to GET /v1/pool/clients: clients ranked by
// mappings, most first, from rank Offset on; Total matched the prefix.
type ClientRanking struct {
	PoolSize int           `json:"pool_size"`
	Total    int           `json:"total"`
	Offset   int           `json:"offset"`
	Clients  []ClientUsage `json:"clients"`
}

// Occupancy is the answer to GET /v1/clients/{client}/occupancy: the pool
// in pool order (the Ranges one after another) cut into Cells cells of
// Block addresses (the last may have fewer). Used has [cell, live,
// expired, held] for each cell holding anything, in order; the rest of
// every cell is free.
type Occupancy struct {
	Client   string      `json:"client"`
	PoolSize int         `json:"pool_size"`
	Block    int         `json:"block"`
	Cells    int         `json:"cells"`
	Used     [][4]int    `json:"used"`
	Ranges   []AddrRange `json:"ranges"`
}

// AddrRange is a run of consecutive addresses, both ends included.
type AddrRange struct {
	From netip.Addr `json:"from"`
	To   netip.Addr `json:"to"`
}

// Package ippool hands each client an IPv4 address per domain from a shared
// pool and answers, later, which domain a client's address stands for. It is
// the address pool of a NAT connector or a DNS-steered gateway.
//
// IPPool is implemented by localpool (one process, no replication) and by the
// cluster service (replicated with Raft); the DNS and HTTP front ends take
// either.
package ippool

import (
	"context"
	"net/netip"
	"time"
)

// IPPool is what a front end needs of an address pool.
type IPPool interface {
	// IPForDomain returns the client's address for domain, allocating one
	// if the client has none (docs/design.md#s1-ipfordomain-allocates-or-refreshes).
	IPForDomain(ctx context.Context, client, domain string) (netip.Addr, error)
	// DomainForIP returns the domain the client's address maps to, or an
	// error that matches pool.ErrNotFound, and marks the mapping used at
	// at (S3).
	DomainForIP(ctx context.Context, client string, addr netip.Addr, at time.Time) (string, error)
}

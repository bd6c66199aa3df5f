// Package snapgen makes the replicated state of a large cluster without
// the writes that would build it: clients, each with its mappings, domain
// text of a given length, a share of the names common to many clients (as
// SaaS names are) and the rest each client's own, last-used times spread
// over the lifetime. `ippool snapshot generate` writes it as a snapshot that
// `snapshot restore` loads, for capacity planning and load tests
// (docs/scale.md): a cluster holds 30M mappings in seconds instead of hours
// of allocations.
package snapgen

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/ippool/ippool/pool"
)

// Config says what to make.
type Config struct {
	// Pool is the pool configuration the state holds.
	Pool pool.Config
	// Clients and MappingsPerClient: every client gets that many.
	Clients, MappingsPerClient int
	// DomainBytes is the length of a name, within a few bytes (at least
	// 12, at most 253).
	DomainBytes int
	// Shared is the fraction of each client's names drawn from a set of
	// SharedNames names common to all clients; the rest are its own.
	// Defaults 0.5 and 10,000.
	Shared      float64
	SharedNames int
	// Now is the state's time: last-used times lie within the lifetime
	// before it, so nothing has expired at Now. Default: the time now.
	Now time.Time
	// UsedWithin is the span before Now that last-used times lie in,
	// at most the lifetime. Default: 90% of the lifetime. A short span
	// makes a batch that goes idle at once, as clients do after an outage
	// (the ladder's expiry step).
	UsedWithin time.Duration
	// Seed makes the state reproducible.
	Seed uint64
}

// Generate makes the state. A client's names are all distinct, so each
// is one mapping; clients are named as DNS clients are, by an address
// (10.0.0.0/8, then node-N past 16M clients).
func Generate(cfg Config) (*pool.State, error) {
	if cfg.Shared == 0 {
		cfg.Shared = 0.5
	}
	if cfg.SharedNames == 0 {
		cfg.SharedNames = 10_000
	}
	if cfg.Now.IsZero() {
		cfg.Now = time.Now()
	}
	switch {
	case cfg.Clients < 1 || cfg.MappingsPerClient < 1:
		return nil, errors.New("snapgen: at least one client and one mapping a client")
	case cfg.DomainBytes < 12 || cfg.DomainBytes > 253:
		return nil, fmt.Errorf("snapgen: domain length %d is not 12 to 253 bytes", cfg.DomainBytes)
	case cfg.Shared < 0 || cfg.Shared > 1:
		return nil, fmt.Errorf("snapgen: shared fraction %v is not 0 to 1", cfg.Shared)
	}
	shared := int(float64(cfg.MappingsPerClient)*cfg.Shared + 0.5)
	if shared > cfg.SharedNames {
		return nil, fmt.Errorf("snapgen: %d shared names a client, but only %d shared names", shared, cfg.SharedNames)
	}
	lifetime := cfg.Pool.Lifetime
	if cfg.UsedWithin == 0 {
		cfg.UsedWithin = lifetime * 9 / 10
	}
	if cfg.UsedWithin < 0 || cfg.UsedWithin > lifetime {
		return nil, fmt.Errorf("snapgen: last-used span %v is not within the lifetime %v", cfg.UsedWithin, lifetime)
	}
	st := pool.NewState()
	start := cfg.Now.Add(-cfg.UsedWithin)
	if _, err := st.SetConfig(cfg.Pool, start); err != nil {
		return nil, err
	}
	if cfg.MappingsPerClient > st.PoolSize() {
		return nil, fmt.Errorf("snapgen: %d mappings a client do not fit a pool of %d addresses a client", cfg.MappingsPerClient, st.PoolSize())
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	total := cfg.Clients * cfg.MappingsPerClient
	step := cfg.UsedWithin / time.Duration(total)
	// Rounds over the clients, so that each client's mappings spread over
	// the whole span, as a client's names do, and times only go forward.
	picks := make([][]int, cfg.Clients)
	at := start
	for round := range cfg.MappingsPerClient {
		for c := range cfg.Clients {
			var name string
			if round < shared {
				if picks[c] == nil {
					picks[c] = pickDistinct(rng, cfg.SharedNames, shared)
				}
				name = sharedName(picks[c][round], cfg.DomainBytes)
			} else {
				name = ownName(c, round, cfg.DomainBytes)
			}
			if round == cfg.MappingsPerClient-1 {
				picks[c] = nil
			}
			if _, err := st.Allocate(ClientID(c), name, at); err != nil {
				return nil, fmt.Errorf("snapgen: client %d name %q: %w", c, name, err)
			}
			at = at.Add(step)
		}
	}
	return st, nil
}

// pickDistinct is k distinct numbers below n, in random order, by Floyd's
// sampling: O(k), where a permutation of n held until the client's last
// round cost 80 KB a client (24 GB at 300,000 clients).
func pickDistinct(rng *rand.Rand, n, k int) []int {
	seen := make(map[int]struct{}, k)
	out := make([]int, 0, k)
	for j := n - k; j < n; j++ {
		t := rng.IntN(j + 1)
		if _, dup := seen[t]; dup {
			t = j
		}
		seen[t] = struct{}{}
		out = append(out, t)
	}
	rng.Shuffle(len(out), func(a, b int) { out[a], out[b] = out[b], out[a] })
	return out
}

// ClientID names client c as a DNS client is named, by its address.
func ClientID(c int) string {
	if c < 1<<24 {
		return fmt.Sprintf("10.%d.%d.%d", c>>16, c>>8&0xff, c&0xff)
	}
	return fmt.Sprintf("node-%d", c)
}

// sharedName is shared name i, n bytes long: a service under one of a few
// providers' zones, as clients' common names are.
func sharedName(i, n int) string {
	zones := [...]string{"saas.example", "cdn.example.net", "api.example.com", "apps.example.org"}
	return fill(fmt.Sprintf("s%d-", i), zones[i%len(zones)], n)
}

// ownName is client c's own name for its round r: a host of its own.
func ownName(c, r, n int) string {
	return fill(fmt.Sprintf("h%d-c%d-", r, c), "corp.example", n)
}

// fill pads head with letters into labels of at most 63 bytes before
// zone, to n bytes in all where it can.
func fill(head, zone string, n int) string {
	var b strings.Builder
	b.WriteString(head)
	pad := n - len(head) - len(zone) - 1
	label := len(head)
	for i := 0; i < pad; i++ {
		if label == 63 {
			b.WriteByte('.')
			label = 0
			continue
		}
		b.WriteByte("abcdefghijklmnopqrstuvwxyz"[i%26])
		label++
	}
	if s := b.String(); strings.HasSuffix(s, "-") || strings.HasSuffix(s, ".") {
		b.WriteByte('x')
	}
	b.WriteByte('.')
	b.WriteString(zone)
	return b.String()
}

package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// The default quotas keep a server of the default pool and limits within
// about 2 GB of memory. Measured under load: a client with one mapping
// takes about 0.9 KB (so DefaultMaxClients, a million, about 0.9 GB), each
// further mapping about 150 bytes with short domains (the engine's own
// share is about 48 bytes; the rest is Go's map and slice slack, the log
// and snapshot buffers), and a distinct domain name its text and about as
// much again in indexes. So:
//
//	1,000,000 clients with their first mapping     0.9 GB
//	4,000,000 further mappings x 150 B             0.6 GB
//	256 MiB of distinct domain text, x 2           0.5 GB
//	                                               ------
//	                                              ~2.0 GB
//
// and a single client holds at most 65,536 mappings (half the default
// /15 pool, 1.3% of the total), so that one caller cannot take the whole
// mapping quota by itself.
const (
	DefaultMaxMappings          = 5_000_000
	DefaultMaxMappingsPerClient = 65_536
	DefaultMaxDomainBytes       = 256 << 20
)

const (
	// entryVersionRefresh is how often a leader asks every server which
	// log entry versions it reads, to know which one it may write.
	entryVersionRefresh = 3 * time.Second
	// alarmWindow is how long a quota that refused an allocation stays
	// in /v1/cluster's alarms.
	alarmWindow = 5 * time.Minute
	// admittedGrace is how long a server the leader let join counts in
	// the entry version before it shows in the membership the refresh
	// reads.
	admittedGrace = time.Minute
)

// entryWrites is what a leader knows of the log entry version it may
// write: the newest every member reads. It asks every few seconds in the
// background, never on a write. What a member said stays known while it
// does not answer: a server that stops briefly does not turn quotas off,
// and one downgraded while away stops at the first entry it cannot read
// rather than skip it (docs/upgrading.md).
type entryWrites struct {
	version atomic.Int32
	mu      sync.Mutex
	// reads is the newest entry version each server said it reads.
	reads map[string]int
	// admitted are servers this leader let join, by when: they count until
	// the membership the refresh reads has them.
	admitted map[string]time.Time
	// why is what holds the version below pool.EntryVersion.
	why string
}

func newEntryWrites() *entryWrites {
	w := &entryWrites{reads: map[string]int{}, admitted: map[string]time.Time{}}
	w.reset()
	return w
}

// reset forgets what the members said: a leader starts from the version
// every release reads.
func (w *entryWrites) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.reads)
	clear(w.admitted)
	w.version.Store(baselineEntryVersion)
	w.why = "not yet known: the leader asks every server which log entry versions it reads"
}

// current is the version to write and, when it is below this build's,
// why.
func (w *entryWrites) current() (int, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return int(w.version.Load()), w.why
}

// admit records a joining server's newest entry version before it is
// added, so that no entry it cannot read is written from then on, and
// refuses it when the cluster writes one already.
func (w *entryWrites) admit(id string, reads []int, version string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := checkCanRead(id, reads, int(w.version.Load()), version); err != nil {
		return err
	}
	w.reads[id] = newestRead(reads)
	w.admitted[id] = time.Now()
	w.recompute(nil)
	return nil
}

// update takes what the members said just now and recomputes the
// version; it reports whether the version changed.
func (w *entryWrites) update(servers []ServerStatus) (changed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	before := w.version.Load()
	for _, s := range servers {
		if s.Reachable {
			w.reads[s.ID] = newestRead(s.EntryVersions)
			delete(w.admitted, s.ID)
		}
	}
	w.recompute(servers)
	return w.version.Load() != before
}

// recompute sets the version from servers (nil: the last membership seen)
// and the servers admitted lately. Called with mu held.
func (w *entryWrites) recompute(servers []ServerStatus) {
	if servers != nil {
		ids := map[string]bool{}
		for _, s := range servers {
			ids[s.ID] = true
		}
		for id, at := range w.admitted {
			if ids[id] || time.Since(at) > admittedGrace {
				delete(w.admitted, id)
			}
		}
		for id := range w.reads {
			if !ids[id] && w.admitted[id].IsZero() {
				delete(w.reads, id)
			}
		}
	}
	v := pool.EntryVersion
	var older []string
	ids := make([]string, 0, len(w.reads))
	for id := range w.reads {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if r := w.reads[id]; r < pool.EntryVersion {
			v = min(v, r)
			older = append(older, fmt.Sprintf("%s reads up to %d", id, r))
		}
	}
	if servers != nil {
		for _, s := range servers {
			if _, known := w.reads[s.ID]; !known {
				v = min(v, baselineEntryVersion)
				older = append(older, s.ID+" did not answer yet")
			}
		}
	}
	w.version.Store(int32(v))
	w.why = ""
	if len(older) > 0 {
		w.why = "some server reads no log entry version past " + fmt.Sprint(v) + ": " + strings.Join(older, ", ")
	}
}

// refreshEntryVersion asks every member which entry versions it reads and
// sets what this leader writes; it logs when that changes.
func (n *Node) refreshEntryVersion() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st := n.Status(ctx)
	if len(st.Servers) == 0 || !n.IsLeader() {
		return
	}
	if !n.writes.update(st.Servers) {
		return
	}
	v, why := n.writes.current()
	if v >= quotaEntryVersion {
		n.log.Info("every server reads log entry version "+fmt.Sprint(v)+": writing it, with the mapping quotas", "entry_version", v)
	} else {
		n.log.Warn("writing log entry version "+fmt.Sprint(v)+" without the mapping quotas (--max-mappings, --max-mappings-per-client, --max-domain-bytes) until every server is upgraded", "entry_version", v, "reason", why)
	}
}

// watchEntryVersion keeps the leader's entry version current: at once on
// gaining leadership, then every entryVersionRefresh.
func (n *Node) watchEntryVersion() {
	tick := time.NewTicker(entryVersionRefresh)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-n.leaderGained:
		case <-tick.C:
		}
		if n.IsLeader() {
			n.refreshEntryVersion()
		}
	}
}

// quotaEntryVersion is the first log entry version that carries the
// mapping quotas.
const quotaEntryVersion = 4

// entryFor is the entry a leader appends for ops: the version every server
// reads, with the quotas only when that version carries them.
func (n *Node) entryFor(ops []pool.Op, at time.Time) pool.Entry {
	e := pool.Entry{Version: int(n.writes.version.Load()), Time: at, MaxClients: n.cfg.MaxClients, Ops: ops}
	if e.Version >= quotaEntryVersion {
		e.Quotas = n.cfg.quotas()
	}
	return e
}

func (c *Config) quotas() pool.Quotas {
	return pool.Quotas{MaxMappings: c.MaxMappings, MaxMappingsPerClient: c.MaxMappingsPerClient, MaxDomainBytes: c.MaxDomainBytes}
}

// writesEntryVersion is the entry version this server's cluster writes, as
// far as it knows: the leader's own choice, elsewhere the version of the
// last entry applied here.
func (n *Node) writesEntryVersion() int {
	if n.IsLeader() {
		return int(n.writes.version.Load())
	}
	return max(baselineEntryVersion, int(n.fsm.lastEntryVersion.Load()))
}

// QuotaRefusal is the quota_exceeded error an allocation of domain
// (normalized) for client would get, judged on this server's state with
// its own bounds, or nil when it might succeed: the service asks it before
// proposing, so that an allocation past a quota costs no log entry and no
// disk on any server. The local state may be behind: the service asks
// again after a read barrier before it refuses. Every server is given the same bounds
// (the leader's apply); until the cluster writes the version that carries
// the mapping quotas, only the client bound is checked here, as at apply.
func (n *Node) QuotaRefusal(client, domain string) error {
	var q pool.Quotas
	if n.writesEntryVersion() >= quotaEntryVersion {
		q = n.cfg.quotas()
	}
	now := n.Now()
	var err error
	n.Read(func(s *pool.State) { err = s.QuotaRefusal(client, domain, now, n.cfg.MaxClients, q) })
	if err != nil {
		n.fsm.quotaHit(pool.QuotaOf(err), now)
	}
	return err
}

// QuotaLimits are the bounds this server stamps when it leads; 0 is none.
func (n *Node) QuotaLimits() wire.QuotaLimits {
	return wire.QuotaLimits{MaxClients: n.cfg.MaxClients, MaxMappings: n.cfg.MaxMappings, MaxMappingsPerClient: n.cfg.MaxMappingsPerClient, MaxDomainBytes: n.cfg.MaxDomainBytes}
}

// QuotaStatus is what /v1/cluster says of the quotas: whether they are
// enforced (and why not), this server's limits, the usage of its state,
// and the alarms: quotas reached, or that refused an allocation lately
// (applied on any server, or refused before proposing on this one).
func (n *Node) QuotaStatus() (enforced bool, reason string, usage wire.QuotaUsage, limits wire.QuotaLimits, alarms []wire.QuotaAlarm) {
	v := n.writesEntryVersion()
	enforced = v >= quotaEntryVersion
	if !enforced {
		if n.IsLeader() {
			_, reason = n.writes.current()
		} else {
			reason = fmt.Sprintf("the last pool entry applied here is version %d, which carries no mapping quotas: the leader writes version %d once every server reads it, and this server has applied none of those since (the leader's /v1/cluster says why)", v, quotaEntryVersion)
		}
	}
	limits = n.QuotaLimits()
	n.Read(func(s *pool.State) {
		c, m, d := s.Counts()
		usage = wire.QuotaUsage{Clients: c, Mappings: m, Domains: d, DomainBytes: s.DomainBytes()}
	})
	hits := n.fsm.quotaHits()
	now := n.Now()
	// A mapping quota at its limit is no alarm while the cluster writes
	// entries without it: nothing is refused then.
	type quota struct {
		name, flag   string
		used, limit  int64
		mappingQuota bool
	}
	for _, q := range []quota{
		{"clients", pool.QuotaFlagClients, int64(usage.Clients), int64(limits.MaxClients), false},
		{"mappings", pool.QuotaFlagMappings, int64(usage.Mappings), int64(limits.MaxMappings), true},
		{"mappings_per_client", pool.QuotaFlagMappingsPerClient, -1, int64(limits.MaxMappingsPerClient), true},
		{"domain_bytes", pool.QuotaFlagDomainBytes, usage.DomainBytes, limits.MaxDomainBytes, true},
	} {
		a := wire.QuotaAlarm{Quota: q.name, Flag: q.flag, Limit: q.limit}
		if q.used >= 0 {
			a.Usage = q.used
		}
		at, hit := hits[q.name]
		recent := hit && now.Sub(at) < alarmWindow
		full := q.used >= 0 && q.limit > 0 && q.used >= q.limit && (enforced || !q.mappingQuota)
		if !recent && !full {
			continue
		}
		if recent {
			a.LastExceeded = at.UTC().Format(time.RFC3339)
		}
		switch {
		case full:
			a.Message = fmt.Sprintf("NOSPACE: %s at its limit (%d of %s %d): allocations that would add to it are refused with quota_exceeded", q.name, q.used, q.flag, q.limit)
		default:
			a.Message = fmt.Sprintf("%s refused an allocation at %s (%s %d)", q.name, a.LastExceeded, q.flag, q.limit)
		}
		alarms = append(alarms, a)
	}
	return enforced, reason, usage, limits, alarms
}

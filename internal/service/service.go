// Package service turns requests into pool operations on a cluster node: the
// S7 fast path, the S4 read barrier on a local miss, and the S5 coalescing of
// mark-used writes. The HTTP and DNS front ends call it.
package service

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	snapshotpkg "github.com/ippool/ippool/internal/snapshot"
	"github.com/ippool/ippool/pool"
)

// Options tune a Service.
type Options struct {
	// Identities gives a client's tailnet tags and user login, for the
	// policy's tag: and user: selectors; nil outside tailnet mode.
	Identities func(client string) (tags []string, user string)
	// MarkWindow is how stale a mapping's last-used time may get before a
	// lookup writes a later one (S5); 0 means min(5m, lifetime/10).
	MarkWindow time.Duration
	// MarkFlush is how often buffered marks are written.
	MarkFlush time.Duration
	// MarkBuffer bounds the marks waiting to be written; more are dropped
	// and counted.
	MarkBuffer int
	Now        func() time.Time
	// RequireACL makes every request but health and readiness need a token
	// even before the cluster's ACLs are bootstrapped (serve --acl).
	RequireACL bool
	// WriteRate is how many writes a second each caller may make (see
	// WithCaller; 0 means no limit), in bursts of WriteBurst (default one
	// second's worth); WriteLimiters bounds the callers tracked at once
	// (default DefaultWriteLimiters).
	WriteRate     float64
	WriteBurst    int
	WriteLimiters int
	Logger        *slog.Logger
	Metrics       *Metrics
}

// Service is safe for concurrent use.
type Service struct {
	node Node
	// egressMissing is ReportMissingEgress's function.
	egressMissing atomic.Pointer[func() []netip.Addr]
	opts          Options
	marks         *markBuffer
	limiter       *writeLimiter
	metrics       *Metrics
	log           *slog.Logger
	stop          chan struct{}
	done          chan struct{}
	closeOnce     sync.Once

	localCount   sync.Once
	localCounter prometheus.Counter
}

// New starts a Service on node.
func New(node Node, opts Options) *Service {
	if opts.MarkFlush == 0 {
		opts.MarkFlush = time.Second
	}
	if opts.MarkBuffer == 0 {
		opts.MarkBuffer = 1 << 17
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{node: node, opts: opts, metrics: opts.Metrics, log: opts.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	s.marks = newMarkBuffer(opts.MarkBuffer)
	if opts.WriteLimiters == 0 {
		opts.WriteLimiters = DefaultWriteLimiters
	}
	s.limiter = newWriteLimiter(opts.WriteRate, opts.WriteBurst, opts.WriteLimiters)
	go s.flushMarks()
	return s
}

// Close writes the marks still buffered and stops the flusher.
func (s *Service) Close() {
	s.closeOnce.Do(func() { close(s.stop) })
	<-s.done
}

func (s *Service) lifetime() time.Duration {
	cfg, ok := s.node.PoolConfig()
	if !ok {
		return pool.DefaultLifetime
	}
	return cfg.Lifetime
}

func (s *Service) markWindow() time.Duration {
	if s.opts.MarkWindow > 0 {
		return s.opts.MarkWindow
	}
	return s.markWindowOf(s.lifetime())
}

// markWindowOf is markWindow for a lifetime already read.
func (s *Service) markWindowOf(lifetime time.Duration) time.Duration {
	if s.opts.MarkWindow > 0 {
		return s.opts.MarkWindow
	}
	return min(5*time.Minute, lifetime/10)
}

// quotaRefusal is the quota_exceeded error the allocation would get, or
// nil to propose it. The local state may not yet hold the caller's own
// release of a moment ago, so a refusal stands only once a read barrier
// has brought it up to every committed write; the barrier is shared by
// concurrent callers, so a flood past a quota costs a round now and then,
// not one each. Should the barrier fail, the log decides.
func (s *Service) quotaRefusal(ctx context.Context, client, domain string) error {
	if s.node.QuotaRefusal(client, domain) == nil {
		return nil
	}
	if s.node.ReadBarrier(ctx) != nil {
		return nil
	}
	return s.node.QuotaRefusal(client, domain)
}

// IPForDomain returns the client's address for domain, allocating one if the
// client has none (docs/design.md#s1-ipfordomain-allocates-or-refreshes).
//
// A mapping that is more than half a lifetime from expiring is answered
// from local state without a log entry (S7). Without a read barrier only
// while this server is current (cluster.Node.LocalReadOK): then the answer is
// at most B stale, and an address released less than Q > B ago is held from
// the client, so the answer may name the address the domain had just
// before a release, never one that now means another domain. Otherwise the
// barrier (one leadership round shared by concurrent callers) comes first.
func (s *Service) IPForDomain(ctx context.Context, client, domain string) (netip.Addr, error) {
	if err := pool.ValidateClientID(client); err != nil {
		return netip.Addr{}, err
	}
	domain, err := pool.NormalizeDomain(domain)
	if err != nil {
		return netip.Addr{}, err
	}
	now := s.opts.Now()
	if m, ok := s.recent(client, domain, now); ok {
		if s.node.LocalReadOK() {
			s.count("local")
			s.mark(client, m, now)
			return m.Addr, nil
		}
		if err := s.node.ReadBarrier(ctx); err != nil {
			return netip.Addr{}, err
		}
		// The barrier may have applied a release or a reuse.
		if m2, ok := s.recent(client, domain, now); ok && m2.Addr == m.Addr {
			s.count("local")
			s.mark(client, m2, now)
			return m2.Addr, nil
		}
	}
	if err := s.admit(ctx); err != nil {
		return netip.Addr{}, err
	}
	// Past a quota nothing is proposed: a flood of refused allocations
	// costs no log entries.
	if err := s.quotaRefusal(ctx, client, domain); err != nil {
		if s.metrics != nil {
			s.metrics.QuotaExceeded.WithLabelValues(pool.QuotaOf(err)).Inc()
		}
		return netip.Addr{}, err
	}
	op := pool.Op{Kind: pool.OpAllocate, ID: s.node.NextRequestID(), Time: now, Client: client, Domain: domain}
	res, err := s.node.Propose(ctx, []pool.Op{op})
	if err == nil {
		err = res[0].Err
	}
	if err != nil {
		if errors.Is(err, pool.ErrPoolExhausted) && s.metrics != nil {
			s.metrics.Exhaustions.Inc()
		}
		if errors.Is(err, pool.ErrQuotaExceeded) && s.metrics != nil {
			s.metrics.QuotaExceeded.WithLabelValues(pool.QuotaOf(err)).Inc()
		}
		return netip.Addr{}, err
	}
	if res[0].Count == 1 {
		s.count("new")
	} else {
		s.count("existing")
	}
	if res[0].Reused && s.metrics != nil {
		s.metrics.Reuses.Inc()
	}
	return res[0].Addr, nil
}

// LocalIPForDomain is IPForDomain's local answer (S7) and nothing else: it
// answers only when IPForDomain would answer at once without a barrier or a
// log entry, and otherwise reports false without waiting, so that the DNS
// front end may call it from its read loop and leave every other case to
// IPForDomain. client must be a valid client ID and domain normalized.
func (s *Service) LocalIPForDomain(client, domain string) (netip.Addr, bool) {
	now := s.opts.Now()
	m, ok, lifetime := s.recentOf(client, domain, now)
	if !ok || !s.node.LocalReadOK() {
		return netip.Addr{}, false
	}
	s.count("local")
	// The lifetime recentOf read, rather than a second read of the state.
	s.markIn(client, m, now, s.markWindowOf(lifetime))
	return m.Addr, true
}

// recent returns the client's mapping for domain when local state holds a
// that is more than half a lifetime from expiring.
func (s *Service) recent(client, domain string, now time.Time) (pool.Mapping, bool) {
	m, ok, _ := s.recentOf(client, domain, now)
	return m, ok
}

// recentOf is recent, with the pool's lifetime it read.
func (s *Service) recentOf(client, domain string, now time.Time) (pool.Mapping, bool, time.Duration) {
	r := recentReads.Get().(*recentRead)
	r.client, r.domain = client, domain
	s.node.Read(r.fn)
	m, ok, lifetime := r.m, r.ok, r.lifetime
	*r = recentRead{fn: r.fn}
	recentReads.Put(r)
	return m, ok && now.Sub(m.LastUsed) < lifetime/2, lifetime
}

// recentRead is recent's read of the state, kept for reuse with its method
// value: a closure handed to Node.Read escapes, and with it every variable
// it writes, which would allocate on the DNS front end's busiest path.
type recentRead struct {
	client, domain string
	m              pool.Mapping
	ok             bool
	lifetime       time.Duration
	fn             func(*pool.State)
}

var recentReads = sync.Pool{New: func() any {
	r := new(recentRead)
	r.fn = r.read
	return r
}}

func (r *recentRead) read(st *pool.State) {
	r.m, r.ok = st.Get(r.client, r.domain)
	cfg, _ := st.Config()
	r.lifetime = cfg.Lifetime
}

func (s *Service) count(path string) {
	if s.metrics == nil {
		return
	}
	if path == "local" {
		// The busiest label, looked up once.
		s.localCount.Do(func() { s.localCounter = s.metrics.Allocations.WithLabelValues("local") })
		s.localCounter.Inc()
		return
	}
	s.metrics.Allocations.WithLabelValues(path).Inc()
}

// DomainForIP returns the domain the client's address maps to and marks the
// mapping used at at (docs/design.md#s3-domainforip).
func (s *Service) DomainForIP(ctx context.Context, client string, addr netip.Addr, at time.Time) (string, error) {
	m, err := s.Lookup(ctx, client, addr, at)
	return m.Domain, err
}

// Lookup returns the mapping of the client's address and marks it used at at
// (S3). A local hit is answered at once while this server is current and the
// mapping has not expired at at (see IPForDomain for why that is safe);
// otherwise, and for a local miss, the read barrier (S4) comes first.
func (s *Service) Lookup(ctx context.Context, client string, addr netip.Addr, at time.Time) (pool.Mapping, error) {
	if err := pool.ValidateClientID(client); err != nil {
		return pool.Mapping{}, err
	}
	if !addr.Is4() {
		return pool.Mapping{}, pool.Errorf(pool.CodeInvalidAddress, "%v is not an IPv4 address", addr)
	}
	var m pool.Mapping
	var ok, outside, expired bool
	s.node.Read(func(st *pool.State) {
		m, ok = st.Lookup(client, addr)
		cfg, configured := st.Config()
		outside = configured && !st.Contains(addr)
		expired = ok && at.Sub(m.LastUsed) > cfg.Lifetime
	})
	result := "hit"
	confirm := func() error {
		if err := s.node.ReadBarrier(ctx); err != nil {
			s.lookupResult("error")
			return err
		}
		s.node.Read(func(st *pool.State) { m, ok = st.Lookup(client, addr) })
		result = "confirmed"
		return nil
	}
	if ok && (expired || !s.node.LocalReadOK()) {
		// This server may be cut off, or the expired mapping's address may
		// have gone to another domain: confirm the hit.
		if err := confirm(); err != nil {
			return pool.Mapping{}, err
		}
	}
	if !ok {
		if outside {
			return pool.Mapping{}, pool.Errorf(pool.CodeInvalidAddress, "%v is outside the pool", addr)
		}
		if result != "confirmed" {
			if err := confirm(); err != nil {
				return pool.Mapping{}, err
			}
		}
		if !ok {
			s.lookupResult("miss")
			return pool.Mapping{}, pool.Errorf(pool.CodeNotFound, "client %s has no mapping for %v", client, addr)
		}
	}
	s.lookupResult(result)
	s.mark(client, m, at)
	return m, nil
}

func (s *Service) lookupResult(r string) {
	if s.metrics != nil {
		s.metrics.Lookups.WithLabelValues(r).Inc()
	}
}

// mark queues a mark-used unless the mapping was marked within the window.
func (s *Service) mark(client string, m pool.Mapping, at time.Time) {
	s.markIn(client, m, at, s.markWindow())
}

// markIn is mark with the window already known.
func (s *Service) markIn(client string, m pool.Mapping, at time.Time, window time.Duration) {
	if at.Sub(m.LastUsed) < window {
		return
	}
	if !s.marks.add(client, m.Addr, m.Domain, at) && s.metrics != nil {
		s.metrics.MarksDropped.Inc()
	}
}

// Get returns the client's mapping for a normalized domain from local state.
func (s *Service) Get(client, domain string) (pool.Mapping, bool) {
	var m pool.Mapping
	var ok bool
	s.node.Read(func(st *pool.State) { m, ok = st.Get(client, domain) })
	return m, ok
}

// HasClient reports whether local state holds anything of the client. The
// DNS front end asks it to tell a new client, which an allocation would add
// to the state, from a known one; a stale answer only misfiles a client
// created within the stale bound.
func (s *Service) HasClient(client string) bool {
	var ok bool
	s.node.Read(func(st *pool.State) { ok = st.HasClient(client) })
	return ok
}

// GetConsistent is Get with a local miss confirmed through the read barrier.
func (s *Service) GetConsistent(ctx context.Context, client, domain string) (pool.Mapping, error) {
	if err := pool.ValidateClientID(client); err != nil {
		return pool.Mapping{}, err
	}
	domain, err := pool.NormalizeDomain(domain)
	if err != nil {
		return pool.Mapping{}, err
	}
	// A hit is answered at once only while this server is current, as in
	// Lookup; a miss is always confirmed.
	if m, ok := s.Get(client, domain); ok && s.node.LocalReadOK() {
		return m, nil
	}
	if err := s.node.ReadBarrier(ctx); err != nil {
		return pool.Mapping{}, err
	}
	if m, ok := s.Get(client, domain); ok {
		return m, nil
	}
	return pool.Mapping{}, pool.Errorf(pool.CodeNotFound, "client %s has no mapping for %s", client, domain)
}

// Mappings returns the client's mappings, after a read barrier when
// consistent is set.
func (s *Service) Mappings(ctx context.Context, client string, consistent bool) ([]pool.Mapping, error) {
	if err := pool.ValidateClientID(client); err != nil {
		return nil, err
	}
	// Without consistent the list may be up to B stale, never more: a
	// server that is not current confirms it like a consistent one.
	if consistent || !s.node.LocalReadOK() {
		if err := s.node.ReadBarrier(ctx); err != nil {
			return nil, err
		}
	}
	var out []pool.Mapping
	s.node.Read(func(st *pool.State) { out = st.Mappings(client) })
	return out, nil
}

// Release drops the client's mapping for domain; it reports whether there was one.
func (s *Service) Release(ctx context.Context, client, domain string) (bool, error) {
	if err := pool.ValidateClientID(client); err != nil {
		return false, err
	}
	domain, err := pool.NormalizeDomain(domain)
	if err != nil {
		return false, err
	}
	n, err := s.write(ctx, pool.Op{Kind: pool.OpRelease, Client: client, Domain: domain})
	return n == 1, err
}

// ReleaseClient drops every mapping of the client and returns how many.
func (s *Service) ReleaseClient(ctx context.Context, client string) (int, error) {
	if err := pool.ValidateClientID(client); err != nil {
		return 0, err
	}
	return s.write(ctx, pool.Op{Kind: pool.OpReleaseClient, Client: client})
}

// SetPool changes the pool; mappings outside the new pool are released and
// counted in the result.
func (s *Service) SetPool(ctx context.Context, cfg pool.Config) (int, error) {
	// The limits the log entry's decoder holds a new configuration to,
	// checked before anything is proposed.
	if err := cfg.CheckNew(); err != nil {
		return 0, err
	}
	return s.write(ctx, pool.Op{Kind: pool.OpSetConfig, Config: cfg})
}

// PoolChangeReleases is what SetPool(cfg) would release now: the mappings
// outside cfg and the clients holding them, read after a read barrier so
// that it counts every mapping acknowledged before the call. It changes
// nothing.
func (s *Service) PoolChangeReleases(ctx context.Context, cfg pool.Config) (mappings, clients int, err error) {
	if err := cfg.CheckNew(); err != nil {
		return 0, 0, err
	}
	if err := s.node.ReadBarrier(ctx); err != nil {
		return 0, 0, err
	}
	s.node.Read(func(st *pool.State) { mappings, clients, err = st.Outside(cfg) })
	return mappings, clients, err
}

func (s *Service) write(ctx context.Context, op pool.Op) (int, error) {
	if err := s.admit(ctx); err != nil {
		return 0, err
	}
	op.ID, op.Time = s.node.NextRequestID(), s.opts.Now()
	res, err := s.node.Propose(ctx, []pool.Op{op})
	if err != nil {
		return 0, err
	}
	return res[0].Count, res[0].Err
}

// Snapshot writes a consistent backup: the state after a read barrier, so it
// holds every write acknowledged before the call.
func (s *Service) Snapshot(ctx context.Context, w io.Writer) error {
	if err := s.node.ReadBarrier(ctx); err != nil {
		return err
	}
	// Encoded under the read lock into a file, not memory (a gigabyte at
	// 30M mappings), then sent at the reader's pace outside it.
	f, err := s.node.SpoolFile()
	if err != nil {
		return err
	}
	defer f.Close()
	start := time.Now()
	s.node.Read(func(st *pool.State) {
		err = snapshotpkg.WriteFile(f, snapshotpkg.Contents{Pool: st, ACL: s.node.ACL(), Policy: s.node.Policy()})
	})
	if s.metrics != nil {
		// Applies waited as long as for a Raft snapshot's encoding.
		s.metrics.Snapshot(time.Since(start))
	}
	if err != nil {
		return err
	}
	_, err = io.Copy(w, io.NewSectionReader(f, 0, 1<<62))
	return err
}

// Restore replaces the whole cluster's state with the backup of size bytes
// in snapshot (a file SpoolFile gave, for an upload). The leader checks the
// backup whole, by decoding it, before anything changes; a server that is
// not the leader passes it on unread rather than decode it too.
func (s *Service) Restore(ctx context.Context, snapshot io.ReaderAt, size int64) error {
	return s.node.Restore(ctx, snapshot, size)
}

// SpoolFile returns an empty file, owner-only and removed when closed, to
// receive an upload into before Restore: a backup may be gigabytes.
func (s *Service) SpoolFile() (*os.File, error) { return s.node.SpoolFile() }

func (s *Service) flushMarks() {
	defer close(s.done)
	t := time.NewTicker(s.opts.MarkFlush)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.writeMarks()
		case <-s.stop:
			s.writeMarks()
			return
		}
	}
}

// writeMarks sends the buffered marks as batch entries. A failure is
// logged and counted; the marks are lost, which at worst lets a mapping
// expire up to one window early.
func (s *Service) writeMarks() {
	marks := s.marks.take()
	if len(marks) == 0 {
		return
	}
	ops := make([]pool.Op, len(marks))
	for i, m := range marks {
		ops[i] = pool.Op{Kind: pool.OpMarkUsed, Time: m.at, Client: m.client, Addr: m.addr, Domain: m.domain}
	}
	for len(ops) > 0 {
		chunk := ops[:min(len(ops), 1024)]
		ops = ops[len(chunk):]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := s.node.Propose(ctx, chunk)
		cancel()
		result := "ok"
		if err != nil {
			result = "error"
			s.log.Warn("could not write mark-used batch", "marks", len(chunk), "err", err)
		}
		if s.metrics != nil {
			s.metrics.MarkBatches.WithLabelValues(result).Inc()
		}
	}
}

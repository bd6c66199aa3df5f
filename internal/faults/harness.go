// Package faults proves ippool under faults: it runs a real cluster of
// `ippool serve` processes on loopback (internal/testcluster), drives it with
// concurrent workers that allocate, look up and release through different
// servers (over HTTP, and allocate over DNS too with Config.DNS), records every operation's invocation and completion, injects
// crashes, pauses, partitions, loss, delay and corrupt files, heals, and then
// checks the history with porcupine against the model in model.go, plus
// direct checks: no address acknowledged for two domains at once, every
// acknowledged allocation present after healing unless released,
// byte-identical state on every server, and the time writes took to come
// back after healing.
package faults

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/testcluster"
)

// Config shapes one scenario's cluster and workload.
type Config struct {
	Servers int // 3 or 5
	Workers int
	Clients int
	// Net is set when the scenario uses iptables.
	Net bool
	// DNS gives every server a DNS front end (--dns-addr) in front of an
	// in-process upstream, and adds DNSClient, the client ID the servers
	// give this process's DNS queries, to the model's clients: the workers
	// allocate for it through DNS as well as HTTP (DoDNS).
	DNS bool
	// ReleasePct is the workers' share of releases, in percent (default
	// 5; allocations stay 45). Each release holds its address away from
	// its client for ReuseHold (5 s), so at 20% a client's 16 addresses
	// were mostly held and three allocations in four were exhausted; at 5%
	// holds, reuse after them and exhaustion all still happen.
	ReleasePct int
	// Args are added to every server's flags.
	Args []string
	Seed uint64
}

// RaftTimeout is the servers' heartbeat and election timeout.
const RaftTimeout = 300 * time.Millisecond

// firstIP is the last octet of the first server's 127.0.0.x address:
// 127.0.0.41 and up, away from the e2e tests' 127.0.0.11 and up, which may
// run at the same time. DNS queries come from the address just below.
const firstIP = 41

// DNSSource is the address DoDNS sends its queries from, and DNSClient the
// client ID the servers derive from it (dnsfront names a client by its
// source address).
var (
	DNSSource = netip.AddrFrom4([4]byte{127, 0, 0, firstIP - 1})
	DNSClient = DNSSource.String()
)

// infinity is the return time of a write whose outcome is unknown: it may
// take effect at any point after its call.
const infinity = int64(1) << 62

// Harness is one scenario in progress.
type Harness struct {
	T   testing.TB
	C   *testcluster.Cluster
	Net *testcluster.Net
	Rng *rand.Rand
	cfg Config

	start   time.Time
	http    *http.Client
	clients []string                       // the model's client IDs
	dnsAddr map[*testcluster.Server]string // with Config.DNS
	mu      sync.Mutex
	history []porcupine.Operation
	errs    []string
	// gate: workers hold it shared for each op; Quiesce takes it exclusive.
	gate    sync.RWMutex
	stop    chan struct{}
	wg      sync.WaitGroup
	paused  map[*testcluster.Server]bool
	broken  map[*testcluster.Server]string // refused to start after corruption
	Steps   []string                       // what was injected, for the log
	Unavail []time.Duration                // write unavailability after each heal
}

// New starts the cluster of a scenario (not the workers).
func New(t testing.TB, cfg Config) *Harness {
	t.Helper()
	if cfg.Servers == 0 {
		cfg.Servers = 3
	}
	if cfg.Workers == 0 {
		cfg.Workers = 6
	}
	if cfg.Clients == 0 {
		cfg.Clients = 3
	}
	if cfg.ReleasePct == 0 {
		cfg.ReleasePct = 5
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	h := &Harness{T: t, cfg: cfg, Rng: rand.New(rand.NewPCG(cfg.Seed, 0x1badb002)),
		http:   &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		paused: map[*testcluster.Server]bool{}, broken: map[*testcluster.Server]string{}}
	t.Logf("seed %d (rerun with -faults.seed=%d)", cfg.Seed, cfg.Seed)
	for i := range cfg.Clients {
		h.clients = append(h.clients, fmt.Sprintf("c%d", i))
	}
	if cfg.Net {
		h.Net = testcluster.NewNet(t)
	}
	args := append([]string{"--pool", PoolFlag(), "--raft-timeout", RaftTimeout.String(), "--write-timeout", "2s",
		"--log-level", "info"}, cfg.Args...)
	h.C = testcluster.New(t, cfg.Servers, testcluster.Options{FirstIP: firstIP, Args: args})
	if cfg.DNS {
		h.clients = append(h.clients, DNSClient)
		up := testcluster.StartUpstream(t, dns.HandlerFunc(upstream))
		h.dnsAddr = map[*testcluster.Server]string{}
		for _, s := range h.C.Servers {
			h.dnsAddr[s] = testcluster.FreeDNSAddr(t, s.IP)
			s.Args = append(s.Args, "--dns-addr", h.dnsAddr[s], "--dns-upstream", up, "--dns-rate-limit", "0")
		}
	}
	t.Cleanup(func() {
		for _, s := range h.C.Servers {
			s.Resume()
		}
	})
	return h
}

// Boot starts every server and waits for a leader.
func (h *Harness) Boot() {
	for _, s := range h.C.Servers {
		s.Start()
	}
	h.C.WaitReady(30 * time.Second)
	for _, addr := range h.dnsAddr {
		testcluster.WaitDNS(h.T, addr, 10*time.Second)
	}
	h.start = time.Now()
}

// upstream is the DNS servers' upstream: every domain of the workload
// exists (TEST-NET-1 addresses, outside the pool and not ignored), every
// other name does not.
func upstream(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	switch _, ok := domainIndex(strings.TrimSuffix(strings.ToLower(q.Name), ".")); {
	case !ok:
		m.Rcode = dns.RcodeNameError
	case q.Qtype == dns.TypeA:
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
			A: net.IPv4(192, 0, 2, 1)})
	}
	w.WriteMsg(m)
}

func (h *Harness) now() int64 { return time.Since(h.start).Nanoseconds() }

// Logf logs with the time since the scenario started.
func (h *Harness) Logf(format string, args ...any) {
	h.T.Helper()
	h.T.Logf("[%6.2fs] %s", time.Since(h.start).Seconds(), fmt.Sprintf(format, args...))
}

func (h *Harness) step(format string, args ...any) {
	h.T.Helper()
	s := fmt.Sprintf(format, args...)
	h.Steps = append(h.Steps, s)
	h.Logf("fault: %s", s)
}

func (h *Harness) fail(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errs = append(h.errs, fmt.Sprintf(format, args...))
}

func (h *Harness) record(op porcupine.Operation) {
	h.mu.Lock()
	h.history = append(h.history, op)
	h.mu.Unlock()
}

// History returns a copy of the operations recorded so far.
func (h *Harness) History() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]porcupine.Operation(nil), h.history...)
}

// Clients returns the model's client IDs: c0 and up, and DNSClient with
// Config.DNS.
func (h *Harness) Clients() []string { return h.clients }

func (h *Harness) clientName(i int) string { return h.clients[i] }

// ---- operations ----

type errorBody struct {
	Code  string `json:"code"`
	Error string `json:"error"`
}

// Do runs one operation through server s and records it.
func (h *Harness) Do(worker int, s *testcluster.Server, in Input) Output {
	return h.DoWithin(worker, s, in, 5*time.Second)
}

// DoWithin is Do giving up after timeout (then the outcome is unknown).
func (h *Harness) DoWithin(worker int, s *testcluster.Server, in Input, timeout time.Duration) Output {
	var method, path string
	c := "/v1/clients/" + url.PathEscape(in.Client)
	switch in.Kind {
	case Alloc:
		method, path = http.MethodPost, c+"/domains/"+DomainName(in.Domain)
	case Release:
		method, path = http.MethodDelete, c+"/domains/"+DomainName(in.Domain)
	case Lookup:
		method, path = http.MethodGet, c+"/ips/"+PoolAddr(in.Addr).String()
	case List:
		method, path = http.MethodGet, c+"?consistent=true"
	}
	call := h.now()
	status, body, err := h.requestWithin(s, method, path, timeout)
	ret := h.now()
	out := Output{Outcome: Unknown}
	var eb errorBody
	if err == nil && status != 200 {
		json.Unmarshal(body, &eb)
	}
	switch {
	case err != nil || status == http.StatusServiceUnavailable || status >= 500:
		// Unknown outcome.
	case in.Kind == Alloc && status == 200:
		var m struct{ IP string }
		json.Unmarshal(body, &m)
		out.Outcome, out.Addr = OK, -1
		if a, ok := addrIndex(m.IP); ok {
			out.Addr = a
		} else {
			h.fail("%s: %s answered an address outside the pool: %s", s.ID, describe(in, out), body)
		}
	case in.Kind == Alloc && status == http.StatusConflict && eb.Code == "pool_exhausted":
		out.Outcome = Exhausted
	case in.Kind == Release && status == 200:
		var m struct{ Released bool }
		json.Unmarshal(body, &m)
		out.Outcome, out.Released = OK, m.Released
	case in.Kind == Lookup && status == 200:
		var m struct{ Domain string }
		json.Unmarshal(body, &m)
		out.Outcome, out.Domain = OK, -1
		if d, ok := domainIndex(m.Domain); ok {
			out.Domain = d
		} else {
			h.fail("%s: lookup %s %v answered a domain never asked for: %s", s.ID, in.Client, PoolAddr(in.Addr), body)
		}
	case in.Kind == Lookup && status == http.StatusNotFound && eb.Code == "not_found":
		out.Outcome = NotFound
	case in.Kind == List && status == 200:
		var m struct {
			Mappings []struct{ Domain, IP string }
		}
		json.Unmarshal(body, &m)
		out.Outcome = OK
		for i := range out.Mappings {
			out.Mappings[i] = -1
		}
		for _, e := range m.Mappings {
			a, ok1 := addrIndex(e.IP)
			d, ok2 := domainIndex(e.Domain)
			if !ok1 || !ok2 {
				h.fail("%s: list %s holds a mapping never asked for: %s %s", s.ID, in.Client, e.Domain, e.IP)
				continue
			}
			out.Mappings[a] = int8(d)
		}
	default:
		h.fail("%s: %s answered %d %s", s.ID, describe(in, out), status, body)
	}
	if out.Outcome == Unknown {
		if in.Kind == Lookup || in.Kind == List {
			return out // a read that did not answer constrains nothing
		}
		// A request that never left this process (the server's port was
		// closed) did not happen; recording it as unknown would only make
		// the linearizability check explore outcomes that cannot be.
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return out
		}
		ret = infinity
	}
	h.record(porcupine.Operation{ClientId: worker, Input: in, Call: call, Output: out, Return: ret, Metadata: s.ID})
	return out
}

// DoDNS asks server s's DNS front end, from DNSSource, for the A record of
// domain and records it as an allocation for DNSClient: an address of the
// pool is OK, SERVFAIL naming an exhausted pool (Extended DNS Error) is
// Exhausted, a timeout or any other SERVFAIL is Unknown.
func (h *Harness) DoDNS(worker int, s *testcluster.Server, domain int) Output {
	in := Input{Kind: Alloc, Client: DNSClient, Domain: domain}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(DomainName(domain)), dns.TypeA)
	q.SetEdns0(1232, false) // for the Extended DNS Error
	cl := &dns.Client{Net: "udp", Timeout: 5 * time.Second,
		Dialer: &net.Dialer{Timeout: 5 * time.Second, LocalAddr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(DNSSource, 0))}}
	call := h.now()
	r, _, err := cl.Exchange(q, h.dnsAddr[s])
	ret := h.now()
	out := Output{Outcome: Unknown}
	switch {
	case err != nil:
		// Unknown: the query may have reached the server.
	case r.Rcode == dns.RcodeSuccess:
		out.Outcome, out.Addr = OK, -1
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				if i, ok := addrIndex(a.A.String()); ok {
					out.Addr = i
				}
			}
		}
		if out.Addr < 0 || len(r.Answer) != 1 {
			h.fail("%s: DNS %s answered %v, not one address of the pool", s.ID, describe(in, out), r.Answer)
		}
	case r.Rcode == dns.RcodeServerFailure && strings.Contains(extendedError(r), "pool exhausted"):
		out.Outcome = Exhausted
	case r.Rcode == dns.RcodeServerFailure:
		// Unknown: no quorum, no leader, or the upstream did not answer.
	default:
		h.fail("%s: DNS A %s from %s answered %s (%s)", s.ID, DomainName(domain), DNSSource, dns.RcodeToString[r.Rcode], extendedError(r))
	}
	if out.Outcome == Unknown {
		ret = infinity
	}
	h.record(porcupine.Operation{ClientId: worker, Input: in, Call: call, Output: out, Return: ret, Metadata: s.ID + "/dns"})
	return out
}

// extendedError returns the text of a response's Extended DNS Errors.
func extendedError(r *dns.Msg) string {
	var out []string
	if opt := r.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok {
				out = append(out, e.String())
			}
		}
	}
	return strings.Join(out, "; ")
}

func (h *Harness) request(s *testcluster.Server, method, path string) (int, []byte, error) {
	return h.requestWithin(s, method, path, 5*time.Second)
}

func (h *Harness) requestWithin(s *testcluster.Server, method, path string, timeout time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.URL()+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := h.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Mappings reads client's mappings through s linearizably (GET
// ?consistent=true), without recording the read: domain -> pool index.
func (h *Harness) Mappings(s *testcluster.Server, client string) (map[int]int, error) {
	status, body, err := h.request(s, http.MethodGet, "/v1/clients/"+url.PathEscape(client)+"?consistent=true")
	if err != nil {
		return nil, err
	}
	if status != 200 {
		return nil, fmt.Errorf("%s: list %s: %d %s", s.ID, client, status, body)
	}
	var m struct {
		Mappings []struct{ Domain, IP string }
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	out := map[int]int{}
	for _, e := range m.Mappings {
		a, ok1 := addrIndex(e.IP)
		d, ok2 := domainIndex(e.Domain)
		if ok1 && ok2 {
			out[d] = a
		}
	}
	return out, nil
}

// ---- workers ----

// StartWorkers starts the concurrent workers: each picks a server, a client
// and an operation at random (alloc 45%, lookup 35%, release 20%, or as
// Config.ReleasePct says); half the
// allocations for DNSClient go through DNS.
func (h *Harness) StartWorkers() {
	h.stop = make(chan struct{})
	for w := range h.cfg.Workers {
		rng := rand.New(rand.NewPCG(h.cfg.Seed, uint64(w)+1))
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for {
				select {
				case <-h.stop:
					return
				default:
				}
				h.gate.RLock()
				servers := h.C.Running()
				if len(servers) == 0 {
					servers = h.C.Servers
				}
				s := servers[rng.IntN(len(servers))]
				in := Input{Client: h.clientName(rng.IntN(len(h.clients)))}
				switch r := rng.IntN(100); {
				case r < 45:
					in.Kind, in.Domain = Alloc, rng.IntN(NumDomains)
				case r < 100-h.cfg.ReleasePct:
					in.Kind, in.Addr = Lookup, rng.IntN(PoolSize)
				default:
					in.Kind, in.Domain = Release, rng.IntN(NumDomains)
				}
				var out Output
				if in.Kind == Alloc && in.Client == DNSClient && rng.IntN(2) == 0 {
					out = h.DoDNS(w, s, in.Domain)
				} else {
					out = h.Do(w, s, in)
				}
				h.gate.RUnlock()
				if out.Outcome == Unknown {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
}

// StopWorkers stops the workers and waits for their last operations.
func (h *Harness) StopWorkers() {
	close(h.stop)
	h.wg.Wait()
}

// Quiesce holds the workers between operations and waits until every running
// server has applied the same index; release with the returned function.
func (h *Harness) Quiesce() func() {
	h.gate.Lock()
	h.WaitConverged(30 * time.Second)
	return h.gate.Unlock
}

// ---- faults ----

// Leader waits up to 10s for a leader every running server agrees on.
func (h *Harness) Leader() *testcluster.Server {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if l := h.C.Leader(); l != nil && !h.paused[l] {
			return l
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.T.Fatalf("no leader after 10s")
	return nil
}

// Others returns the servers other than s.
func (h *Harness) Others(s *testcluster.Server) []*testcluster.Server {
	var out []*testcluster.Server
	for _, x := range h.C.Servers {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// Kill SIGKILLs s.
func (h *Harness) Kill(s *testcluster.Server) {
	h.step("SIGKILL %s", s.ID)
	s.Kill()
}

// Restart starts s again with the same data dir.
func (h *Harness) Restart(s *testcluster.Server) {
	h.step("restart %s", s.ID)
	s.Start()
}

// Pause SIGSTOPs s for d, then SIGCONTs it.
func (h *Harness) Pause(s *testcluster.Server, d time.Duration) {
	h.step("SIGSTOP %s for %v", s.ID, d)
	h.paused[s] = true
	s.Pause()
	time.Sleep(d)
	s.Resume()
	delete(h.paused, s)
}

// CrashAll SIGKILLs every server, waits, and restarts them all.
func (h *Harness) CrashAll(down time.Duration) {
	h.step("SIGKILL every server, restart after %v", down)
	for _, s := range h.C.Servers {
		s.Kill()
	}
	time.Sleep(down)
	for _, s := range h.C.Servers {
		if h.broken[s] == "" {
			s.Start()
		}
	}
}

// Isolate cuts s from every other server both ways for d.
func (h *Harness) Isolate(s *testcluster.Server, d time.Duration) {
	h.step("isolate %s for %v", s.ID, d)
	h.Net.Partition([]*testcluster.Server{s}, h.Others(s))
	time.Sleep(d)
	h.Net.Heal()
}

// Split cuts the servers in two groups, both ways, for d.
func (h *Harness) Split(a, b []*testcluster.Server, d time.Duration) {
	h.step("partition %v | %v for %v", ids(a), ids(b), d)
	h.Net.Partition(a, b)
	time.Sleep(d)
	h.Net.Heal()
}

// OneWay drops every packet from one server to another for d.
func (h *Harness) OneWay(from, to *testcluster.Server, d time.Duration) {
	h.step("drop %s -> %s for %v", from.ID, to.ID, d)
	h.Net.Drop(from.IP, to.IP)
	time.Sleep(d)
	h.Net.Heal()
}

// Lossy drops packets on every link between servers with probability p for d.
func (h *Harness) Lossy(p float64, d time.Duration) {
	h.step("%.0f%% loss on every link for %v", p*100, d)
	for _, x := range h.C.Servers {
		for _, y := range h.C.Servers {
			if x != y {
				h.Net.Loss(x.IP, y.IP, p)
			}
		}
	}
	time.Sleep(d)
	h.Net.Heal()
}

// Delay puts every link between servers through a proxy that delays data by
// delay plus up to jitter. Call before Boot: only new connections go
// through it. The proxies are returned to change the delay later.
func (h *Harness) Delay(delay, jitter time.Duration) []*testcluster.DelayProxy {
	h.Steps = append(h.Steps, fmt.Sprintf("delay %v+%v on every link", delay, jitter))
	var out []*testcluster.DelayProxy
	for _, x := range h.C.Servers {
		for _, y := range h.C.Servers {
			if x != y {
				p := testcluster.NewDelayProxy(h.T, y.ClusterAddr, delay, jitter)
				h.Net.Redirect(x.IP, y.ClusterAddr, p.Addr())
				out = append(out, p)
			}
		}
	}
	return out
}

func ids(ss []*testcluster.Server) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}

// ---- corrupt files ----

// lastWAL returns the newest raft-wal segment file of s.
func lastWAL(s *testcluster.Server) (string, error) {
	files, err := filepath.Glob(filepath.Join(s.DataDir, "raft", "*.wal"))
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("%s: no WAL segment in %s/raft (%v)", s.ID, s.DataDir, err)
	}
	sort.Strings(files)
	return files[len(files)-1], nil
}

// CorruptWAL damages s's newest WAL segment while s is stopped, the way a
// crash in the middle of a write does: truncate cuts the file inside its last
// batch (the entries of the last fsync and the commit frame after them);
// otherwise bytes inside that batch are overwritten with garbage. raft-wal
// detects this by the batch's CRC and drops the batch, which Raft then
// fetches again. It checks only that last batch: damage to batches fsynced
// earlier is decay of the disk, not a torn write, and raft-wal does not
// detect it (README, Decisions).
func (h *Harness) CorruptWAL(s *testcluster.Server, truncate bool) {
	path, err := lastWAL(s)
	if err != nil {
		h.T.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		h.T.Fatal(err)
	}
	start, end := lastWALBatch(b)
	if end <= start {
		h.T.Fatalf("%s holds no committed batch", path)
	}
	start = max(start, walFileHeader) // written once, at the segment's creation
	cut := start + h.Rng.IntN(end-start)
	if truncate {
		h.step("%s stopped; truncate %s from %d to %d bytes (last batch %d-%d)", s.ID, filepath.Base(path), len(b), cut, start, end)
		if err := os.Truncate(path, int64(cut)); err != nil {
			h.T.Fatal(err)
		}
		return
	}
	n := 1 + h.Rng.IntN(64)
	h.step("%s stopped; overwrite %d bytes at %d of %s (last batch %d-%d)", s.ID, n, cut, filepath.Base(path), start, end)
	for i := cut; i < min(cut+n, end); i++ {
		b[i] ^= byte(1 + h.Rng.IntN(255))
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		h.T.Fatal(err)
	}
}

// walFileHeader is the length of a raft-wal segment's header.
const walFileHeader = 32

// lastWALBatch returns where the last committed batch of a raft-wal segment
// lies: after the previous commit frame, up to and including the last one.
// Frames are an 8-byte header (type, 3 reserved bytes, little-endian length,
// or CRC for a commit frame) and, for entries and the index, a payload
// padded to 8 bytes; the file starts with a 32-byte header.
func lastWALBatch(b []byte) (start, end int) {
	const (
		frameHeader = 8
		frameEntry  = 1
		frameIndex  = 2
		frameCommit = 3
	)
	prevCommitEnd, lastCommitEnd := 0, 0
	for off := walFileHeader; off+frameHeader <= len(b); {
		switch b[off] {
		case frameEntry, frameIndex:
			n := int(binary.LittleEndian.Uint32(b[off+4 : off+8]))
			off += frameHeader + (n+7)&^7
		case frameCommit:
			prevCommitEnd, lastCommitEnd = lastCommitEnd, off+frameHeader
			off += frameHeader
		default:
			return prevCommitEnd, lastCommitEnd
		}
	}
	return prevCommitEnd, lastCommitEnd
}

// CorruptSnapshot damages s's newest snapshot (state.bin) while s is
// stopped. It reports false when s has no snapshot.
func (h *Harness) CorruptSnapshot(s *testcluster.Server, truncate bool) bool {
	dirs, _ := filepath.Glob(filepath.Join(s.DataDir, "snapshots", "*", "state.bin"))
	if len(dirs) == 0 {
		return false
	}
	sort.Strings(dirs)
	path := dirs[len(dirs)-1]
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 2 {
		return false
	}
	if truncate {
		cut := h.Rng.IntN(len(b))
		h.step("%s stopped; truncate snapshot %s from %d to %d bytes", s.ID, rel(s, path), len(b), cut)
		os.Truncate(path, int64(cut))
		return true
	}
	at := h.Rng.IntN(len(b))
	h.step("%s stopped; flip a byte at %d of snapshot %s", s.ID, at, rel(s, path))
	b[at] ^= 0x5a
	os.WriteFile(path, b, 0o600)
	return true
}

func rel(s *testcluster.Server, path string) string {
	r, _ := filepath.Rel(s.DataDir, path)
	return r
}

// RestartDamaged starts s after its files were damaged and waits for one of
// the two acceptable outcomes: it serves and catches up, or it exits
// non-zero with an error in its log. It reports whether s is serving.
func (h *Harness) RestartDamaged(s *testcluster.Server) bool {
	h.Restart(s)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if !s.Running() {
			code := s.ExitCode()
			log := s.Log()
			last := lastLines(log, 3)
			if code == 0 {
				h.fail("%s exited with status 0 after its files were damaged: %s", s.ID, last)
			} else if !strings.Contains(strings.ToLower(last), "error") && !strings.Contains(strings.ToLower(last), "fail") {
				h.fail("%s exited with status %d but no clear error: %s", s.ID, code, last)
			}
			h.broken[s] = last
			h.Logf("%s refused to start (status %d): %s", s.ID, code, last)
			return false
		}
		if s.Ready() {
			h.Logf("%s recovered from damaged files and is ready", s.ID)
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.fail("%s neither served nor exited within 20s after its files were damaged", s.ID)
	return false
}

// RequireAllServing waits until every server is ready (but those that
// refused their damaged files earlier); a server that exits
// instead (a panic, a log it cannot open) is a violation, reported with the
// end of its output.
func (h *Harness) RequireAllServing(timeout time.Duration) {
	h.T.Helper()
	deadline := time.Now().Add(timeout)
	waiting := map[*testcluster.Server]bool{}
	for _, s := range h.C.Servers {
		if h.broken[s] == "" {
			waiting[s] = true
		}
	}
	for len(waiting) > 0 && time.Now().Before(deadline) {
		for s := range waiting {
			switch {
			case !s.Running():
				h.fail("%s exited (status %d) instead of coming back: %s", s.ID, s.ExitCode(), exitReason(s.Log()))
				h.broken[s] = "exited at restart"
				delete(waiting, s)
			case s.Ready():
				delete(waiting, s)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	for s := range waiting {
		h.fail("%s did not become ready within %v of its restart", s.ID, timeout)
	}
}

// exitReason picks the line that says why a process ended: a Go panic's
// message if it panicked (its stack trace is the rest of the output), else
// the last lines.
func exitReason(log string) string {
	if i := strings.LastIndex(log, "\npanic: "); i >= 0 {
		line, _, _ := strings.Cut(log[i+1:], "\n")
		return line
	}
	return lastLines(log, 3)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// ---- healing and checks ----

// Heal ends every fault: network rules go, paused servers resume, stopped
// servers (except those that refused their damaged files) start again. It
// then measures how long until a write succeeds, through any server.
func (h *Harness) Heal() time.Duration {
	h.T.Helper()
	healed := time.Now()
	if h.Net != nil {
		h.Net.Heal()
	}
	for _, s := range h.C.Servers {
		s.Resume()
		if !s.Running() && h.broken[s] == "" {
			s.Start()
		}
	}
	h.Logf("healed")
	probe := 0
	for {
		servers := h.C.Running()
		s := servers[probe%len(servers)]
		status, body, err := h.request(s, http.MethodPost, fmt.Sprintf("/v1/clients/probe/domains/p%d.example", probe))
		probe++
		if err == nil && status == 200 {
			break
		}
		if time.Since(healed) > 30*time.Second {
			h.T.Fatalf("no write succeeded within 30s of healing (last: %d %s %v)", status, body, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(healed)
	h.Unavail = append(h.Unavail, took)
	h.Logf("writes available %v after healing", took.Round(time.Millisecond))
	return took
}

// WaitConverged waits until every running, unpaused server has applied the
// same index, twice in a row.
func (h *Harness) WaitConverged(timeout time.Duration) {
	h.T.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	same := 0
	for time.Now().Before(deadline) {
		var idx []string
		ok := true
		var first uint64
		for i, s := range h.C.Running() {
			st, err := s.Status()
			if err != nil {
				ok = false
				break
			}
			if i == 0 {
				first = st.Applied
			} else if st.Applied != first {
				ok = false
			}
			idx = append(idx, fmt.Sprintf("%s:%d", s.ID, st.Applied))
		}
		key := strings.Join(idx, ",")
		if ok && key == last {
			same++
			if same >= 2 {
				return
			}
		} else {
			same = 0
		}
		last = key
		time.Sleep(100 * time.Millisecond)
	}
	h.T.Fatalf("servers did not converge on one applied index within %v: %s", timeout, last)
}

// WaitNoHolds waits until no running server reports an address under a
// reuse hold: the leader lifts each hold with a log entry ReuseHold after the
// release, so the state keeps changing that long after the last release.
func (h *Harness) WaitNoHolds(timeout time.Duration) {
	h.T.Helper()
	deadline := time.Now().Add(timeout)
	for {
		held := 0
		for _, s := range h.C.Running() {
			st, err := s.Status()
			if err != nil {
				held = -1
				break
			}
			held += st.HeldAddresses
		}
		if held == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.T.Fatalf("addresses still held %v after the last release (%d)", timeout, held)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ConvergedDigests waits until the running servers have applied the same
// index and returns their digests (Digests) read at that one index: a
// server whose applied index moved while it was read (the leader lifting a
// reuse hold, with no workers running) is read again.
func (h *Harness) ConvergedDigests() map[string]string {
	h.T.Helper()
	for try := 0; ; try++ {
		h.WaitConverged(30 * time.Second)
		out, same := map[string]string{}, true
		var at uint64
		for i, s := range h.C.Running() {
			before, err1 := s.Status()
			d := h.Digests(s)
			after, err2 := s.Status()
			if err1 != nil || err2 != nil || before.Applied != after.Applied || (i > 0 && after.Applied != at) {
				same = false
				break
			}
			at = after.Applied
			out[s.ID] = d[s.ID]
		}
		if same {
			return out
		}
		if try == 20 {
			h.T.Fatalf("could not read every server's state at one applied index in %d tries", try+1)
		}
	}
}

// Digests returns the SHA-256 of GET /v1/snapshot of each of servers, by
// default every running server. Call after WaitConverged with no writes
// running: equal states give byte-identical snapshots (S9).
func (h *Harness) Digests(servers ...*testcluster.Server) map[string]string {
	h.T.Helper()
	if len(servers) == 0 {
		servers = h.C.Running()
	}
	out := map[string]string{}
	for _, s := range servers {
		status, body, err := h.request(s, http.MethodGet, "/v1/snapshot")
		if err != nil || status != 200 {
			h.T.Fatalf("%s: snapshot: %d %v", s.ID, status, err)
		}
		sum := sha256.Sum256(body)
		out[s.ID] = hex.EncodeToString(sum[:8])
	}
	return out
}

// Result sums up a checked scenario.
type Result struct {
	Ops        int
	Unknown    int
	Violations []string
	Unavail    time.Duration // longest write unavailability after a heal
	Digest     string
}

// Totals sums the results of several runs for the suite's summary line.
type Totals struct {
	Result
	Runs int
}

func (t *Totals) Add(r Result) {
	t.Ops += r.Ops
	t.Unknown += r.Unknown
	t.Violations = append(t.Violations, r.Violations...)
	t.Unavail = max(t.Unavail, r.Unavail)
	t.Runs++
}

// Summary is the line the closing notes quote; what names the runs.
func (t *Totals) Summary(what string) string {
	return fmt.Sprintf("SUMMARY: %d %s, %d operations checked (%d with unknown outcome), %d violations, longest write unavailability after healing %v",
		t.Runs, what, t.Ops, t.Unknown, len(t.Violations), t.Unavail.Round(time.Millisecond))
}

// Finish heals, measures write availability, stops the workers, reads every
// client's mappings linearizably, and runs every check. Failures are
// reported with t.Error and returned.
func (h *Harness) Finish(name string) Result {
	h.T.Helper()
	h.Heal()
	h.C.WaitReady(30 * time.Second)
	time.Sleep(time.Second) // work on the healed cluster
	h.StopWorkers()

	// The final state, read linearizably through each server in turn.
	for i := range h.clients {
		servers := h.C.Running()
		in := Input{Kind: List, Client: h.clientName(i)}
		for try := 0; ; try++ {
			if out := h.Do(-1, servers[(i+try)%len(servers)], in); out.Outcome != Unknown {
				break
			}
			if try > 50 {
				h.fail("could not read %s's mappings after healing", in.Client)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	digests := h.ConvergedDigests()

	res := Result{}
	history := h.History()
	for _, op := range history {
		if op.ClientId >= 0 {
			res.Ops++
			if op.Output.(Output).Outcome == Unknown {
				res.Unknown++
			}
		}
	}
	h.mu.Lock()
	res.Violations = append(res.Violations, h.errs...)
	h.mu.Unlock()

	// Byte-identical state.
	var ref string
	for id, d := range digests {
		if ref == "" {
			ref = d
		}
		if d != ref {
			res.Violations = append(res.Violations, fmt.Sprintf("state digests differ after healing: %v", digests))
			break
		}
		_ = id
	}
	res.Digest = ref

	res.Violations = append(res.Violations, checkDoubleAck(history)...)
	res.Violations = append(res.Violations, checkDurable(history)...)

	// Linearizability.
	check, info := porcupine.CheckOperationsVerbose(Model, history, 2*time.Minute)
	switch check {
	case porcupine.Illegal:
		if dir := os.Getenv("FAULTS_DUMP"); dir != "" {
			for i := range h.clients {
				os.WriteFile(filepath.Join(dir, sanitize(name)+"-"+h.clientName(i)+".txt"), []byte(dumpClient(history, h.clientName(i))), 0o644)
			}
		}
		h.explain(info)
		file := filepath.Join(os.TempDir(), "ippool-faults-"+sanitize(name)+".html")
		if err := porcupine.VisualizePath(Model, info, file); err == nil {
			res.Violations = append(res.Violations, "history is not linearizable; visualization in "+file)
		} else {
			res.Violations = append(res.Violations, "history is not linearizable")
		}
	case porcupine.Unknown:
		h.Logf("linearizability check timed out (inconclusive)")
	}
	for _, u := range h.Unavail {
		res.Unavail = max(res.Unavail, u)
	}
	h.Logf("%s: %d ops (%d unknown outcome), linearizable=%v, digest %s on %d servers, write unavailability after healing %v, faults: %s",
		name, res.Ops, res.Unknown, check, ref, len(digests), res.Unavail.Round(time.Millisecond), strings.Join(h.Steps, "; "))
	for _, v := range res.Violations {
		h.T.Errorf("VIOLATION: %s", v)
	}
	return res
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

// ackHold is the interval in which an acknowledged allocation certainly
// holds: from its return until the call of the first release of the same
// domain that may have come after it.
type ackHold struct {
	client       string
	domain, addr int
	from, to     int64
	server       any
}

func holds(history []porcupine.Operation) []ackHold {
	var out []ackHold
	for _, a := range history {
		in, o := a.Input.(Input), a.Output.(Output)
		if in.Kind != Alloc || o.Outcome != OK {
			continue
		}
		hold := ackHold{client: in.Client, domain: in.Domain, addr: o.Addr, from: a.Return, to: infinity, server: a.Metadata}
		stale := false
		for _, r := range history {
			ri, ro := r.Input.(Input), r.Output.(Output)
			if ri.Kind != Release || ri.Client != in.Client || ri.Domain != in.Domain {
				continue
			}
			if r.Return >= a.Call {
				hold.to = min(hold.to, r.Call)
			} else if ro.Released && a.Call-r.Return < int64(ReuseHold) {
				// May be a stale answer of d's address from before the
				// release (stale by at most B < Q): not an
				// acknowledgment to hold.
				stale = true
			}
		}
		if stale {
			continue
		}
		if hold.to > hold.from {
			out = append(out, hold)
		}
	}
	return out
}

// checkDoubleAck finds a client address acknowledged for two domains at
// times when neither could have been released.
func checkDoubleAck(history []porcupine.Operation) []string {
	hs := holds(history)
	var out []string
	for i, a := range hs {
		for _, b := range hs[i+1:] {
			if a.client == b.client && a.addr == b.addr && a.domain != b.domain && a.from < b.to && b.from < a.to {
				out = append(out, fmt.Sprintf("client %s address %v acknowledged for %s (by %v, held %s) and %s (by %v, held %s) at once",
					a.client, PoolAddr(a.addr), DomainName(a.domain), a.server, span(a.from, a.to), DomainName(b.domain), b.server, span(b.from, b.to)))
				if len(out) > 5 {
					return out
				}
			}
		}
	}
	return out
}

// checkDurable checks that every acknowledged allocation that no release
// could have undone is in the final state read after healing.
func checkDurable(history []porcupine.Operation) []string {
	final := map[string]Output{}
	for _, op := range history {
		if in := op.Input.(Input); in.Kind == List {
			final[in.Client] = op.Output.(Output)
		}
	}
	var out []string
	for _, hd := range holds(history) {
		if hd.to != infinity {
			continue
		}
		f, ok := final[hd.client]
		if !ok {
			continue
		}
		if int(f.Mappings[hd.addr]) != hd.domain {
			out = append(out, fmt.Sprintf("acknowledged allocation %s %s -> %v (by %v) is missing after healing (final: %s)",
				hd.client, DomainName(hd.domain), PoolAddr(hd.addr), hd.server, describe(Input{Kind: List, Client: hd.client}, f)))
		}
	}
	return out
}

func span(from, to int64) string {
	f := func(t int64) string {
		if t == infinity {
			return "end"
		}
		return fmt.Sprintf("%.3fs", float64(t)/1e9)
	}
	return f(from) + "-" + f(to)
}

// dumpClient writes the operations of one client, in call order, for
// diagnosis.
func dumpClient(history []porcupine.Operation, client string) string {
	var ops []porcupine.Operation
	for _, op := range history {
		if op.Input.(Input).Client == client {
			ops = append(ops, op)
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	var b strings.Builder
	for _, op := range ops {
		fmt.Fprintf(&b, "%s %v %s\n", span(op.Call, op.Return), op.Metadata, describe(op.Input.(Input), op.Output.(Output)))
	}
	return b.String()
}

// explain logs, for each partition that failed, the end of the longest
// linearization found and the operations that could not follow it.
func (h *Harness) explain(info porcupine.LinearizationInfo) {
	parts := info.PartialLinearizationsOperations()
	for _, lins := range parts {
		var best []porcupine.Operation
		for _, l := range lins {
			if len(l) > len(best) {
				best = l
			}
		}
		if len(best) == 0 {
			continue
		}
		client := best[0].Input.(Input).Client
		var full []porcupine.Operation
		for _, op := range h.History() {
			if op.Input.(Input).Client == client {
				full = append(full, op)
			}
		}
		if len(best) == len(full) {
			continue
		}
		var b strings.Builder
		var last int64
		for _, op := range best[max(0, len(best)-8):] {
			fmt.Fprintf(&b, "  ok   %s %v %s\n", span(op.Call, op.Return), op.Metadata, describe(op.Input.(Input), op.Output.(Output)))
		}
		for _, op := range best {
			last = max(last, op.Call)
		}
		done := map[int64]bool{}
		for _, op := range best {
			done[op.Call*7+op.Return] = true
		}
		var pending []porcupine.Operation
		for _, op := range full {
			if !done[op.Call*7+op.Return] && op.Return != infinity {
				pending = append(pending, op)
			}
		}
		sort.Slice(pending, func(i, j int) bool { return pending[i].Return < pending[j].Return })
		for _, op := range pending[:min(4, len(pending))] {
			fmt.Fprintf(&b, "  STUCK %s %v %s\n", span(op.Call, op.Return), op.Metadata, describe(op.Input.(Input), op.Output.(Output)))
		}
		h.Logf("client %s: %d of %d operations linearized; the longest linearization ends:\n%s", client, len(best), len(full), b.String())
	}
}

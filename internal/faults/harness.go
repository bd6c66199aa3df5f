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
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
	"github.com/ippool/ippool/wire"
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
	gate   sync.RWMutex
	stop   chan struct{}
	wg     sync.WaitGroup
	paused map[*testcluster.Server]bool
	broken map[*testcluster.Server]string // refused to start after corruption
	// token is the admin token Boot bootstrapped; every request sends it.
	token   string
	Steps   []string        // what was injected, for the log
	Unavail []time.Duration // write unavailability after each heal
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
	// Every worker sends the one admin token, so the per-token write rate
	// limit would throttle the whole workload as one caller: it is set
	// far above what the workers reach, so it runs without shaping them.
	args := append([]string{"--pool", PoolFlag(), "--raft-timeout", RaftTimeout.String(), "--write-timeout", "2s",
		"--log-level", "info", "--http-write-rate", "1000000", "--http-write-burst", "1000000"}, cfg.Args...)
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
	h.bootstrapACL(h.C.WaitReady(30 * time.Second))
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
			// A documentation address (RFC 5737) outside this host's
			// networks: the resolver drops private and local answers.
			A: net.IPv4(203, 0, 113, 1)})
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
	var eb wire.Error
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

// bootstrapACL turns access control on, as a production cluster runs: every
// request of the workers and checks carries the admin token from then on.
func (h *Harness) bootstrapACL(leader *testcluster.Server) {
	h.T.Helper()
	var tok wire.Token
	var status int
	var body []byte
	var err error
	if !poll.Wait(10*time.Second, func() bool {
		status, body, err = h.request(leader, http.MethodPost, "/v1/acl/bootstrap")
		return err == nil && status == 200 && json.Unmarshal(body, &tok) == nil && tok.Secret != ""
	}) {
		h.T.Fatalf("bootstrapping ACLs on %s: %d %s %v", leader.ID, status, body, err)
	}
	h.token = tok.Secret
	h.C.SetToken(tok.Secret)
}

// Authorize adds the harness's token to a request.
func (h *Harness) Authorize(req *http.Request) {
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
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
	h.Authorize(req)
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

package main

// bench: a closed-loop load generator. Workers each run one operation at a
// time, as fast as the servers answer, for a duration or a number of
// operations, and the latencies of successful operations are reported per
// kind. The names it allocates are fresh for each run (--prefix), so a run
// measures allocation rather than the answers of an earlier run.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
)

// BenchCmd is `ippool bench`.
type BenchCmd struct {
	Clients     int           `help:"Number of client IDs to spread the load over." default:"100"`
	Domains     int           `help:"Domains per client that new allocations draw from." default:"100"`
	Concurrency int           `help:"Operations in flight at once (workers)." default:"16"`
	Duration    time.Duration `help:"How long to run; the run stops at --duration or --ops, whichever first." default:"10s"`
	Ops         int64         `help:"Stop after this many operations (0: no limit)." default:"0"`
	Mix         string        `help:"Percentages of operation kinds: new (allocate a name not yet allocated by this run), repeat (allocate one already allocated), lookup (look up an address this run got)." default:"new=20,repeat=60,lookup=20"`
	Prefix      string        `help:"Domain name prefix (default: a random run ID, so every run allocates fresh names)."`
	Keep        bool          `help:"Keep the run's mappings; without it the run's clients (bench-0 to bench-N) are released at the end, so that a benchmark leaves the pool as it found it."`
	JSON        bool          `name:"json" help:"Print the summary as JSON."`
}

func (c *BenchCmd) Help() string {
	return "Workers are spread round robin over the --addr servers. Example:\n\n    ippool --addr 10.0.0.1:7480,10.0.0.2:7480 bench --duration 30s --concurrency 64 --mix new=10,repeat=50,lookup=40"
}

type opKind int

const (
	opNew opKind = iota
	opRepeat
	opLookup
	numKinds
)

var kindNames = [numKinds]string{"new", "repeat", "lookup"}

// mix holds the percentage of each kind; they sum to 100.
type mix [numKinds]int

// parseMix reads "new=20,repeat=60,lookup=20". Kinds left out get 0.
func parseMix(s string) (mix, error) {
	var m mix
	var seen [numKinds]bool
	total := 0
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return m, fmt.Errorf("--mix: %q is not kind=percent", part)
		}
		k := slices.Index(kindNames[:], strings.TrimSpace(name))
		if k < 0 {
			return m, fmt.Errorf("--mix: unknown kind %q (want new, repeat or lookup)", name)
		}
		if seen[k] {
			return m, fmt.Errorf("--mix: %s is given twice", name)
		}
		seen[k] = true
		n, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil || n < 0 || n > 100 {
			return m, fmt.Errorf("--mix: %s=%s is not a percentage from 0 to 100", name, val)
		}
		m[k] = n
		total += n
	}
	if total != 100 {
		return m, fmt.Errorf("--mix: percentages add up to %d, not 100", total)
	}
	return m, nil
}

func (m mix) String() string {
	parts := make([]string, numKinds)
	for k := range numKinds {
		parts[k] = fmt.Sprintf("%s=%d", kindNames[k], m[k])
	}
	return strings.Join(parts, ",")
}

// pick maps a number in [0,100) to a kind.
func (m mix) pick(r int) opKind {
	for k := range numKinds {
		if r < m[k] {
			return k
		}
		r -= m[k]
	}
	return opNew
}

// maxSamples bounds the latencies kept in memory over all workers; beyond
// it each worker keeps a uniform sample (reservoir sampling).
const maxSamples = 2_000_000

// reservoir keeps up to cap latencies out of seen, uniformly chosen, plus
// the exact maximum.
type reservoir struct {
	cap  int
	seen int64
	kept []time.Duration
	max  time.Duration
}

func (r *reservoir) add(d time.Duration, rng *mrand.Rand) {
	r.seen++
	r.max = max(r.max, d)
	if len(r.kept) < r.cap {
		r.kept = append(r.kept, d)
		return
	}
	// Algorithm R: the n-th sample replaces a kept one with chance cap/n.
	if j := rng.Int64N(r.seen); j < int64(r.cap) {
		r.kept[j] = d
	}
}

// sample is a latency standing for weight operations: reservoirs that
// dropped samples are merged with their samples weighted up, so that a
// worker that ran more operations counts for more.
type sample struct {
	d      time.Duration
	weight float64
}

// percentiles returns, for each q in qs (0 < q <= 1), the smallest latency
// at or below which a fraction q of the weight lies (nearest rank).
func percentiles(s []sample, qs []float64) []time.Duration {
	out := make([]time.Duration, len(qs))
	if len(s) == 0 {
		return out
	}
	slices.SortFunc(s, func(a, b sample) int {
		switch {
		case a.d < b.d:
			return -1
		case a.d > b.d:
			return 1
		}
		return 0
	})
	total := 0.0
	for _, x := range s {
		total += x.weight
	}
	for i, q := range qs {
		target := q * total
		acc := 0.0
		out[i] = s[len(s)-1].d
		for _, x := range s {
			acc += x.weight
			// A little slack for rounding in the sum of weights.
			if acc >= target-1e-9*total {
				out[i] = x.d
				break
			}
		}
	}
	return out
}

// workerStats is one worker's record; no locks, merged at the end.
type workerStats struct {
	ops    [numKinds]int64
	errs   [numKinds]map[string]int64
	lat    [numKinds]reservoir
	rng    *mrand.Rand
	errCnt atomic.Int64 // read by the progress line
	opCnt  atomic.Int64
}

// run is the state the workers share: which (client, domain) pairs this run
// allocated, and the address each got. Slot k is client k%clients and
// domain k/clients, so the first allocations spread over every client.
type run struct {
	cmd     *BenchCmd
	mix     mix
	prefix  string
	ips     []atomic.Uint32 // 0: not (yet) allocated
	next    atomic.Int64    // next slot for a new allocation
	started atomic.Int64    // operations begun, for --ops
	stop    atomic.Bool
}

func (r *run) clientOf(k int) string { return "bench-" + strconv.Itoa(k%r.cmd.Clients) }
func (r *run) domainOf(k int) string {
	return r.prefix + "-" + strconv.Itoa(k/r.cmd.Clients) + ".bench.example"
}

// allocated returns a random slot this run got an address for, if it finds
// one in a few tries.
func (r *run) allocated(rng *mrand.Rand) (int, bool) {
	n := min(r.next.Load(), int64(len(r.ips)))
	if n == 0 {
		return 0, false
	}
	for range 4 {
		k := int(rng.Int64N(n))
		if r.ips[k].Load() != 0 {
			return k, true
		}
	}
	return 0, false
}

func u32(a netip.Addr) uint32 {
	if !a.Is4() {
		return 0
	}
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// one runs one operation; it returns its kind and the error code, "" on
// success. Ops that cannot draw on earlier allocations become new ones.
func (r *run) one(bc *benchConn, rng *mrand.Rand) (opKind, string) {
	kind := r.mix.pick(rng.IntN(100))
	k, ok := 0, false
	if kind != opNew {
		k, ok = r.allocated(rng)
		if !ok {
			kind = opNew
		}
	}
	if kind == opNew {
		n := r.next.Add(1) - 1
		if n >= int64(len(r.ips)) {
			// Every name has been handed out: allocate any again.
			k = int(rng.Int64N(int64(len(r.ips))))
			if r.ips[k].Load() != 0 {
				kind = opRepeat
			}
		} else {
			k = int(n)
		}
	}
	cid, dom := r.clientOf(k), r.domainOf(k)
	switch kind {
	case opNew, opRepeat:
		m, code := bc.do("POST", "/v1/clients/"+cid+"/domains/"+dom)
		if code != "" {
			return kind, code
		}
		ip := m.IP
		if !ip.Is4() {
			return kind, "bad_answer"
		}
		old := r.ips[k].Swap(u32(ip))
		// This run's names are its own, and far from expiry: an address
		// that changed means an allocation was lost.
		if kind == opRepeat && old != 0 && old != u32(ip) {
			return kind, "ip_changed"
		}
		return kind, ""
	default:
		ip := addr(r.ips[k].Load())
		m, code := bc.do("GET", "/v1/clients/"+cid+"/ips/"+ip.String())
		if code != "" {
			return kind, code
		}
		if m.Domain != dom {
			return kind, "domain_mismatch"
		}
		return kind, ""
	}
}

func (c *BenchCmd) validate() (mix, error) {
	m, err := parseMix(c.Mix)
	switch {
	case err != nil:
		return m, err
	case c.Clients < 1 || c.Domains < 1:
		return m, errors.New("--clients and --domains must be at least 1")
	case int64(c.Clients)*int64(c.Domains) > 1<<26:
		return m, fmt.Errorf("--clients x --domains is %d; at most %d names fit in memory here", int64(c.Clients)*int64(c.Domains), 1<<26)
	case c.Concurrency < 1 || c.Concurrency > 100_000:
		return m, errors.New("--concurrency must be between 1 and 100000")
	case c.Duration <= 0 && c.Ops <= 0:
		return m, errors.New("give a positive --duration or --ops")
	case c.Ops < 0:
		return m, errors.New("--ops must not be negative")
	}
	if c.Prefix != "" {
		if err := validPrefix(c.Prefix); err != nil {
			return m, err
		}
	}
	return m, nil
}

// validPrefix keeps the prefix a DNS label, so that the names it makes are
// valid domains.
func validPrefix(p string) error {
	if len(p) > 40 {
		return fmt.Errorf("--prefix %q is longer than 40 characters", p)
	}
	for i, ch := range p {
		ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' && i > 0
		if !ok {
			return fmt.Errorf("--prefix %q: use letters, digits and inner hyphens", p)
		}
	}
	return nil
}

func (c *BenchCmd) Run(cli *CLI) error {
	m, err := c.validate()
	if err != nil {
		return err
	}
	prefix := c.Prefix
	if prefix == "" {
		var b [4]byte
		rand.Read(b[:])
		prefix = "r" + hex.EncodeToString(b[:])
	}
	tlsCfg, err := cli.httpsConfig()
	if err != nil {
		return err
	}
	conns := make([]*benchConn, c.Concurrency)
	for i := range conns {
		// Workers are spread round robin over the servers; each stays on
		// its own, and fails over on its own when that server goes away.
		if conns[i], err = newBenchConn(cli.Addr, i, cli.Timeout); err != nil {
			return err
		}
		conns[i].tls = tlsCfg
		conns[i].token = cli.Token
	}
	r := &run{cmd: c, mix: m, prefix: prefix, ips: make([]atomic.Uint32, c.Clients*c.Domains)}

	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	perCap := max(1, maxSamples/(c.Concurrency*int(numKinds)))
	workers := make([]*workerStats, c.Concurrency)
	for i := range workers {
		w := &workerStats{rng: mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))}
		for k := range numKinds {
			w.errs[k] = map[string]int64{}
			w.lat[k].cap = perCap
		}
		workers[i] = w
	}

	start := time.Now()
	if c.Duration > 0 {
		t := time.AfterFunc(c.Duration, func() { r.stop.Store(true) })
		defer t.Stop()
	}
	go func() { <-ctx.Done(); r.stop.Store(true) }()

	var wg sync.WaitGroup
	for i, w := range workers {
		bc := conns[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer bc.close()
			for !r.stop.Load() {
				if c.Ops > 0 && r.started.Add(1) > c.Ops {
					return
				}
				t0 := time.Now()
				kind, code := r.one(bc, w.rng)
				d := time.Since(t0)
				if ctx.Err() != nil {
					return // interrupted by Ctrl-C: not the server's fault
				}
				w.ops[kind]++
				w.opCnt.Add(1)
				if code != "" {
					w.errs[kind][code]++
					w.errCnt.Add(1)
				} else {
					w.lat[kind].add(d, w.rng)
				}
			}
		}()
	}

	done := make(chan struct{})
	var progressWG sync.WaitGroup
	if isTerminal(os.Stderr) {
		progressWG.Add(1)
		go func() {
			defer progressWG.Done()
			progress(os.Stderr, workers, start, done)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(done)
	progressWG.Wait()

	sum := summarize(workers, elapsed)
	sum.Prefix, sum.Servers, sum.Concurrency, sum.Clients, sum.Domains, sum.Mix = prefix, cli.Addr, c.Concurrency, c.Clients, c.Domains, m.String()
	if limited := sum.errorsWithCode("rate_limited"); limited > 0 {
		fmt.Fprintf(stderr, "%d operations were refused as rate_limited: a server holds each caller (its token, or its address without ACLs) to --http-write-rate writes a second (1,000 by default). To measure the cluster rather than the limit, start the servers with --http-write-rate 0, or give the benchmark a token of its own per --http-write-rate's share.\n", limited)
	}
	if !c.Keep {
		released, err := c.releaseClients(cli)
		if err != nil {
			fmt.Fprintf(stderr, "releasing the run's clients: %v (ippool release bench-N releases one)\n", err)
		} else {
			fmt.Fprintf(stderr, "released the run's %d mappings (clients bench-0 to bench-%d; --keep keeps them)\n", released, c.Clients-1)
		}
	}
	if c.JSON {
		return printJSON(sum)
	}
	return writeSummary(stdout, sum)
}

// releaseClients releases every mapping of the run's clients.
func (c *BenchCmd) releaseClients(cli *CLI) (int, error) {
	cl, err := cli.client()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(cli.Timeout, time.Minute))
	defer cancel()
	total := 0
	for k := range c.Clients {
		n, err := cl.ReleaseClient(ctx, "bench-"+strconv.Itoa(k))
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// isTerminal reports whether f is a terminal, where a redrawn progress line
// makes sense; in a pipe or a log it would be noise.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress redraws one status line every 200ms until done, then clears it.
func progress(w io.Writer, workers []*workerStats, start time.Time, done <-chan struct{}) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var lastOps int64
	last := start
	for {
		select {
		case <-done:
			fmt.Fprintf(w, "\r%-70s\r", "")
			return
		case now := <-tick.C:
			var ops, errs int64
			for _, wk := range workers {
				ops += wk.opCnt.Load()
				errs += wk.errCnt.Load()
			}
			rate := float64(ops-lastOps) / now.Sub(last).Seconds()
			lastOps, last = ops, now
			fmt.Fprintf(w, "\r%6.1fs  %10d ops  %9.0f ops/s  %d errors   ", now.Sub(start).Seconds(), ops, rate, errs)
		}
	}
}

// kindSummary is one row of the report. Latencies are of successful
// operations, in milliseconds.
type kindSummary struct {
	Count     int64            `json:"count"`
	Errors    int64            `json:"errors"`
	ErrorCode map[string]int64 `json:"errors_by_code,omitempty"`
	OpsPerSec float64          `json:"ops_per_second"`
	P50       float64          `json:"p50_ms"`
	P90       float64          `json:"p90_ms"`
	P99       float64          `json:"p99_ms"`
	P999      float64          `json:"p99_9_ms"`
	Max       float64          `json:"max_ms"`
}

type benchSummary struct {
	Prefix      string                 `json:"prefix"`
	Servers     []string               `json:"servers"`
	Concurrency int                    `json:"concurrency"`
	Clients     int                    `json:"clients"`
	Domains     int                    `json:"domains"`
	Mix         string                 `json:"mix"`
	Elapsed     float64                `json:"elapsed_seconds"`
	Total       kindSummary            `json:"total"`
	Kinds       map[string]kindSummary `json:"ops"`
}

func summarize(workers []*workerStats, elapsed time.Duration) benchSummary {
	qs := []float64{0.5, 0.9, 0.99, 0.999}
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	secs := elapsed.Seconds()
	build := func(kinds []opKind) kindSummary {
		ks := kindSummary{ErrorCode: map[string]int64{}}
		var s []sample
		var mx time.Duration
		for _, w := range workers {
			for _, k := range kinds {
				ks.Count += w.ops[k]
				for code, n := range w.errs[k] {
					ks.Errors += n
					ks.ErrorCode[code] += n
				}
				res := &w.lat[k]
				mx = max(mx, res.max)
				if len(res.kept) > 0 {
					wt := float64(res.seen) / float64(len(res.kept))
					for _, d := range res.kept {
						s = append(s, sample{d, wt})
					}
				}
			}
		}
		if secs > 0 {
			ks.OpsPerSec = math.Round(float64(ks.Count)/secs*10) / 10
		}
		p := percentiles(s, qs)
		ks.P50, ks.P90, ks.P99, ks.P999, ks.Max = ms(p[0]), ms(p[1]), ms(p[2]), ms(p[3]), ms(mx)
		if len(ks.ErrorCode) == 0 {
			ks.ErrorCode = nil
		}
		return ks
	}
	sum := benchSummary{Elapsed: math.Round(secs*1000) / 1000, Kinds: map[string]kindSummary{}}
	for k := range numKinds {
		sum.Kinds[kindNames[k]] = build([]opKind{k})
	}
	sum.Total = build([]opKind{opNew, opRepeat, opLookup})
	return sum
}

func writeSummary(w io.Writer, s benchSummary) error {
	fmt.Fprintf(w, "%.1fs against %s, %d workers, %d clients x %d domains, mix %s, prefix %s\n\n",
		s.Elapsed, strings.Join(s.Servers, ","), s.Concurrency, s.Clients, s.Domains, s.Mix, s.Prefix)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tcount\terrors\tops/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\t")
	row := func(name string, k kindSummary) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t\n", name, k.Count, k.Errors, k.OpsPerSec, k.P50, k.P90, k.P99, k.P999, k.Max)
	}
	for _, name := range kindNames {
		row(name, s.Kinds[name])
	}
	row("total", s.Total)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, name := range kindNames {
		codes := s.Kinds[name].ErrorCode
		if len(codes) == 0 {
			continue
		}
		keys := make([]string, 0, len(codes))
		for code := range codes {
			keys = append(keys, code)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, code := range keys {
			parts[i] = fmt.Sprintf("%s=%d", code, codes[code])
		}
		fmt.Fprintf(w, "errors of %s: %s\n", name, strings.Join(parts, " "))
	}
	return nil
}

// errorsWithCode is how many operations of every kind failed with code.
func (s benchSummary) errorsWithCode(code string) int64 {
	return s.Total.ErrorCode[code]
}

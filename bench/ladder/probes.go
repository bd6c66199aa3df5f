package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// upstreamAddr is the ladder's own upstream resolver: every name under
// ladder.test has one public address, so the DNS front end maps it.
const upstreamAddr = "127.0.0.160:7869"

func startUpstream(addr string) *dns.Server {
	srv := &dns.Server{Addr: addr, Net: "udp", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeA {
			h := fnv.New32a()
			h.Write([]byte(q.Question[0].Name))
			ip := netip.AddrFrom4([4]byte{203, 0, 113, byte(h.Sum32()%250 + 1)})
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600}, A: ip.AsSlice()})
		}
		w.WriteMsg(m)
	})}
	up := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(up) }
	go func() {
		if err := srv.ListenAndServe(); err != nil {
			log.Fatalf("upstream resolver: %v", err)
		}
	}()
	<-up
	return srv
}

// dnsperf measures mapped names on s as bench/dns-vs-unbound.sh does: one
// pass maps 1,000 names (one client, dnsperf's source), then dnsperf -c 8
// -T 1 asks them for d. It returns queries a second, 0 when dnsperf is not
// installed (apt-get install dnsperf).
func dnsperf(work string, s *server, d time.Duration) float64 {
	if _, err := exec.LookPath("dnsperf"); err != nil {
		log.Printf("  no dnsperf: DNS not measured")
		return 0
	}
	file := filepath.Join(work, "names.txt")
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, "n%d.ladder.test A\n", i)
	}
	check(os.WriteFile(file, []byte(b.String()), 0o600))
	host, port, _ := net.SplitHostPort(s.dns())
	out, err := exec.Command("dnsperf", "-s", host, "-p", port, "-d", file, "-n", "1", "-c", "1", "-q", "20").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "NOERROR 1000 ") {
		log.Fatalf("mapping the names over DNS: %v\n%s", err, out)
	}
	out, err = exec.Command("dnsperf", "-s", host, "-p", port, "-d", file, "-c", "8", "-T", "1",
		"-l", strconv.Itoa(int(d.Seconds()))).CombinedOutput()
	check(err)
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Queries per second:"); ok {
			q, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return q
		}
	}
	log.Fatalf("no rate in dnsperf's output:\n%s", out)
	return 0
}

// gcSample is where a server's collector stood at one moment: the CPU the
// process had used and how far its log, where GODEBUG=gctrace=1 writes a
// line per collection, had grown.
type gcSample struct {
	server *server
	ticks  int64 // user and system CPU, in clock ticks
	logAt  int64
}

func sampleGC(s *server) gcSample {
	g := gcSample{server: s, ticks: cpuTicks(s.cmd.Process.Pid)}
	if fi, err := os.Stat(s.dir + ".log"); err == nil {
		g.logAt = fi.Size()
	}
	return g
}

// since is the collector's share of the CPU the server used between the
// sample and now, and the 99th percentile of its stop-the-world pauses
// then, both from the gctrace lines of the collections in between:
//
//	gc 7 @1.2s 3%: 0.02+4.1+0.03 ms clock, 0.04+0.5/2.0/1.1+0.06 ms cpu, ...
//
// The clock triple's first and last are the pauses; the CPU fields sum to
// the cycle's CPU. (runtime/metrics' /cpu/classes/gc counts a cycle when
// it ends, and its pause histogram has buckets a decade wide: too coarse
// for a window of seconds.)
func (before gcSample) since() (share, p99 float64) {
	ticks := cpuTicks(before.server.cmd.Process.Pid) - before.ticks
	f, err := os.Open(before.server.dir + ".log")
	check(err)
	defer f.Close()
	fi, err := f.Stat()
	check(err)
	var pauses []float64
	gcCPU := 0.0
	sc := bufio.NewScanner(io.NewSectionReader(f, before.logAt, fi.Size()-before.logAt))
	for sc.Scan() {
		line := sc.Text()
		head, rest, ok := strings.Cut(line, "%: ")
		clock, rest2, ok2 := strings.Cut(rest, " ms clock, ")
		cpu, _, ok3 := strings.Cut(rest2, " ms cpu")
		if !strings.HasPrefix(head, "gc ") || !ok || !ok2 || !ok3 {
			continue
		}
		if parts := strings.Split(clock, "+"); len(parts) == 3 {
			for _, p := range []string{parts[0], parts[2]} {
				if ms, err := strconv.ParseFloat(p, 64); err == nil {
					pauses = append(pauses, ms/1000)
				}
			}
		}
		for _, p := range strings.FieldsFunc(cpu, func(r rune) bool { return r == '+' || r == '/' }) {
			if ms, err := strconv.ParseFloat(p, 64); err == nil {
				gcCPU += ms / 1000
			}
		}
	}
	if ticks > 0 {
		share = min(1, gcCPU/(float64(ticks)/clockTicks))
	}
	if len(pauses) == 0 {
		return share, 0
	}
	sort.Float64s(pauses)
	return share, pauses[min(len(pauses)-1, int(math.Ceil(0.99*float64(len(pauses))))-1)]
}

// clockTicks is the kernel's USER_HZ, the unit of /proc's CPU times: 100
// on every Linux this runs on.
const clockTicks = 100

// cpuTicks is the CPU a process has used, user and system.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	check(err)
	// The command name, in parentheses, may hold spaces: count from after it.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return utime + stime
}

// expiryStep restores n mappings last used within one second, with a
// lifetime of 30 s, so that all of them go idle at once, and measures
// what forgetting them costs a load of new allocations that runs across
// that moment: its rate and latencies, and how long until every server
// has forgotten them. A row goes to the CSV out.
func expiryStep(bin, work, out string, servers []*server, n, perClient, domainBytes int) {
	const lifetime = 30 * time.Second
	const reuseHold = 5 * time.Second // pool.ReuseHold
	clients := max(101, n/perClient)
	n = clients * perClient
	log.Printf("expiry step: %d mappings (%d clients) idle at once", n, clients)
	file := filepath.Join(work, "expiry.snap")
	t0 := time.Now()
	run(exec.Command(bin, "snapshot", "generate", "--clients", strconv.Itoa(clients), "--mappings-per-client", strconv.Itoa(perClient),
		"--domain-bytes", strconv.Itoa(domainBytes), "--lifetime", lifetime.String(), "--used-within", "1s", "--out", file))
	// The generator's now is at or after t0, so the batch is forgettable
	// from idleAt on.
	idleAt := t0.Add(lifetime + reuseHold)
	run(exec.Command(bin, "--addr", leaderOf(servers).http(), "--timeout", "10m", "snapshot", "restore", file))
	for _, s := range servers {
		waitFor(time.Minute, s.id+" to hold the batch", func() bool { return usageMappings(s) == n })
	}
	os.Remove(file)
	if time.Until(idleAt) < 5*time.Second {
		log.Fatalf("the batch was restored too late to watch it go idle (%v before)", time.Until(idleAt))
	}
	var heapBefore float64
	for _, s := range servers {
		get(s, "/debug/pprof/heap?gc=1")
		heapBefore = max(heapBefore, metric(s, "go_memstats_heap_alloc_bytes"))
	}
	time.Sleep(time.Until(idleAt.Add(-5 * time.Second)))
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.http()
	}
	load := make(chan benchSummary, 1)
	go func() { load <- bench(bin, strings.Join(addrs, ","), "new=100", 15*time.Second, 100, 10_000) }()
	// Forgotten on every server: none of the batch's clients is left
	// (the load's own are 100).
	waitFor(2*time.Minute, "the batch to be forgotten", func() bool {
		for _, s := range servers {
			if usageClients(s) > 100 {
				return false
			}
		}
		return true
	})
	forgotten := time.Since(idleAt)
	during := (<-load).Kinds["new"]
	var heapAfter float64
	for _, s := range servers {
		get(s, "/debug/pprof/heap?gc=1")
		heapAfter = max(heapAfter, metric(s, "go_memstats_heap_alloc_bytes"))
	}
	log.Printf("  forgotten everywhere %.2f s after going idle; new allocations meanwhile %.0f/s, p50 %.2f, p99 %.2f, max %.1f ms",
		forgotten.Seconds(), during.OpsPerSec, during.P50, during.P99, during.Max)

	appendCSV(out, []string{"time", "mappings", "clients", "forgotten_s", "new_per_s", "new_p50_ms", "new_p99_ms", "new_max_ms", "heap_mb_before", "heap_mb_after"},
		[]string{time.Now().UTC().Format(time.RFC3339), strconv.Itoa(n), strconv.Itoa(clients),
			fmt.Sprintf("%.2f", forgotten.Seconds()), fmt.Sprintf("%.0f", during.OpsPerSec), fmt.Sprintf("%.2f", during.P50),
			fmt.Sprintf("%.2f", during.P99), fmt.Sprintf("%.1f", during.Max), fmt.Sprintf("%.1f", heapBefore/1e6), fmt.Sprintf("%.1f", heapAfter/1e6)})
}

func usageClients(s *server) int {
	c, _ := usage(s)
	return c
}

// onlineRestoreStep restores n mappings while new allocations run at 64
// callers over the three servers, and records what the restore did to them:
// their rate, latencies and errors by code over the load run, which spans
// the restore. Writes a restore cuts off fail with aborted_by_restore; the
// others wait for it. A row goes to the CSV out.
func onlineRestoreStep(bin, work, out string, servers []*server, n, perClient, domainBytes int) {
	clients := max(1, n/perClient)
	n = clients * perClient
	log.Printf("online restore: %d mappings under load", n)
	file := filepath.Join(work, "online.snap")
	run(exec.Command(bin, "snapshot", "generate", "--clients", strconv.Itoa(clients), "--mappings-per-client", strconv.Itoa(perClient),
		"--domain-bytes", strconv.Itoa(domainBytes), "--seed", "7", "--out", file))
	defer os.Remove(file)
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.http()
	}
	quiet := bench(bin, strings.Join(addrs, ","), "new=100", 5*time.Second, 1000, 1000).Kinds["new"]
	// Long enough to start before the restore and end after it: the
	// restore's time at this size, from the rungs, is about 4 s a million.
	span := 10*time.Second + time.Duration(n/1_000_000)*5*time.Second
	load := make(chan benchSummary, 1)
	go func() { load <- bench(bin, strings.Join(addrs, ","), "new=100", span, 1000, 1000) }()
	time.Sleep(3 * time.Second)
	term0 := termOf(leaderOf(servers))
	t0 := time.Now()
	run(exec.Command(bin, "--addr", leaderOf(servers).http(), "--timeout", "10m", "snapshot", "restore", file))
	for _, s := range servers {
		waitFor(10*time.Minute, s.id+" to hold the restored state", func() bool { return usageMappings(s) >= n })
	}
	restored := time.Since(t0)
	during := (<-load).Kinds["new"]
	elections := termOf(leaderOf(servers)) - term0
	log.Printf("  restored in %.1f s under load; allocations %.0f/s (quiet: %.0f/s), p99 %.1f ms (quiet %.1f), max %.0f ms, %d of %d failed %v; elections %d",
		restored.Seconds(), during.OpsPerSec, quiet.OpsPerSec, during.P99, quiet.P99, during.Max, during.Errors, during.Count, during.ErrorCode, elections)
	codes, _ := json.Marshal(during.ErrorCode)
	appendCSV(out, []string{"time", "mappings", "restore_s", "quiet_per_s", "quiet_p99_ms", "during_per_s", "during_p50_ms", "during_p99_ms", "during_max_ms", "errors", "ops", "errors_by_code", "elections"},
		[]string{time.Now().UTC().Format(time.RFC3339), strconv.Itoa(n), fmt.Sprintf("%.2f", restored.Seconds()),
			fmt.Sprintf("%.0f", quiet.OpsPerSec), fmt.Sprintf("%.2f", quiet.P99), fmt.Sprintf("%.0f", during.OpsPerSec),
			fmt.Sprintf("%.2f", during.P50), fmt.Sprintf("%.2f", during.P99), fmt.Sprintf("%.1f", during.Max),
			strconv.FormatInt(during.Errors, 10), strconv.FormatInt(during.Count, 10), string(codes), strconv.FormatUint(elections, 10)})
}

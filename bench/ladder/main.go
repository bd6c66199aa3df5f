// Command ladder measures a three-server ippool cluster on this machine
// (mutual TLS, default flags but the quotas) at growing states, each made
// by `ippool snapshot generate` and loaded with `snapshot restore`, and
// appends a CSV row per rung (issue 32; docs/scale.md):
//
//	go run ./bench/ladder -rungs 1000000,3000000 -out bench/scale.csv
//
// At each rung: the time to generate and restore, every server's RSS and
// Go heap (live, after a collection) and their bytes per mapping, the data dir, `snapshot save`, a
// follower's restart to ready, a fourth server's join and catch-up by
// snapshot install, the elections the rung caused, the longest GC pause,
// new allocations a second with p50 and p99
// at 64 callers over the three servers, and lookups on a follower. The
// servers listen on 127.0.0.161-163 (HTTP 7860, cluster 7861); every
// process it starts it stops, by PID.
//
// Each rung also measures DNS mapped names on a follower (dnsperf, from
// Debian's package), and the collector's share of CPU and its pause p99
// over the load runs. After the rungs, the expiry step (-expiry) restores
// a batch that goes idle at once and times its forgetting under load; its
// row goes to the CSV named like -out with -expiry.
// `go run ./bench/plot` draws docs/scale-*.png from the CSVs.
package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type server struct {
	id, ip, dir string
	args, env   []string
	cmd         *exec.Cmd
	log         *os.File
}

func (s *server) http() string { return s.ip + ":7860" }
func (s *server) dns() string  { return s.ip + ":7863" }

func main() {
	rungs := flag.String("rungs", "1000000,3000000,10000000,30000000", "mappings at each rung, comma-separated")
	perClient := flag.Int("per-client", 100, "mappings a client")
	domainBytes := flag.Int("domain-bytes", 40, "length of each name")
	bin := flag.String("bin", "", "ippool binary (default: built from this checkout)")
	out := flag.String("out", "bench/scale.csv", "CSV to append a row per rung to")
	benchFor := flag.Duration("bench", 10*time.Second, "length of each load run")
	expiry := flag.Int("expiry", 1_000_000, "mappings that go idle at once in the expiry step after the rungs (0: no such step)")
	online := flag.String("online-restore", "", "sizes (mappings, comma-separated) of the online-restore step after the rungs: a restore while new allocations run")
	memLimit := flag.String("memlimit", "5GiB", "each server's GOMEMLIMIT: four servers share this machine, so each is given what a machine of about 6 GB would give it (serve's --memory-limit-ratio 0.9 of a cgroup's limit); empty: none")
	replaceFrom := flag.Int("replace-join-from", 20_000_000, "from this many mappings on, the join step wipes a follower instead of adding a fourth server (memory)")
	keep := flag.Bool("keep", false, "keep the work dir (servers' logs) even when the ladder ends well")
	flag.Parse()

	work, err := os.MkdirTemp("", "ippool-ladder-")
	check(err)
	log.Printf("work dir %s (servers' logs there; removed when the ladder ends well, unless -keep)", work)
	if !*keep {
		defer os.RemoveAll(work)
	}
	upstream := startUpstream(upstreamAddr)
	defer upstream.Shutdown()
	if *bin == "" {
		*bin = filepath.Join(work, "ippool")
		run(exec.Command("go", "build", "-o", *bin, "./cmd/ippool"))
	}
	run(exec.Command(*bin, "tls", "init", "--dir", filepath.Join(work, "tls"), "--servers", "4"))

	// Three servers, and a fourth that joins at each rung and leaves.
	all := make([]*server, 4)
	var joins []string
	for i := range all {
		ip := fmt.Sprintf("127.0.0.%d", 161+i)
		if i < 3 {
			joins = append(joins, ip+":7861")
		}
		all[i] = &server{id: fmt.Sprintf("s%d", i+1), ip: ip, dir: filepath.Join(work, fmt.Sprintf("s%d", i+1))}
	}
	servers, joiner := all[:3], all[3]
	for i, s := range all {
		tls := filepath.Join(work, "tls", fmt.Sprintf("server-%d", i+1))
		s.args = []string{"serve", "--id", s.id, "--data-dir", s.dir, "--http-addr", s.http(), "--cluster-addr", s.ip + ":7861",
			"--join", strings.Join(joins, ","), "--bootstrap-expect", "3",
			"--tls-ca", filepath.Join(tls, "ca.pem"), "--tls-cert", filepath.Join(tls, "cert.pem"), "--tls-key", filepath.Join(tls, "key.pem"),
			// The rungs are past the default quotas, which exist to bound
			// what strangers make the cluster hold, not what it can.
			"--max-clients", "2147483648", "--max-mappings", "0", "--max-mappings-per-client", "0", "--max-domain-bytes", "0",
			// Nor the write rate a caller may make: the load generator is
			// one caller, and at 1,000 writes a second (the default) nearly
			// all of its allocations were refused, and counted as done.
			"--http-write-rate", "0",
			// DNS as bench/dns-vs-unbound.sh runs it: dnsperf is one source.
			"--dns-addr", s.dns(), "--dns-domains", "ladder.test", "--dns-upstream", upstreamAddr,
			"--dns-rate-limit", "0", "--dns-new-clients-rate", "0",
			"--pprof", "--log-level", "warn"}
		if *memLimit != "" {
			s.env = []string{"GOMEMLIMIT=" + *memLimit}
		}
		if i < 3 {
			s.start(*bin)
		}
	}
	stopAll := func() {
		for _, s := range all {
			s.stop()
		}
	}
	defer stopAll()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; stopAll(); os.Exit(1) }()
	for _, s := range servers {
		waitReady(s, 2*time.Minute)
	}

	for _, n := range sizes(*rungs) {
		appendCSV(*out, header, rung(*bin, work, servers, joiner, n >= *replaceFrom, n, *perClient, *domainBytes, *benchFor))
	}
	for _, n := range sizes(*online) {
		onlineRestoreStep(*bin, work, strings.TrimSuffix(*out, ".csv")+"-online-restore.csv", servers, n, *perClient, *domainBytes)
	}
	if *expiry > 0 {
		expiryStep(*bin, work, strings.TrimSuffix(*out, ".csv")+"-expiry.csv", servers, *expiry, *perClient, *domainBytes)
	}
}

var header = []string{"time", "mappings", "clients", "domain_bytes", "generate_s", "snapshot_bytes", "restore_s", "applied_everywhere_s",
	"rss_mb_max", "heap_mb_max", "rss_bytes_per_mapping", "heap_bytes_per_mapping", "data_dir_mb", "save_s", "restart_ready_s",
	"new_per_s", "new_p50_ms", "new_p99_ms", "lookup_follower_per_s", "lookup_p99_ms",
	"join_caught_up_s", "elections", "gc_pause_max_ms",
	"rss_peak_mb", "dns_follower_qps", "gc_cpu_share", "gc_pause_p99_ms", "snapshot_encode_mean_s", "load_errors"}

func rung(bin, work string, servers []*server, joiner *server, replaceJoin bool, n, perClient, domainBytes int, benchFor time.Duration) []string {
	clients := max(1, n/perClient)
	n = clients * perClient
	log.Printf("rung %d mappings (%d clients)", n, clients)
	file := filepath.Join(work, fmt.Sprintf("rung-%d.snap", n))
	t0 := time.Now()
	run(exec.Command(bin, "snapshot", "generate", "--clients", strconv.Itoa(clients), "--mappings-per-client", strconv.Itoa(perClient),
		"--domain-bytes", strconv.Itoa(domainBytes), "--out", file))
	gen := time.Since(t0)
	fi, err := os.Stat(file)
	check(err)

	leader := leaderOf(servers)
	term0 := termOf(leader)
	t0 = time.Now()
	if out, err := exec.Command(bin, "--addr", leader.http(), "--timeout", "10m", "snapshot", "restore", file).CombinedOutput(); err != nil {
		// Recorded (the elections column counts it), and tried once more,
		// so that one lost leadership does not lose the rung.
		log.Printf("  restore failed, trying again: %v: %s", err, out)
		run(exec.Command(bin, "--addr", leaderOf(servers).http(), "--timeout", "10m", "snapshot", "restore", file))
	}
	restore := time.Since(t0)
	for _, s := range servers {
		waitFor(10*time.Minute, s.id+" to hold the rung", func() bool { return usageMappings(s) == n })
	}
	applied := time.Since(t0)
	step := func(what string) { log.Printf("  %s: term %d (started at %d)", what, termOf(leaderOf(servers)), term0) }
	step("restored")
	os.Remove(file)

	var joined time.Duration
	if replaceJoin {
		// A follower loses its disk: removed, wiped and started again, it
		// joins as a new server and catches up by a snapshot sent over the
		// network. Four servers of tens of millions of mappings do not fit
		// this machine's memory; three do.
		var lost *server
		for _, s := range servers {
			if s != leaderOf(servers) {
				lost = s
			}
		}
		lost.stop()
		run(exec.Command(bin, "--addr", leaderOf(servers).http(), "cluster", "remove", lost.id))
		os.RemoveAll(lost.dir)
		t0 = time.Now()
		lost.start(bin)
		waitFor(10*time.Minute, lost.id+" to join afresh and catch up", func() bool { return usageMappings(lost) == n })
		joined = time.Since(t0)
		step("a follower lost its disk, joined afresh and caught up")
	} else {
		// A fourth server with an empty data dir joins and catches up by a
		// snapshot sent over the network, then leaves for the next rung.
		os.RemoveAll(joiner.dir)
		t0 = time.Now()
		joiner.start(bin)
		waitFor(10*time.Minute, joiner.id+" to join and catch up", func() bool { return usageMappings(joiner) == n })
		joined = time.Since(t0)
		joiner.stop()
		run(exec.Command(bin, "--addr", leaderOf(servers).http(), "cluster", "remove", joiner.id))
		step("a fourth server joined, caught up and left")
	}

	var rss, heap, peak float64
	for _, s := range servers {
		// Before the follower's restart, which starts its count again.
		peak = max(peak, float64(procStatus(s.cmd.Process.Pid, "VmHWM:")))
	}
	for _, s := range servers {
		// A collection first, so that the heap is what the state holds,
		// not the garbage of the restore.
		get(s, "/debug/pprof/heap?gc=1")
		rss = max(rss, float64(procStatus(s.cmd.Process.Pid, "VmRSS:")))
		heap = max(heap, metric(s, "go_memstats_heap_alloc_bytes"))
	}
	dataDir := dirSize(servers[0].dir)

	var follower *server
	for _, s := range servers {
		if s != leader {
			follower = s
		}
	}
	t0 = time.Now()
	run(exec.Command(bin, "--addr", follower.http(), "--timeout", "10m", "snapshot", "save", filepath.Join(work, "save.snap")))
	save := time.Since(t0)
	// The save's encoding (applies wait meanwhile), with any Raft
	// snapshot's, read before the restart below starts the count again.
	encodeSum := metric(follower, "ippool_snapshot_encode_seconds_sum")
	encodeCount := metric(follower, "ippool_snapshot_encode_seconds_count")
	os.Remove(filepath.Join(work, "save.snap"))

	follower.stop()
	t0 = time.Now()
	follower.start(bin)
	waitReady(follower, 10*time.Minute)
	restart := time.Since(t0)
	step("saved, and a follower restarted")

	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.http()
	}
	gc0 := make([]gcSample, len(servers))
	for i, s := range servers {
		gc0[i] = sampleGC(s)
	}
	newRun := bench(bin, strings.Join(addrs, ","), "new=100", benchFor, 1000, 1000)
	lookupRun := bench(bin, follower.http(), "new=5,lookup=95", benchFor, 1000, 1000)
	dnsQPS := dnsperf(work, follower, benchFor)
	var gcShare, pauseP99 float64
	for i := range servers {
		share, p99 := gc0[i].since()
		gcShare, pauseP99 = max(gcShare, share), max(pauseP99, p99)
	}
	elections := termOf(leaderOf(servers)) - term0
	var pause float64
	for _, s := range servers {
		pause = max(pause, metric(s, `go_gc_duration_seconds{quantile="1"}`))
	}
	mb := func(b float64) string { return strconv.FormatFloat(b/1e6, 'f', 1, 64) }
	sec := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) }
	return []string{time.Now().UTC().Format(time.RFC3339), strconv.Itoa(n), strconv.Itoa(clients), strconv.Itoa(domainBytes),
		sec(gen), strconv.FormatInt(fi.Size(), 10), sec(restore), sec(applied),
		mb(rss), mb(heap), strconv.Itoa(int(rss / float64(n))), strconv.Itoa(int(heap / float64(n))), mb(float64(dataDir)),
		sec(save), sec(restart),
		fmt.Sprintf("%.0f", newRun.Kinds["new"].OpsPerSec), fmt.Sprintf("%.2f", newRun.Kinds["new"].P50), fmt.Sprintf("%.2f", newRun.Kinds["new"].P99),
		fmt.Sprintf("%.0f", lookupRun.Kinds["lookup"].OpsPerSec), fmt.Sprintf("%.2f", lookupRun.Kinds["lookup"].P99),
		sec(joined), strconv.FormatUint(elections, 10), fmt.Sprintf("%.1f", pause*1000),
		mb(peak), fmt.Sprintf("%.0f", dnsQPS), fmt.Sprintf("%.3f", gcShare), fmt.Sprintf("%.2f", pauseP99*1000),
		fmt.Sprintf("%.3f", encodeSum/max(encodeCount, 1)), strconv.FormatInt(newRun.Total.Errors+lookupRun.Total.Errors, 10)}
}

type benchKind struct {
	Count     int64            `json:"count"`
	Errors    int64            `json:"errors"`
	ErrorCode map[string]int64 `json:"errors_by_code"`
	OpsPerSec float64          `json:"ops_per_second"`
	P50       float64          `json:"p50_ms"`
	P99       float64          `json:"p99_ms"`
	Max       float64          `json:"max_ms"`
}

type benchSummary struct {
	Total benchKind            `json:"total"`
	Kinds map[string]benchKind `json:"ops"`
}

func bench(bin, addrs, mix string, d time.Duration, clients, domains int) benchSummary {
	b, err := exec.Command(bin, "--addr", addrs, "bench", "--duration", d.String(), "--concurrency", "64",
		"--clients", strconv.Itoa(clients), "--domains", strconv.Itoa(domains), "--mix", mix, "--json").Output()
	check(err)
	var s benchSummary
	check(json.Unmarshal(b, &s))
	if s.Total.Errors > 0 {
		log.Printf("  bench %s: %d of %d operations failed: %v", mix, s.Total.Errors, s.Total.Count, s.Total.ErrorCode)
	}
	return s
}

func (s *server) start(bin string) {
	var err error
	s.log, err = os.OpenFile(s.dir+".log", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	check(err)
	s.cmd = exec.Command(bin, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// A line per collection in the log, for the pauses (gcSample).
	s.cmd.Env = append(append(os.Environ(), "GODEBUG=gctrace=1"), s.env...)
	// The servers die with the ladder, however it ends.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	check(s.cmd.Start())
}

func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		s.cmd.Process.Kill()
		<-done
	}
	s.log.Close()
	s.cmd = nil
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func get(s *server, path string) ([]byte, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.http()+path, nil)
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, 0
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return []byte(b.String()), resp.StatusCode
}

func waitReady(s *server, within time.Duration) {
	waitFor(within, s.id+" to be ready", func() bool { _, code := get(s, "/readyz"); return code == 200 })
}

func leaderOf(servers []*server) *server {
	var id string
	waitFor(time.Minute, "a leader", func() bool {
		b, _ := get(servers[0], "/v1/cluster")
		var st struct {
			Leader string `json:"leader_id"`
		}
		json.Unmarshal(b, &st)
		id = st.Leader
		return id != ""
	})
	for _, s := range servers {
		if s.id == id {
			return s
		}
	}
	log.Fatalf("leader %s is not one of the servers", id)
	return nil
}

// termOf is the Raft term s is in: each election moves it on.
func termOf(s *server) uint64 {
	b, _ := get(s, "/v1/cluster")
	var st struct {
		Term uint64 `json:"term"`
	}
	json.Unmarshal(b, &st)
	return st.Term
}

// usage is what s holds: its clients and mappings.
func usage(s *server) (clients, mappings int) {
	b, _ := get(s, "/v1/cluster")
	var st struct {
		Usage struct {
			Clients  int `json:"clients"`
			Mappings int `json:"mappings"`
		} `json:"usage"`
	}
	json.Unmarshal(b, &st)
	return st.Usage.Clients, st.Usage.Mappings
}

func usageMappings(s *server) int {
	_, m := usage(s)
	return m
}

// sizes parses a comma-separated list of mappings; "" is none (the
// expiry step alone).
func sizes(list string) []int {
	var out []int
	for _, r := range strings.Split(list, ",") {
		if strings.TrimSpace(r) == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(r))
		check(err)
		out = append(out, n)
	}
	return out
}

// appendCSV adds row to the CSV at path, with header first in a new file.
func appendCSV(path string, header, row []string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	check(err)
	defer f.Close()
	w := csv.NewWriter(f)
	if fi, _ := f.Stat(); fi.Size() == 0 {
		w.Write(header)
	}
	w.Write(row)
	w.Flush()
	check(w.Error())
}

func metric(s *server, name string) float64 {
	b, _ := get(s, "/metrics")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// procStatus is a size from a process's /proc status (VmRSS: its resident
// set, VmHWM: the most it has held), in bytes.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func waitFor(within time.Duration, what string, ok func() bool) {
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			log.Fatalf("waited %v for %s", within, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func run(cmd *exec.Cmd) {
	if out, err := cmd.CombinedOutput(); err != nil {
		log.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func init() {
	// Fatal errors skip deferred calls; the servers die with the ladder
	// (Pdeathsig), and its logs stay in the work dir, which it names.
	log.SetFlags(log.LstdFlags)
}

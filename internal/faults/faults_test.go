package faults

import (
	"encoding/binary"
	"flag"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/testcluster"
)

var seedFlag = flag.Uint64("faults.seed", 0, "seed of the randomized choices (0: from the clock)")

// scenario is one named fault schedule.
type scenario struct {
	name string
	cfg  Config
	// before runs after the cluster is prepared, before it boots.
	before func(h *Harness)
	run    func(h *Harness)
}

// Snapshot often, so there are snapshot files to damage.
var snapArgs = []string{"--snapshot-threshold", "64", "--snapshot-interval", "300ms"}

// shortScenarios run in CI: each fault kind once, a little over 2 minutes in all.
var shortScenarios = []scenario{
	{name: "kill-leader-and-follower", run: func(h *Harness) {
		l := h.Leader()
		h.Kill(l)
		h.Hold(2 * time.Second)
		f := h.Others(h.Leader())[0]
		if f == l {
			f = h.Others(h.Leader())[1]
		}
		h.Restart(l)
		h.Hold(time.Second)
		h.Kill(f)
		h.Hold(time.Second)
	}},
	{name: "pause-leader-past-election-timeout", run: func(h *Harness) {
		h.Pause(h.Leader(), 6*RaftTimeout)
		h.Hold(time.Second)
		h.Pause(h.Leader(), 3*time.Second)
	}},
	{name: "full-cluster-crash", run: func(h *Harness) {
		h.CrashAll(500 * time.Millisecond)
		h.C.WaitReady(30 * time.Second)
		h.Hold(time.Second)
	}},
	{name: "partition-isolate-leader-and-one-way", cfg: Config{Net: true}, run: func(h *Harness) {
		h.Isolate(h.Leader(), 3*time.Second)
		h.Hold(time.Second)
		l := h.Leader()
		h.OneWay(l, h.Others(l)[0], 2*time.Second)
	}},
	{name: "partition-minority-5-servers-with-loss", cfg: Config{Net: true, Servers: 5}, run: func(h *Harness) {
		l := h.Leader()
		others := h.Others(l)
		h.Rng.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
		h.Split(append(others[:1:1], l), others[1:], 3*time.Second)
		h.Hold(time.Second)
		h.Lossy(0.2, 3*time.Second)
	}},
	{name: "delay-and-leader-kill", cfg: Config{Net: true},
		before: func(h *Harness) { h.Delay(15*time.Millisecond, 15*time.Millisecond) },
		run: func(h *Harness) {
			h.Hold(time.Second)
			h.Kill(h.Leader())
			h.Hold(2 * time.Second)
		}},
	{name: "corrupt-wal-tail-and-snapshot", cfg: Config{Args: snapArgs}, run: corruptScenario},
	{name: "deposed-leader-tail-truncated-then-full-crash", cfg: Config{Net: true}, run: truncatedTailScenario},
	// Few releases, so that the clients hold mappings when F is cut off.
	{name: "cut-off-follower-answers-stay-true", cfg: Config{Net: true, DNS: true, ReleasePct: 3}, run: cutOffFollowerScenario},
}

// cutOffFollowerScenario cuts a follower F off from the other servers for
// cutOff while the workers keep running on both sides, and dedicated
// goroutines ask F over and over: HTTP lookups of every pool address of
// every client, HTTP allocations and DNS queries of the domains F knows
// (and of others). A lookup F does not answer within lookupWait is
// abandoned (a read without an answer constrains nothing), so the sweeps
// stay quick once F sends lookups through its read barrier; there are only
// two sweeps per client, because many concurrent reads make an illegal
// history expensive to prove illegal. Early in the cut the leader releases mappings F holds and
// then keeps allocating other domains of the same clients, so that once the
// holds lift (ReuseHold after the release) the released addresses are given
// to other domains while F still holds the old mappings. Every answer F
// gives is in the history, and the model accepts an old mapping only while
// its address belongs to no other domain: a server that keeps answering
// from state it can no longer confirm fails the check.
func cutOffFollowerScenario(h *Harness) {
	const cutOff, lookupWait = 8 * time.Second, 400 * time.Millisecond
	// Hold the workers until every server has applied the same log: then
	// the leader's mappings are F's.
	resume := h.Quiesce()
	l := h.Leader()
	others := h.Others(l)
	f := others[h.Rng.IntN(len(others))]
	known := map[string]map[int]int{} // client -> domain -> address, as F holds them
	for _, c := range h.Clients() {
		m, err := h.Mappings(l, c)
		if err != nil {
			resume()
			h.T.Fatal(err)
		}
		known[c] = m
	}
	h.step("cut follower %s off from %v for %v (leader %s); ask it continuously", f.ID, ids(h.Others(f)), cutOff, l.ID)
	h.Net.Partition([]*testcluster.Server{f}, h.Others(f))
	start := time.Now()
	resume()

	done := make(chan struct{})
	var wg sync.WaitGroup
	id := 100 // porcupine client IDs of the dedicated goroutines
	loop := func(pause time.Duration, op func(id int, rng *rand.Rand)) {
		id++
		id := id
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(h.cfg.Seed, uint64(id)))
			pace := time.NewTicker(pause)
			defer pace.Stop()
			for {
				op(id, rng)
				select {
				case <-done:
					return
				case <-pace.C:
				}
			}
		}()
	}
	// A domain F knows for c, most of the time; any domain otherwise.
	pick := func(rng *rand.Rand, c string) int {
		if m := known[c]; len(m) > 0 && rng.IntN(4) != 0 {
			ds := make([]int, 0, len(m))
			for d := range m {
				ds = append(ds, d)
			}
			sort.Ints(ds)
			return ds[rng.IntN(len(ds))]
		}
		return rng.IntN(NumDomains)
	}
	for _, c := range h.Clients() {
		for half := range 2 {
			loop(150*time.Millisecond, func(id int, _ *rand.Rand) {
				for a := half; a < PoolSize; a += 2 {
					select {
					case <-done:
						return
					default:
					}
					h.DoWithin(id, f, Input{Kind: Lookup, Client: c, Addr: a}, lookupWait)
				}
			})
		}
		loop(300*time.Millisecond, func(id int, rng *rand.Rand) { h.Do(id, f, Input{Kind: Alloc, Client: c, Domain: pick(rng, c)}) })
	}
	loop(300*time.Millisecond, func(id int, rng *rand.Rand) { h.DoDNS(id, f, pick(rng, DNSClient)) })
	id++ // the leader's operations below

	// On the majority side: release up to two mappings F holds per
	// client, then allocate other domains of that client through the
	// leader until the cut ends.
	type freed struct {
		client       string
		domain, addr int
	}
	var released []freed
	for _, c := range h.Clients() {
		ds := make([]int, 0, len(known[c]))
		for d := range known[c] {
			ds = append(ds, d)
		}
		sort.Ints(ds)
		h.Rng.Shuffle(len(ds), func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
		for _, d := range ds[:min(2, len(ds))] {
			if out := h.Do(id, l, Input{Kind: Release, Client: c, Domain: d}); out.Outcome == OK && out.Released {
				released = append(released, freed{c, d, known[c][d]})
			}
		}
	}
	h.Logf("released %d mappings %s holds, through %s", len(released), f.ID, l.ID)
	reassigned := map[freed]int{}
	pace := time.NewTicker(250 * time.Millisecond)
	defer pace.Stop()
	for time.Since(start) < cutOff {
		for _, r := range released {
			if _, ok := reassigned[r]; ok {
				continue
			}
			e := h.Rng.IntN(NumDomains)
			if out := h.Do(id, l, Input{Kind: Alloc, Client: r.client, Domain: e}); out.Outcome == OK && out.Addr == r.addr && e != r.domain {
				reassigned[r] = e
				h.Logf("%s %v (was %s on %s) given to %s, %v after the cut", r.client, PoolAddr(r.addr), DomainName(r.domain), f.ID,
					DomainName(e), time.Since(start).Round(time.Millisecond))
			}
		}
		<-pace.C
	}
	close(done)
	wg.Wait()
	h.Logf("cut over: %d of %d released addresses that %s still maps were given to another domain through the leader (the workers may have given others)",
		len(reassigned), len(released), f.ID)
}

// truncatedTailScenario makes a leader clear a log suffix it could not
// replicate (truncateLeaderTail), then SIGKILLs every server and starts them
// again: every one must come back and serve (raft-wal before v0.4.1 sealed
// the truncated segment without its index, and the server panicked on its
// next start), and Finish checks that every acknowledged write survived.
func truncatedTailScenario(h *Harness) {
	if !truncateLeaderTail(h, 3) {
		h.fail("no server truncated its log tail in 3 tries: the scenario did not happen")
		return
	}
	h.CrashAll(300 * time.Millisecond)
	h.RequireAllServing(30 * time.Second)
}

// truncateLeaderTail cuts the leader off while it takes writes, so it
// appends entries it cannot replicate; the majority elects a new leader
// whose entries conflict with them, and on healing the old leader clears
// that suffix from its log. It tries up to tries times and reports whether
// a suffix was cleared.
func truncateLeaderTail(h *Harness, tries int) bool {
	const cleared = "clearing log suffix"
	for range tries {
		l := h.Leader()
		before := strings.Count(l.Log(), cleared)
		h.step("isolate leader %s while it takes writes", l.ID)
		h.Net.Partition([]*testcluster.Server{l}, h.Others(l))
		// The workers write through every server; these make sure the
		// cut-off leader itself is asked, before it notices and steps down.
		for i := range 4 {
			go h.Do(-1, l, Input{Kind: Alloc, Client: h.clientName(i % len(h.clients)), Domain: h.Rng.IntN(NumDomains)})
		}
		h.Hold(3 * time.Second)
		h.Net.Heal()
		h.step("healed; waiting for %s to rejoin", l.ID)
		h.Quiesce()()
		if strings.Count(l.Log(), cleared) > before {
			h.Logf("%s cleared the suffix it could not replicate", l.ID)
			return true
		}
	}
	return false
}

// corruptScenario damages a follower's WAL tail, then another follower's
// newest snapshot, restarting each; it accepts recovery or a clear refusal,
// and checks the restarted server's answers through the workers' lookups.
func corruptScenario(h *Harness) {
	// Snapshots to damage; a server without one by then has its WAL
	// damaged instead (below).
	if !h.WaitSnapshots(10 * time.Second) {
		h.Logf("not every server has a snapshot after 10s")
	}
	for i, kind := range []string{"wal", "snapshot"} {
		// Quiesce first: then every server holds every committed entry,
		// so losing one server's tail loses nothing raft relied on.
		release := h.Quiesce()
		l := h.Leader()
		s := h.Others(l)[i%2]
		s.Stop(5 * time.Second)
		switch kind {
		case "wal":
			h.CorruptWAL(s, h.Rng.IntN(2) == 0)
		case "snapshot":
			if !h.CorruptSnapshot(s, h.Rng.IntN(2) == 0) {
				h.Logf("%s has no snapshot; damaging its WAL instead", s.ID)
				h.CorruptWAL(s, false)
			}
		}
		release()
		h.RestartDamaged(s)
		h.Hold(2 * time.Second)
	}
}

func runScenario(t *testing.T, sc scenario, seed uint64) Result {
	cfg := sc.cfg
	cfg.Seed = seed
	h := New(t, cfg)
	if sc.before != nil {
		sc.before(h)
	}
	h.Boot()
	h.StartWorkers()
	h.Hold(time.Second)
	sc.run(h)
	return h.Finish(sc.name)
}

func TestFaultsShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real clusters")
	}
	var total Totals
	for _, sc := range shortScenarios {
		t.Run(sc.name, func(t *testing.T) {
			seed := *seedFlag
			if seed == 0 {
				seed = rand.Uint64()
			}
			total.Add(runScenario(t, sc, seed))
		})
	}
	t.Log(total.Summary("scenarios"))
}

// TestBadInput sends random and malformed HTTP requests, DNS packets and
// connections to the cluster port from a non-member; the servers keep
// serving and the state does not change.
func TestBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real clusters")
	}
	h := New(t, Config{Seed: *seedFlag})
	dnsAddrs := map[string]string{}
	for _, s := range h.C.Servers {
		dnsAddrs[s.ID] = testcluster.FreePort(t, s.IP)
		s.Args = append(s.Args, "--dns-addr", dnsAddrs[s.ID], "--dns-upstream", "127.0.0.1:1")
	}
	h.Boot()
	// Some state to protect.
	h.StartWorkers()
	h.Hold(2 * time.Second)
	h.StopWorkers()
	// The leader lifts the workers' reuse holds with log entries up to
	// ReuseHold later: wait, so that only bad input could change the state.
	h.WaitNoHolds(ReuseHold + 20*time.Second)
	before := h.ConvergedDigests()
	rng := h.Rng

	garbage := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	methods := []string{"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "BREW", ""}
	paths := []string{"/v1/clients/", "/v1/clients//domains/x", "/v1/clients/c0/domains/" + strings.Repeat("a", 300),
		"/v1/clients/c0/domains/-bad-.example", "/v1/clients/c0/ips/999.1.1.1", "/v1/clients/c0/ips/::1",
		"/v1/clients/" + strings.Repeat("x", 200) + "/domains/a.example", "/v1/clients/c%00/domains/a.example",
		"/v1/clients/c0/ips/10.9.0.1%2f", "/v1/cluster/servers/", "/v1/pool", "/v1/snapshot", "/../../etc/passwd",
		"/v1/clients/c0/domains/a..example", "/v1/clients/c0/domains/" + strings.Repeat("a.", 130) + "com"}
	client := &http.Client{Timeout: 5 * time.Second}
	sent := 0
	for _, s := range h.C.Servers {
		// Malformed HTTP requests. None may change state: the writes among
		// them are invalid (bad names, bad bodies), or are methods the
		// API does not take on that path.
		for i := 0; i < 150; i++ {
			p := paths[rng.IntN(len(paths))]
			m := methods[rng.IntN(len(methods))]
			if (m == "POST" || m == "DELETE") && strings.HasPrefix(p, "/v1/clients/c0/domains/") && !strings.Contains(p, "..") &&
				!strings.Contains(p, "-bad-") && len(p) < 200 {
				m = "GET"
			}
			if p == "/v1/snapshot" || p == "/v1/pool" {
				m = "PUT" // with garbage bodies: refused
			}
			if p == "/v1/cluster/servers/" {
				m = "DELETE"
			}
			req, err := http.NewRequest(m, s.URL()+p, strings.NewReader(string(garbage(rng.IntN(2048)))))
			if err != nil {
				continue
			}
			// With the admin token, so the garbage reaches the handlers.
			h.Authorize(req)
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 && m != "GET" && m != "HEAD" && m != "OPTIONS" {
					t.Errorf("%s %s with a garbage body answered 200", m, p)
				}
			}
			sent++
		}
		// Raw garbage on the HTTP port, the cluster port (a non-member:
		// this process, from 127.0.0.1), and the DNS port (UDP and TCP).
		for _, addr := range []string{s.HTTPAddr, s.ClusterAddr, dnsAddrs[s.ID]} {
			for i := 0; i < 20; i++ {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					continue
				}
				c.SetDeadline(time.Now().Add(300 * time.Millisecond))
				switch i % 4 {
				case 0:
					c.Write(garbage(1 + rng.IntN(4096)))
				case 1: // a plausible prefix, then junk
					c.Write([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"))
					c.Write(garbage(64))
				case 2: // huge length prefixes
					c.Write([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02})
				case 3: // connect and say nothing
				}
				buf := make([]byte, 512)
				c.Read(buf)
				c.Close()
				sent++
			}
		}
		// Malformed DNS packets: random bytes, truncated and mangled
		// queries. None is a well-formed A/AAAA query, which would allocate.
		u, err := net.Dial("udp", dnsAddrs[s.ID])
		if err != nil {
			t.Fatal(err)
		}
		q := new(dns.Msg)
		q.SetQuestion("evil.example.", dns.TypeA)
		wire, _ := q.Pack()
		for i := 0; i < 200; i++ {
			var pkt []byte
			switch i % 5 {
			case 0:
				pkt = garbage(rng.IntN(600))
			case 1:
				pkt = wire[:rng.IntN(len(wire)-1)] // truncated
			case 2: // header claims 50 questions
				pkt = append([]byte(nil), wire...)
				pkt[4], pkt[5] = 0, 50
			case 3: // a response, not a query
				pkt = append([]byte(nil), wire...)
				pkt[2] |= 0x80
			case 4: // compression pointer loop in the name
				pkt = append(append([]byte(nil), wire[:12]...), 0xc0, 0x0c, 0, 1, 0, 1)
			}
			u.Write(pkt)
			sent++
		}
		u.Close()
	}
	// Time for the bad input to do harm, were it to: a crash shows only
	// as its absence of an answer, which no poll can wait for.
	h.Hold(500 * time.Millisecond)
	for _, s := range h.C.Servers {
		if !s.Running() || !s.Ready() {
			t.Fatalf("%s stopped serving after bad input", s.ID)
		}
	}
	after := h.ConvergedDigests()
	for id, d := range before {
		if after[id] != d {
			t.Errorf("%s: state changed under bad input: digest %s -> %s", id, d, after[id])
		}
	}
	// And it still works.
	h.start = time.Now()
	if out := h.Do(0, h.C.Servers[0], Input{Kind: Alloc, Client: "after", Domain: 1}); out.Outcome != OK {
		t.Errorf("a write after the bad input failed: %+v", out)
	}
	t.Logf("sent %d bad inputs to %d servers; all still serving, state digest unchanged (%v)", sent, len(h.C.Servers), before)
}

func TestNoFaultsBaseline(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real clusters")
	}
	runScenario(t, scenario{name: "no-faults", run: func(h *Harness) { h.Hold(4 * time.Second) }}, *seedFlag)
}

func TestLastWALBatch(t *testing.T) {
	frame := func(typ byte, n uint32) []byte {
		h := make([]byte, 8)
		h[0] = typ
		binary.LittleEndian.PutUint32(h[4:], n)
		if typ == 3 {
			return h
		}
		return append(h, make([]byte, (n+7)&^7)...)
	}
	seg := make([]byte, 32)
	seg = append(seg, frame(1, 5)...)  // entry, 8 bytes of payload: ends at 48
	seg = append(seg, frame(3, 0)...)  // commit: ends at 56
	seg = append(seg, frame(1, 12)...) // entry, 16 bytes of payload: ends at 80
	seg = append(seg, frame(1, 1)...)  // ends at 96
	seg = append(seg, frame(3, 0)...)  // commit: ends at 104
	seg = append(seg, make([]byte, 64)...)
	if start, end := lastWALBatch(seg); start != 56 || end != 104 {
		t.Fatalf("lastWALBatch = %d-%d, want 56-104", start, end)
	}
	if start, end := lastWALBatch(seg[:56]); start != 0 || end != 56 {
		t.Fatalf("one batch: lastWALBatch = %d-%d, want 0-56", start, end)
	}
}

package main

import (
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseMix(t *testing.T) {
	good := map[string]mix{
		"new=20,repeat=60,lookup=20": {20, 60, 20},
		" lookup = 100 ":             {0, 0, 100},
		"new=100":                    {100, 0, 0},
		"repeat=50,new=50,":          {50, 50, 0},
		"new=0,repeat=0,lookup=100":  {0, 0, 100},
	}
	for in, want := range good {
		got, err := parseMix(in)
		if err != nil || got != want {
			t.Errorf("parseMix(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "new=50", "new=50,repeat=60", "new=-10,repeat=110", "new=x,repeat=100",
		"write=100", "new=50,new=50", "new", "new=1e2"} {
		if m, err := parseMix(in); err == nil {
			t.Errorf("parseMix(%q) = %v, want an error", in, m)
		}
	}
}

func TestMixPick(t *testing.T) {
	m := mix{20, 60, 20}
	var got [numKinds]int
	for r := range 100 {
		got[m.pick(r)]++
	}
	if got != [numKinds]int{20, 60, 20} {
		t.Fatalf("pick over 0..99 = %v", got)
	}
	if (mix{0, 0, 100}).pick(0) != opLookup {
		t.Fatal("a kind with 0% was picked")
	}
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestPercentiles(t *testing.T) {
	var s []sample
	for i := 100; i >= 1; i-- { // unsorted on purpose
		s = append(s, sample{ms(i), 1})
	}
	got := percentiles(s, []float64{0.5, 0.9, 0.99, 0.999, 1})
	want := []time.Duration{ms(50), ms(90), ms(99), ms(100), ms(100)}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("percentile %d = %v, want %v", i, got[i], want[i])
		}
	}
	if p := percentiles(nil, []float64{0.5}); p[0] != 0 {
		t.Errorf("empty: %v", p)
	}
	if p := percentiles([]sample{{ms(7), 1}}, []float64{0.5, 0.999}); p[0] != ms(7) || p[1] != ms(7) {
		t.Errorf("one sample: %v", p)
	}
	// A sample that stands for 9 operations outweighs one that stands for 1.
	w := []sample{{ms(1), 1}, {ms(10), 9}}
	if p := percentiles(w, []float64{0.1, 0.5}); p[0] != ms(1) || p[1] != ms(10) {
		t.Errorf("weighted: %v", p)
	}
}

func TestReservoirBoundsMemory(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	r := reservoir{cap: 1000}
	for i := 1; i <= 100_000; i++ {
		r.add(time.Duration(i), rng)
	}
	if len(r.kept) != 1000 || r.seen != 100_000 || r.max != 100_000 {
		t.Fatalf("kept %d of %d, max %v", len(r.kept), r.seen, r.max)
	}
	// The sample is uniform: its median is near the true one.
	s := make([]sample, len(r.kept))
	for i, d := range r.kept {
		s[i] = sample{d, float64(r.seen) / float64(len(r.kept))}
	}
	if p := percentiles(s, []float64{0.5})[0]; p < 45_000 || p > 55_000 {
		t.Fatalf("median of the sample = %d, want about 50000", p)
	}
}

func TestSummarize(t *testing.T) {
	w := &workerStats{}
	for k := range numKinds {
		w.errs[k] = map[string]int64{}
		w.lat[k].cap = 10
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	w.ops[opNew], w.ops[opLookup] = 3, 1
	w.errs[opNew]["pool_exhausted"] = 1
	w.lat[opNew].add(ms(2), rng)
	w.lat[opNew].add(ms(4), rng)
	w.lat[opLookup].add(ms(1), rng)
	s := summarize([]*workerStats{w}, 2*time.Second)
	if s.Total.Count != 4 || s.Total.Errors != 1 || s.Total.OpsPerSec != 2 || s.Total.Max != 4 || s.Total.P50 != 2 {
		t.Errorf("total = %+v", s.Total)
	}
	if n := s.Kinds["new"]; n.Count != 3 || n.ErrorCode["pool_exhausted"] != 1 || n.P50 != 2 || n.P99 != 4 {
		t.Errorf("new = %+v", n)
	}
	if s.Kinds["repeat"].Count != 0 || s.Kinds["repeat"].ErrorCode != nil {
		t.Errorf("repeat = %+v", s.Kinds["repeat"])
	}
}

func TestValidPrefix(t *testing.T) {
	for _, p := range []string{"r1a2b3c4", "bench-2", "X"} {
		if err := validPrefix(p); err != nil {
			t.Errorf("validPrefix(%q): %v", p, err)
		}
	}
	for _, p := range []string{"-x", "a.b", "a_b", "a b", "ü", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"} {
		if validPrefix(p) == nil {
			t.Errorf("validPrefix(%q) accepted", p)
		}
	}
}

func TestBenchValidate(t *testing.T) {
	ok := BenchCmd{Clients: 100, Domains: 100, Concurrency: 16, Duration: time.Second, Mix: "new=100"}
	if _, err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*BenchCmd){
		"clients":     func(c *BenchCmd) { c.Clients = 0 },
		"domains":     func(c *BenchCmd) { c.Domains = -1 },
		"too many":    func(c *BenchCmd) { c.Clients, c.Domains = 1<<20, 1<<20 },
		"concurrency": func(c *BenchCmd) { c.Concurrency = 0 },
		"no stop":     func(c *BenchCmd) { c.Duration, c.Ops = 0, 0 },
		"ops":         func(c *BenchCmd) { c.Ops = -1 },
		"mix":         func(c *BenchCmd) { c.Mix = "new=10" },
		"prefix":      func(c *BenchCmd) { c.Prefix = "a/b" },
	} {
		c := ok
		mutate(&c)
		if _, err := c.validate(); err == nil {
			t.Errorf("%s: accepted %+v", name, c)
		}
	}
}

// TestBenchConn drives the bench's hand-written HTTP client against a real
// net/http server: answers, error codes, a server that closes kept-alive
// connections, and failing over when the first server is gone.
func TestBenchConn(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if n%3 == 0 {
			// Answer, then close: the next request must reconnect.
			w.Header().Set("Connection", "close")
		}
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == "POST" && r.URL.Path == "/v1/clients/c1/domains/a.example":
			fmt.Fprint(w, `{"client":"c1","domain":"a.example","ip":"198.18.0.1"}`)
		case r.Method == "GET" && r.URL.Path == "/v1/clients/c1/ips/198.18.0.1":
			fmt.Fprint(w, `{"client":"c1","domain":"a.example","ip":"198.18.0.1"}`)
		default:
			w.WriteHeader(http.StatusConflict)
			fmt.Fprint(w, `{"error":"exhausted","code":"pool_exhausted"}`)
		}
	}))
	defer srv.Close()

	dead := freeLoopbackAddr(t) // nothing listens here
	bc, err := newBenchConn([]string{dead, srv.URL}, 0, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.close()
	for i := range 20 {
		ans, code := bc.do("POST", "/v1/clients/c1/domains/a.example")
		if code != "" || ans.IP.String() != "198.18.0.1" {
			t.Fatalf("alloc %d: %+v %q", i, ans, code)
		}
		ans, code = bc.do("GET", "/v1/clients/c1/ips/198.18.0.1")
		if code != "" || ans.Domain != "a.example" {
			t.Fatalf("lookup %d: %+v %q", i, ans, code)
		}
		if _, code = bc.do("POST", "/v1/clients/c1/domains/full.example"); code != "pool_exhausted" {
			t.Fatalf("error %d: code %q, want pool_exhausted", i, code)
		}
	}
	if _, err := newBenchConn([]string{"ftp://x"}, 0, time.Second); err == nil {
		t.Error("an ftp:// address was taken")
	}
	srv.Close()
	if _, code := bc.do("POST", "/v1/clients/c1/domains/a.example"); code != "unreachable" {
		t.Errorf("with every server gone: code %q, want unreachable", code)
	}
}

func freeLoopbackAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

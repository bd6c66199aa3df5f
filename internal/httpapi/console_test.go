package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ippool/ippool/internal/fakenode"
	"github.com/ippool/ippool/internal/service"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// consoleServers serves svc on both stacks and returns their base URLs.
func consoleServers(t *testing.T, svc *service.Service, reg prometheus.Gatherer) []string {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	reference := httptest.NewServer(Handler(svc, reg, log, Options{}))
	t.Cleanup(reference.Close)
	fast := NewServer(svc, reg, log, Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go fast.Serve(ln)
	t.Cleanup(func() { fast.Shutdown() })
	return []string{reference.URL, "http://" + ln.Addr().String()}
}

func get(t *testing.T, url, token string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	// Redirects are what is tested, not followed.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

func decode[T any](t testing.TB, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return v
}

// The console's read endpoints on both stacks: the ranking pages and
// filters, the occupancy picture adds up, a page of mappings carries its
// total and position while the unpaged list keeps its old bytes, the
// counters are those of the metrics, and bad parameters are 400s.
func TestConsoleEndpoints(t *testing.T) {
	node := fakenode.New(t, "10.0.0.0/24", time.Hour)
	reg := prometheus.NewRegistry()
	metrics := service.NewMetrics(reg)
	svc := service.New(node, service.Options{MarkFlush: time.Hour, Metrics: metrics})
	t.Cleanup(svc.Close)
	ctx := context.Background()
	for c, n := range map[string]int{"big": 30, "mid": 12, "small": 3, "other": 12} {
		for d := range n {
			if _, err := svc.IPForDomain(ctx, c, fmt.Sprintf("d%d.example", d)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := svc.Release(ctx, "big", "d0.example"); err != nil {
		t.Fatal(err)
	}
	svc.Lookup(ctx, "mid", mustAddr("10.0.0.1"), time.Now())

	// A server that has answered nothing yet has every service counter, at 0.
	idleReg := prometheus.NewRegistry()
	idle := service.New(fakenode.New(t, "10.0.0.0/24", time.Hour), service.Options{MarkFlush: time.Hour, Metrics: service.NewMetrics(idleReg)})
	t.Cleanup(idle.Close)
	_, b := get(t, consoleServers(t, idle, idleReg)[0]+"/v1/stats", "")
	if st := decode[wire.Stats](t, b); len(st.Counters) != 5 || st.Counters["lookups"] != 0 {
		t.Fatalf("stats of an idle server: %s", b)
	}

	for _, base := range consoleServers(t, svc, reg) {
		resp, b := get(t, base+"/v1/pool/clients", "")
		r := decode[wire.ClientRanking](t, b)
		if resp.StatusCode != 200 || r.Total != 4 || r.PoolSize != 256 || len(r.Clients) != 4 ||
			r.Clients[0] != (wire.ClientUsage{Client: "big", Mappings: 29, Held: 1}) || r.Clients[1].Client != "mid" || r.Clients[2].Client != "other" {
			t.Fatalf("%s ranking: %d %s", base, resp.StatusCode, b)
		}
		_, b = get(t, base+"/v1/pool/clients?limit=1&offset=1&prefix=", "")
		if r := decode[wire.ClientRanking](t, b); r.Offset != 1 || len(r.Clients) != 1 || r.Clients[0].Client != "mid" {
			t.Fatalf("%s page 2: %s", base, b)
		}
		_, b = get(t, base+"/v1/pool/clients?prefix=sm", "")
		if r := decode[wire.ClientRanking](t, b); r.Total != 1 || r.Clients[0].Client != "small" {
			t.Fatalf("%s prefix: %s", base, b)
		}

		_, b = get(t, base+"/v1/clients/big/occupancy?cells=16", "")
		o := decode[wire.Occupancy](t, b)
		if o.PoolSize != 256 || o.Block != 16 || o.Cells != 16 || len(o.Ranges) != 1 || o.Ranges[0].To != mustAddr("10.0.0.255") {
			t.Fatalf("%s occupancy: %s", base, b)
		}
		// big's 29 mappings and 1 held address are its first 30 addresses:
		// cell 0 full, cell 1 with 13 live and the held one... in order.
		if len(o.Used) != 2 || o.Used[0] != [4]int{0, 15, 0, 1} || o.Used[1] != [4]int{1, 14, 0, 0} {
			t.Fatalf("%s occupancy cells: %v", base, o.Used)
		}

		_, b = get(t, base+"/v1/clients/big?limit=10&offset=5", "")
		l := decode[wire.List](t, b)
		if l.Total == nil || *l.Total != 29 || *l.Offset != 5 || len(l.Mappings) != 10 || l.Mappings[0].IP != mustAddr("10.0.0.6") {
			t.Fatalf("%s page: %s", base, b)
		}
		_, b = get(t, base+"/v1/clients/big?limit=1&from=10.0.0.0", "")
		if l := decode[wire.List](t, b); *l.Offset != 0 || l.Mappings[0].IP != mustAddr("10.0.0.1") {
			t.Fatalf("%s from: %s", base, b)
		}
		_, b = get(t, base+"/v1/clients/small", "")
		if strings.Contains(string(b), "total") || strings.Contains(string(b), "offset") {
			t.Fatalf("%s unpaged list: %s", base, b)
		}

		_, b = get(t, base+"/v1/stats", "")
		st := decode[wire.Stats](t, b)
		if st.Server != "fake" || st.Clients != 4 || st.Mappings != 56 || st.PoolSize != 256 || st.HeldAddresses != 1 || st.Domains != 30 ||
			st.Counters["allocations"] != 57 || st.Counters["allocations_new"] != 57 || st.Counters["lookups"] != 1 || st.Counters["exhaustions"] != 0 {
			t.Fatalf("%s stats: %s", base, b)
		}
		if _, ok := st.Counters["dns_queries"]; ok {
			t.Fatalf("%s stats has DNS counters without DNS: %s", base, b)
		}

		for _, bad := range []string{"/v1/pool/clients?limit=0", "/v1/pool/clients?limit=101", "/v1/pool/clients?offset=-1",
			"/v1/clients/big/occupancy?cells=4097", "/v1/clients/big?limit=x", "/v1/clients/big?limit=1001", "/v1/clients/big?limit=5&from=::1",
			"/v1/pool/clients?prefix=" + strings.Repeat("a", 129), "/v1/clients/b%20ad/occupancy"} {
			resp, b := get(t, base+bad, "")
			e := decode[wire.Error](t, b)
			if resp.StatusCode != 400 || e.Message == "" {
				t.Errorf("%s%s: %d %s, want 400", base, bad, resp.StatusCode, b)
			}
		}
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// The console's files are public, even with ACLs on, and carry a policy
// that allows this server's own scripts and styles only; / leads there.
func TestConsoleFiles(t *testing.T) {
	svc := service.New(fakenode.New(t, "10.0.0.0/24", time.Hour), service.Options{MarkFlush: time.Hour})
	t.Cleanup(svc.Close)
	if _, _, err := svc.BootstrapACL(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, base := range consoleServers(t, svc, prometheus.NewRegistry()) {
		for _, p := range []string{"/ui/", "/ui/pool", "/ui/client", "/ui/cluster", "/ui/app.js", "/ui/app.css", "/ui/favicon.svg"} {
			resp, b := get(t, base+p, "")
			if resp.StatusCode != 200 || len(b) == 0 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") ||
				resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("ETag") == "" {
				t.Errorf("%s%s: %d %v", base, p, resp.StatusCode, resp.Header)
			}
			if strings.HasSuffix(p, "/") || !strings.Contains(p, ".") {
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || !strings.Contains(string(b), `<script src="/ui/app.js" defer>`) {
					t.Errorf("%s%s: %s", base, p, ct)
				}
			}
			// An unchanged file costs a 304.
			req, _ := http.NewRequest("GET", base+p, nil)
			req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
			if r2, err := http.DefaultClient.Do(req); err != nil || r2.StatusCode != 304 {
				t.Errorf("%s%s again: %v %v", base, p, r2, err)
			} else {
				r2.Body.Close()
			}
		}
		for p, want := range map[string]int{"/ui/nothing": 404, "/ui/index.html": 404, "/ui/index": 404, "/v1/stats": 401} {
			if resp, b := get(t, base+p, ""); resp.StatusCode != want {
				t.Errorf("%s%s: %d %s, want %d", base, p, resp.StatusCode, b, want)
			}
		}
		if resp, _ := get(t, base+"/", ""); resp.StatusCode != 302 || resp.Header.Get("Location") != "/ui/" {
			t.Errorf("%s/: %d %v", base, resp.StatusCode, resp.Header)
		}
		if resp, _ := get(t, base+"/ui", ""); resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/ui/" {
			t.Errorf("%s/ui: %d %v", base, resp.StatusCode, resp.Header)
		}
	}
}

// BenchmarkConsolePages times, on the net/http handler the fast server
// hands them to, every request the console's pages make, against a state
// of 1,000 clients and 100,000 mappings (client-0 has 20,080, the others
// 40 to 120), with the metrics `ippool serve` registers. Each page must
// answer within 50 ms.
func BenchmarkConsolePages(b *testing.B) {
	node := fakenode.New(b, "198.18.0.0/15", time.Hour)
	counts := make([]int, 1000)
	counts[0] = 20080
	for i := 1; i < len(counts); i++ {
		counts[i] = 80 + 10*(i%9-4)
	}
	// Each client's mappings were used over the last 70 minutes, so about
	// a seventh of them are expired now.
	start := time.Now().Add(-70 * time.Minute)
	var ops []pool.Op
	for c, n := range counts {
		for d := range n {
			at := start.Add(time.Duration(d) * time.Hour / time.Duration(n))
			ops = append(ops, pool.Op{Kind: pool.OpAllocate, ID: node.NextRequestID(), Time: at, Client: fmt.Sprintf("client-%d", c), Domain: fmt.Sprintf("host%d.example.com", d)})
		}
	}
	for len(ops) > 0 {
		chunk := ops[:min(len(ops), 1024)]
		ops = ops[len(chunk):]
		if _, err := node.Propose(context.Background(), chunk); err != nil {
			b.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	svc := service.New(node, service.Options{MarkFlush: time.Hour, Metrics: service.NewMetrics(reg)})
	b.Cleanup(svc.Close)
	service.RegisterClusterGauges(reg, node)
	h := Handler(svc, reg, slog.New(slog.DiscardHandler), Options{})
	var st wire.Stats
	for _, req := range []struct{ name, path string }{
		{"stats", "/v1/stats"},
		{"cluster", "/v1/cluster"},
		{"pool", "/v1/pool"},
		{"acl-self", "/v1/acl/self"},
		{"ranking-top-20", "/v1/pool/clients?limit=20"},
		{"ranking-last-page", "/v1/pool/clients?limit=20&offset=980"},
		{"ranking-prefix", "/v1/pool/clients?limit=20&prefix=client-99"},
		{"occupancy-busiest-4096", "/v1/clients/client-0/occupancy?cells=4096"},
		{"mappings-busiest-first-50", "/v1/clients/client-0?limit=50"},
		{"mappings-busiest-last-50", "/v1/clients/client-0?limit=50&offset=20050"},
		{"mappings-busiest-from", "/v1/clients/client-0?limit=1&from=198.18.40.0"},
		{"console-file", "/ui/app.js"},
	} {
		b.Run(req.name, func(b *testing.B) {
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest("GET", req.path, nil))
				if w.Code != 200 {
					b.Fatalf("%s: %d %s", req.path, w.Code, w.Body)
				}
				if req.name == "stats" {
					st = decode[wire.Stats](b, w.Body.Bytes())
				}
			}
		})
	}
	if st.Clients != 1000 || st.Mappings != 100000 {
		b.Fatalf("the state holds %d clients and %d mappings", st.Clients, st.Mappings)
	}
}

// /v1/stats sums the DNS and connector counters, under the names the
// console charts, when those front ends have registered them.
func TestStatsSumsFrontEndCounters(t *testing.T) {
	reg := prometheus.NewRegistry()
	svc := service.New(fakenode.New(t, "10.0.0.0/24", time.Hour), service.Options{MarkFlush: time.Hour, Metrics: service.NewMetrics(reg)})
	t.Cleanup(svc.Close)
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ippool_dns_queries_total", Help: "h"}, func() float64 { return 42 }))
	flows := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ippool_connector_flows_total", Help: "h"}, []string{"proto", "result"})
	reg.MustRegister(flows)
	flows.WithLabelValues("tcp", "relayed").Add(5)
	flows.WithLabelValues("udp", "no_mapping").Add(2)
	_, b := get(t, consoleServers(t, svc, reg)[0]+"/v1/stats", "")
	if st := decode[wire.Stats](t, b); st.Counters["dns_queries"] != 42 || st.Counters["connector_flows"] != 7 {
		t.Fatalf("stats: %s", b)
	}
}

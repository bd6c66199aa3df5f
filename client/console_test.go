package client

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/ippool/ippool/wire"
)

// The console's reads send the paths and queries the API documents and
// decode its answers.
func TestConsoleReads(t *testing.T) {
	var got []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, wire.Stats{Server: "s1", Clients: 2, Counters: map[string]float64{"allocations": 9}})
	})
	mux.HandleFunc("GET /v1/pool/clients", func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.RawQuery)
		writeJSON(w, wire.ClientRanking{PoolSize: 256, Total: 2, Offset: 1, Clients: []wire.ClientUsage{{Client: "b", Mappings: 3}}})
	})
	mux.HandleFunc("GET /v1/clients/{client}/occupancy", func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.PathValue("client")+" "+r.URL.RawQuery)
		writeJSON(w, wire.Occupancy{Client: r.PathValue("client"), PoolSize: 256, Block: 1, Cells: 256, Used: [][4]int{{0, 1, 0, 0}}})
	})
	mux.HandleFunc("GET /v1/clients/{client}", func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.PathValue("client")+" "+r.URL.RawQuery)
		n, at := 7, 3
		writeJSON(w, wire.List{Client: r.PathValue("client"), Mappings: []wire.Mapping{{Domain: "a.example", IP: netip.MustParseAddr("10.0.0.9")}}, Total: &n, Offset: &at})
	})
	s := httptest.NewServer(mux)
	defer s.Close()
	c := newClient(t, s.URL)
	ctx := ctxT(t)

	st, err := c.Stats(ctx)
	if err != nil || st.Server != "s1" || st.Counters["allocations"] != 9 {
		t.Fatalf("Stats: %+v %v", st, err)
	}
	r, err := c.TopClients(ctx, "gw/1", 1, 20)
	if err != nil || r.Total != 2 || r.Clients[0].Client != "b" {
		t.Fatalf("TopClients: %+v %v", r, err)
	}
	o, err := c.Occupancy(ctx, "a b", 64)
	if err != nil || o.Client != "a b" || len(o.Used) != 1 {
		t.Fatalf("Occupancy: %+v %v", o, err)
	}
	l, err := c.ListPage(ctx, "n1", netip.MustParseAddr("10.0.0.8"), 0, 50, true)
	if err != nil || *l.Total != 7 || *l.Offset != 3 || l.Mappings[0].Client != "n1" {
		t.Fatalf("ListPage: %+v %v", l, err)
	}
	want := []string{"limit=20&offset=1&prefix=gw%2F1", "a b cells=64", "n1 consistent=true&from=10.0.0.8&limit=50&offset=0"}
	if len(got) != len(want) {
		t.Fatalf("requests %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d: %q, want %q", i, got[i], want[i])
		}
	}
}

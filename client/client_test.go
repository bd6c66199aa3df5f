package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ippool/ippool/pool"
)

// fake is a stand-in for one server: it answers the API from a map, enough
// to check that the client builds requests and reads answers as the API says.
func fake(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	used := "2025-01-02T03:04:05.123456789Z"
	mux.HandleFunc("POST /v1/clients/{client}/domains/{domain}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("domain") == "full.example" {
			apiErr(w, 409, "pool_exhausted", "pool exhausted for client "+r.PathValue("client"))
			return
		}
		writeJSON(w, map[string]string{"client": r.PathValue("client"), "domain": r.PathValue("domain"), "ip": "100.64.0.1"})
	})
	mux.HandleFunc("GET /v1/clients/{client}/domains/{domain}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("domain") != "example.com" {
			apiErr(w, 404, "not_found", "no mapping")
			return
		}
		writeJSON(w, map[string]string{"client": r.PathValue("client"), "domain": "example.com", "ip": "100.64.0.1", "last_used": used})
	})
	mux.HandleFunc("GET /v1/clients/{client}/ips/{ip}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("ip") != "100.64.0.1" {
			apiErr(w, 404, "not_found", "client "+r.PathValue("client")+" has no mapping for "+r.PathValue("ip"))
			return
		}
		writeJSON(w, map[string]string{"client": r.PathValue("client"), "domain": "example.com", "ip": "100.64.0.1", "last_used": used})
	})
	mux.HandleFunc("DELETE /v1/clients/{client}/domains/{domain}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"client": r.PathValue("client"), "domain": r.PathValue("domain"), "released": true})
	})
	mux.HandleFunc("DELETE /v1/clients/{client}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"client": r.PathValue("client"), "released": 3})
	})
	mux.HandleFunc("GET /v1/clients/{client}", func(w http.ResponseWriter, r *http.Request) {
		n := 1
		if r.URL.Query().Get("consistent") == "true" {
			n = 2
		}
		ms := []map[string]string{}
		for i := range n {
			ms = append(ms, map[string]string{"domain": "d" + string(rune('0'+i)) + ".example", "ip": "100.64.0." + string(rune('1'+i)), "last_used": used})
		}
		writeJSON(w, map[string]any{"client": r.PathValue("client"), "mappings": ms})
	})
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"id": "s1", "state": "Leader", "leader_id": "s1", "term": 4,
			"servers": []map[string]any{{"id": "s1", "role": "leader", "voter": true, "reachable": true}}})
	})
	mux.HandleFunc("DELETE /v1/cluster/servers/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]string{"removed": r.PathValue("id")})
	})
	mux.HandleFunc("GET /v1/snapshot", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Ippool-Index", "42")
		w.Header().Set("X-Ippool-Term", "7")
		w.Header().Set("X-Ippool-Server", "s1")
		io.WriteString(w, "IPPOOLS1 bytes")
	})
	mux.HandleFunc("PUT /v1/snapshot", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if string(b) != "IPPOOLS1 bytes" {
			apiErr(w, 400, "bad_snapshot", "got "+string(b))
			return
		}
		writeJSON(w, map[string]bool{"restored": true})
	})
	mux.HandleFunc("GET /v1/pool", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]string{"pool": "100.64.0.0/10", "exclude": "", "lifetime": "48h0m0s"})
	})
	mux.HandleFunc("PUT /v1/pool", func(w http.ResponseWriter, r *http.Request) {
		var p map[string]any
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil || p["lifetime"] != "1h0m0s" {
			apiErr(w, 400, "invalid_config", "bad pool body")
			return
		}
		p["released"] = 5
		writeJSON(w, p)
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func apiErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	if status == 503 {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg, "code": code})
}

func newClient(t *testing.T, addrs ...string) *Client {
	t.Helper()
	c, err := New(addrs...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestMethods(t *testing.T) {
	s := fake(t)
	c := newClient(t, s.URL)
	ctx := ctxT(t)
	ip := netip.MustParseAddr("100.64.0.1")
	used := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)

	m, err := c.Alloc(ctx, "node1", "example.com")
	if err != nil || m != (Mapping{Client: "node1", Domain: "example.com", IP: ip}) {
		t.Fatalf("Alloc = %+v, %v", m, err)
	}
	m, err = c.Get(ctx, "node1", "example.com")
	if err != nil || m.IP != ip || !m.LastUsed.Equal(used) {
		t.Fatalf("Get = %+v, %v", m, err)
	}
	m, err = c.Lookup(ctx, "node1", ip)
	if err != nil || m.Domain != "example.com" || !m.LastUsed.Equal(used) {
		t.Fatalf("Lookup = %+v, %v", m, err)
	}
	if ok, err := c.Release(ctx, "node1", "example.com"); !ok || err != nil {
		t.Fatalf("Release = %v, %v", ok, err)
	}
	if n, err := c.ReleaseClient(ctx, "node1"); n != 3 || err != nil {
		t.Fatalf("ReleaseClient = %v, %v", n, err)
	}
	for _, consistent := range []bool{false, true} {
		ms, err := c.List(ctx, "node1", consistent)
		want := 1
		if consistent {
			want = 2
		}
		if err != nil || len(ms) != want || ms[0].Client != "node1" || ms[0].Domain != "d0.example" {
			t.Fatalf("List(consistent=%v) = %+v, %v", consistent, ms, err)
		}
	}
	st, err := c.Cluster(ctx)
	if err != nil || st.ID != "s1" || st.Term != 4 || len(st.Servers) != 1 || st.Servers[0].Role != "leader" {
		t.Fatalf("Cluster = %+v, %v", st, err)
	}
	if err := c.RemoveServer(ctx, "s2"); err != nil {
		t.Fatalf("RemoveServer: %v", err)
	}
	var buf bytes.Buffer
	info, err := c.Snapshot(ctx, &buf)
	if err != nil || info != (SnapshotInfo{Index: 42, Term: 7, Server: "s1"}) || buf.String() != "IPPOOLS1 bytes" {
		t.Fatalf("Snapshot = %+v, %q, %v", info, buf.String(), err)
	}
	if err := c.Restore(ctx, strings.NewReader("IPPOOLS1 bytes")); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	p, err := c.Pool(ctx)
	if err != nil || p != (PoolInfo{Pool: "100.64.0.0/10", Lifetime: 48 * time.Hour}) {
		t.Fatalf("Pool = %+v, %v", p, err)
	}
	n, err := c.SetPool(ctx, PoolInfo{Pool: "10.0.0.0/8", Lifetime: time.Hour})
	if err != nil || n != 5 {
		t.Fatalf("SetPool = %v, %v", n, err)
	}
}

func TestErrorsMatchPoolSentinels(t *testing.T) {
	c := newClient(t, fake(t).URL)
	ctx := ctxT(t)
	_, err := c.Lookup(ctx, "node1", netip.MustParseAddr("100.64.0.9"))
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != "not_found" || ae.Error() != "client node1 has no mapping for 100.64.0.9" {
		t.Fatalf("Lookup miss: %#v", err)
	}
	if !errors.Is(err, pool.ErrNotFound) || errors.Is(err, pool.ErrPoolExhausted) {
		t.Fatalf("errors.Is does not match by code: %v", err)
	}
	_, err = c.Alloc(ctx, "node1", "full.example")
	if !errors.Is(err, pool.ErrPoolExhausted) || Code(err) != "pool_exhausted" {
		t.Fatalf("Alloc exhausted: %v (code %q)", err, Code(err))
	}
	if err := c.Restore(ctx, strings.NewReader("junk")); !errors.Is(err, pool.ErrBadSnapshot) {
		t.Fatalf("Restore junk: %v", err)
	}
}

func TestNonJSONError(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream broke", http.StatusBadGateway)
	}))
	defer s.Close()
	_, err := newClient(t, s.URL).Alloc(ctxT(t), "a", "b.example")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 502 || !strings.Contains(ae.Message, "upstream broke") || Code(err) != "http_502" {
		t.Fatalf("got %#v", err)
	}
}

// deadAddr returns an address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

func TestFailoverOnConnectionError(t *testing.T) {
	s := fake(t)
	var hits atomic.Int32
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		s.Config.Handler.ServeHTTP(w, r)
	}))
	defer counting.Close()
	c := newClient(t, deadAddr(t), counting.URL)
	for range 3 {
		if _, err := c.Alloc(ctxT(t), "node1", "example.com"); err != nil {
			t.Fatal(err)
		}
	}
	if hits.Load() != 3 {
		t.Fatalf("working server got %d requests, want 3", hits.Load())
	}
	// The client now sticks to the server that answered.
	if c.cur.Load() != 1 {
		t.Fatalf("current server = %d, want 1", c.cur.Load())
	}
}

func TestFailoverOn503(t *testing.T) {
	s := fake(t)
	var refused atomic.Int32
	noLeader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method == http.MethodPut && string(b) != "IPPOOLS1 bytes" {
			t.Errorf("first attempt got body %q", b)
		}
		refused.Add(1)
		apiErr(w, 503, "no_leader", "no leader")
	}))
	defer noLeader.Close()
	c := newClient(t, noLeader.URL, strings.TrimPrefix(s.URL, "http://"))
	if _, err := c.Alloc(ctxT(t), "node1", "example.com"); err != nil {
		t.Fatal(err)
	}
	// The body of a retried request is sent whole again, even from a
	// reader that cannot seek.
	c.cur.Store(0)
	if err := c.Restore(ctxT(t), io.MultiReader(strings.NewReader("IPPOOLS1 bytes"))); err != nil {
		t.Fatal(err)
	}
	if refused.Load() != 2 {
		t.Fatalf("503 server got %d requests, want 2", refused.Load())
	}
}

func TestRetriesUntilDeadline(t *testing.T) {
	var n atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		apiErr(w, 503, "no_quorum", "no quorum: 1 of 3 servers reachable")
	}))
	defer s.Close()
	c := newClient(t, s.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Alloc(ctx, "node1", "example.com")
	if !errors.Is(err, pool.ErrNoQuorum) {
		t.Fatalf("got %v, want the server's no_quorum", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("gave up after %v, past the deadline", d)
	}
	if n.Load() < 2 {
		t.Fatalf("tried %d times, want a retry", n.Load())
	}
}

// A refused TLS handshake fails over like a dead server, but a whole round
// of them ends the call with the TLS error at once: waiting for the
// deadline would only hide what is wrong.
func TestTLSRefusalFailsOverThenStops(t *testing.T) {
	h := fake(t).Config.Handler
	ok := httptest.NewTLSServer(h)
	defer ok.Close()
	wantsCert := httptest.NewUnstartedServer(h)
	wantsCert.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	wantsCert.StartTLS()
	defer wantsCert.Close()
	trust := x509.NewCertPool()
	trust.AddCert(ok.Certificate())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, c := range []struct {
		name  string
		addrs []string
		trust *x509.CertPool
		want  string
	}{
		{"an untrusted certificate", []string{ok.URL, ok.URL}, nil, "certificate signed by unknown authority (this client does not trust the CA that signed the server's certificate: give that CA with --ca-cert or IPPOOL_CACERT"},
		{"no client certificate", []string{wantsCert.URL, wantsCert.URL}, trust, "certificate required"},
		{"one server refusing, one answering", []string{wantsCert.URL, ok.URL}, trust, ""},
	} {
		cl, err := NewWithOptions(c.addrs, Options{TLS: &tls.Config{RootCAs: c.trust}})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = cl.Alloc(ctx, "node1", "example.com")
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		case time.Since(start) > 5*time.Second:
			t.Errorf("%s: took %v", c.name, time.Since(start))
		}
	}
}

func TestNoRetryOnClientError(t *testing.T) {
	var n atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		apiErr(w, 400, "invalid_domain", "bad domain")
	}))
	defer s.Close()
	c := newClient(t, s.URL, s.URL)
	if _, err := c.Alloc(ctxT(t), "node1", "refused.example"); !errors.Is(err, pool.ErrInvalidDomain) {
		t.Fatal(err)
	}
	if n.Load() != 1 {
		t.Fatalf("a 400 was sent %d times", n.Load())
	}
}

func TestRetryForWithoutDeadline(t *testing.T) {
	c := newClient(t, deadAddr(t))
	c.RetryFor = 200 * time.Millisecond
	start := time.Now()
	_, err := c.Alloc(context.Background(), "node1", "example.com")
	if err == nil || Code(err) != "unreachable" {
		t.Fatalf("got %v (code %q)", err, Code(err))
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
}

// A client ID or domain the server would refuse is refused before anything
// is sent, with the server's sentence; a domain goes in the form the server
// stores, an internationalised one in its ASCII form.
func TestNamesCheckedBeforeSending(t *testing.T) {
	var got []string
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.EscapedPath())
		writeJSON(w, map[string]string{"ip": "100.64.0.1"})
	}))
	defer s.Close()
	c := newClient(t, s.URL)
	for _, tc := range []struct{ client, domain, want string }{
		{"a/b", "example.com", "client ID \"a/b\" has '/'"},
		{"node1", "", "domain \"\" is empty"},
		{"node1", "x?y", "domain \"x?y\" has '?'"},
	} {
		if _, err := c.Alloc(ctxT(t), tc.client, tc.domain); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Alloc(%q, %q): %v, want %q", tc.client, tc.domain, err, tc.want)
		}
	}
	if len(got) != 0 {
		t.Fatalf("refused names were sent: %v", got)
	}
	if _, err := c.Alloc(ctxT(t), "node1", "Bücher.DE"); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != "/v1/clients/node1/domains/xn--bcher-kva.de" {
		t.Fatalf("paths sent: %v", got)
	}
}

func TestNew(t *testing.T) {
	c, err := New("127.0.0.1:7480", "http://h:1/", "https://h:2")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"http://127.0.0.1:7480", "http://h:1", "https://h:2"}
	if got := c.Addrs(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("Addrs = %v", got)
	}
	for _, bad := range [][]string{nil, {""}, {"ftp://h:1"}, {"http://"}} {
		if _, err := New(bad...); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}

func TestPoolInfoJSON(t *testing.T) {
	var p PoolInfo
	if err := json.Unmarshal([]byte(`{"pool":"10.0.0.0/8","exclude":"10.0.0.1","lifetime":3600000000000}`), &p); err != nil || p.Lifetime != time.Hour {
		t.Fatalf("numeric lifetime: %+v, %v", p, err)
	}
	if err := json.Unmarshal([]byte(`{"lifetime":"soon"}`), &p); err == nil {
		t.Fatal("accepted a lifetime that is not a duration")
	}
	b, _ := json.Marshal(PoolInfo{Pool: "10.0.0.0/8", Lifetime: 48 * time.Hour})
	if string(b) != `{"pool":"10.0.0.0/8","exclude":"","lifetime":"48h0m0s"}` {
		t.Fatalf("Marshal = %s", b)
	}
}

// With FailWhenAbsent, a round of addresses where nothing listens (refused,
// or a host name that does not exist) ends the call at once, saying what to
// check; without it the client waits as before.
func TestFailWhenAbsent(t *testing.T) {
	c, err := NewWithOptions([]string{deadAddr(t), "http://nosuchhost.invalid:7480"}, Options{FailWhenAbsent: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = c.Alloc(ctx, "node1", "example.com")
	if err == nil || !strings.Contains(err.Error(), "no ippool server answers at") || !strings.Contains(err.Error(), "--addr or IPPOOL_ADDR") {
		t.Fatalf("%v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("waited for the deadline")
	}
	patient := newClient(t, deadAddr(t))
	patient.RetryFor = 300 * time.Millisecond
	if _, err := patient.Alloc(context.Background(), "node1", "example.com"); err == nil || strings.Contains(err.Error(), "no ippool server answers") {
		t.Fatalf("without FailWhenAbsent: %v", err)
	}
}

// A 429 with Retry-After (a write rate limit) is retried after it; one
// without (a quota) is not.
func TestRetriesRateLimitsNotQuotas(t *testing.T) {
	var n atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "quota"):
			apiErr(w, 429, "quota_exceeded", "too many clients")
		case n.Add(1) == 1:
			w.Header().Set("Retry-After", "1")
			apiErr(w, 429, "rate_limited", "slow down")
		default:
			writeJSON(w, map[string]string{"ip": "100.64.0.1"})
		}
	}))
	defer s.Close()
	c := newClient(t, s.URL)
	if m, err := c.Alloc(ctxT(t), "node1", "limited.example"); err != nil || m.IP.String() != "100.64.0.1" || n.Load() != 2 {
		t.Fatalf("rate limited once: %+v, %v after %d tries", m, err, n.Load())
	}
	if _, err := c.Alloc(ctxT(t), "quota", "x.example"); err == nil || !strings.Contains(err.Error(), "too many clients") {
		t.Fatalf("a quota: %v", err)
	}
}

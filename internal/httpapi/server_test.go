package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/ippool/ippool/internal/fakenode"
	"github.com/ippool/ippool/internal/service"
	"github.com/ippool/ippool/pool"
)

// startService runs a service on an in-memory server (fakenode) whose
// marks are never flushed, so reads leave the state as it is. The wiring to
// a real cluster is tested end to end (internal/e2e).
func startService(t *testing.T) *service.Service {
	t.Helper()
	svc := service.New(fakenode.New(t, "10.0.0.0/30", time.Hour), service.Options{MarkFlush: time.Hour})
	t.Cleanup(svc.Close)
	return svc
}

// rawRequest sends one request as written, so that both servers see the
// same bytes, and reads the answer.
func rawRequest(t *testing.T, addr, method, target string, body []byte) (*http.Response, []byte) {
	t.Helper()
	return rawRequestHost(t, addr, "test", method, target, body)
}

// rawRequestHost is rawRequest with the given Host header.
func rawRequestHost(t *testing.T, addr, host, method, target string, body []byte) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var req bytes.Buffer
	req.WriteString(method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n")
	if body != nil || method == "POST" || method == "PUT" {
		req.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	}
	req.WriteString("\r\n")
	req.Write(body)
	if _, err := c.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

// The server `ippool serve` runs answers every request as the net/http
// handler does: the same status, content type, Retry-After and body,
// whether fasthttp answered it itself or handed it over.
func TestServerAnswersAsTheNetHTTPHandler(t *testing.T) {
	svc := startService(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := prometheus.NewRegistry()
	reference := httptest.NewServer(Handler(svc, reg, log, Options{}))
	defer reference.Close()
	fast := NewServer(svc, reg, log, Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go fast.Serve(ln)
	defer fast.Shutdown()

	big := bytes.Repeat([]byte("x"), MaxBody+1)
	cases := []struct {
		method, target string
		body           []byte
		statusOnly     bool
	}{
		{method: "POST", target: "/v1/clients/n1/domains/Example.COM"},
		{method: "POST", target: "/v1/clients/n1/domains/example.com"}, // existing
		{method: "POST", target: "/v1/clients/n1/domains/b.example?x=1"},
		{method: "POST", target: "/v1/clients/n1/domains/c.example", body: []byte("ignored")},
		{method: "POST", target: "/v1/clients/bad%20id/domains/a.example"},
		{method: "POST", target: "/v1/clients/a%2Fb/domains/a.example"},
		{method: "POST", target: "/v1/clients/" + strings.Repeat("c", 129) + "/domains/a.example"},
		{method: "POST", target: "/v1/clients/n1/domains/a..example"},
		{method: "POST", target: "/v1/clients/n1/domains/a%21b.example"},
		{method: "POST", target: "/v1/clients/n1/domains/a.example/"},
		{method: "POST", target: "/v1/clients/n1//domains/a.example"},
		{method: "POST", target: "/v1/clients/n1/domains/."},
		{method: "POST", target: "/v1/clients/n1/domains/a.example", body: big},
		{method: "PUT", target: "/v1/pool", body: big},
		{method: "PUT", target: "/v1/clients/n1/domains/a.example"},
		{method: "GET", target: "/v1/clients/n1/ips/10.0.0.0"},
		{method: "GET", target: "/v1/clients/n1/ips/10.0.0.3"},
		{method: "GET", target: "/v1/clients/n1/ips/10.0.0.999"},
		{method: "GET", target: "/v1/clients/n1/ips/fd00::1"},
		{method: "GET", target: "/v1/clients/n1/ips/8.8.8.8"},
		{method: "GET", target: "/v1/clients/n1/domains/example.com"},
		{method: "GET", target: "/v1/clients/n1"},
		{method: "GET", target: "/v1/nothing"},
		{method: "GET", target: "/healthz"},
		// Fill the /30 (4 addresses, 3 taken), then exhaust it.
		{method: "POST", target: "/v1/clients/n1/domains/d.example"},
		{method: "POST", target: "/v1/clients/n1/domains/e.example"},
		// net/http answers a malformed target in plain text; the status
		// is what must match.
		{method: "GET", target: "/v1/clients/n1/ips/a%zz", statusOnly: true},
	}
	for _, c := range cases {
		// Each request goes to the reference first, so the second sees
		// the state the first left (an allocation exists by then).
		want, wantBody := rawRequest(t, reference.Listener.Addr().String(), c.method, c.target, c.body)
		got, gotBody := rawRequest(t, ln.Addr().String(), c.method, c.target, c.body)
		name := c.method + " " + c.target
		if len(name) > 80 {
			name = name[:80] + "..."
		}
		if got.StatusCode != want.StatusCode {
			t.Errorf("%s: status %d, net/http %d (%s)", name, got.StatusCode, want.StatusCode, gotBody)
			continue
		}
		if c.statusOnly {
			continue
		}
		for _, h := range []string{"Content-Type", "Retry-After", "Allow"} {
			if got.Header.Get(h) != want.Header.Get(h) {
				t.Errorf("%s: %s %q, net/http %q", name, h, got.Header.Get(h), want.Header.Get(h))
			}
		}
		if !bytes.Equal(gotBody, wantBody) {
			t.Errorf("%s: body\n%s\nnet/http:\n%s", name, gotBody, wantBody)
		}
	}
}

// With LoopbackHostsOnly, both stacks refuse a request naming a host other
// than loopback, the fast path's included, before anything runs, and
// answer alike; loopback names and addresses pass.
func TestServerRefusesNonLoopbackHosts(t *testing.T) {
	svc := startService(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := prometheus.NewRegistry()
	opts := Options{LoopbackHostsOnly: true}
	reference := httptest.NewServer(Handler(svc, reg, log, opts))
	defer reference.Close()
	fast := NewServer(svc, reg, log, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go fast.Serve(ln)
	defer fast.Shutdown()

	const bad = "attacker.example"
	big := bytes.Repeat([]byte("x"), MaxBody+1)
	cases := []struct {
		host, method, target string
		body                 []byte
		status               int
		statusOnly           bool
	}{
		{host: bad, method: "POST", target: "/v1/clients/n1/domains/rebound.example", status: 403},
		{host: bad + ":7480", method: "GET", target: "/v1/clients/n1/ips/10.0.0.0", status: 403},
		{host: "Attacker.Example", method: "GET", target: "/v1/clients/n1", status: 403},
		{host: bad, method: "DELETE", target: "/v1/clients/n1", status: 403},
		{host: bad, method: "GET", target: "/v1/cluster", status: 403},
		{host: bad, method: "GET", target: "/v1/pool", status: 403},
		{host: bad, method: "GET", target: "/metrics", status: 403},
		{host: bad, method: "GET", target: "/healthz", status: 403},
		{host: bad, method: "GET", target: "/readyz", status: 403},
		{host: bad, method: "GET", target: "/v1/nothing", status: 403},
		{host: bad, method: "POST", target: "/v1/clients/n1/domains/rebound.example", body: big, status: 403},
		// (An empty Host is refused too: by fasthttp itself with a 400,
		// by net/http with this 403.)
		{host: "0.0.0.0:7480", method: "GET", target: "/healthz", status: 403},
		{host: "192.168.1.10", method: "GET", target: "/healthz", status: 403},
		{host: "[::]:7480", method: "GET", target: "/healthz", status: 403},
		{host: "localhost.attacker.example", method: "GET", target: "/healthz", status: 403},
		{host: "127.0.0.1.attacker.example", method: "GET", target: "/healthz", status: 403},
		// Userinfo is no part of a Host: whatever follows an '@' is not
		// the host the client meant (net/http answers in plain text).
		{host: "evil.example:7480@127.0.0.1", method: "GET", target: "/healthz", status: 400, statusOnly: true},
		{host: "evil.example@localhost", method: "POST", target: "/v1/clients/n1/domains/rebound.example", status: 400, statusOnly: true},
		// A target net/http cannot parse is refused first, as it is
		// without the check.
		{host: bad, method: "GET", target: "/v1/clients/n1/ips/a%zz", status: 400, statusOnly: true},

		{host: "localhost", method: "GET", target: "/healthz", status: 200},
		{host: "LOCALHOST:7480", method: "GET", target: "/healthz", status: 200},
		{host: "localhost.", method: "GET", target: "/healthz", status: 200},
		{host: "app.localhost:7480", method: "GET", target: "/healthz", status: 200},
		{host: "127.0.0.1:7480", method: "GET", target: "/healthz", status: 200},
		{host: "127.8.9.10", method: "GET", target: "/healthz", status: 200},
		{host: "[::1]:7480", method: "GET", target: "/healthz", status: 200},
		{host: "[::1]", method: "GET", target: "/healthz", status: 200},
		{host: "127.0.0.1:7480", method: "POST", target: "/v1/clients/n1/domains/example.com", status: 200},
		{host: "localhost", method: "GET", target: "/v1/clients/n1/ips/10.0.0.0", status: 200},
	}
	for _, c := range cases {
		name := fmt.Sprintf("Host %q: %s %s", c.host, c.method, c.target)
		want, wantBody := rawRequestHost(t, reference.Listener.Addr().String(), c.host, c.method, c.target, c.body)
		got, gotBody := rawRequestHost(t, ln.Addr().String(), c.host, c.method, c.target, c.body)
		if want.StatusCode != c.status {
			t.Errorf("%s: net/http answered %d, want %d (%s)", name, want.StatusCode, c.status, wantBody)
		}
		if got.StatusCode != want.StatusCode {
			t.Errorf("%s: status %d, net/http %d (%s)", name, got.StatusCode, want.StatusCode, gotBody)
			continue
		}
		if c.statusOnly {
			continue
		}
		if got.Header.Get("Content-Type") != want.Header.Get("Content-Type") || !bytes.Equal(gotBody, wantBody) {
			t.Errorf("%s: %s\n%s\nnet/http: %s\n%s", name, got.Header.Get("Content-Type"), gotBody, want.Header.Get("Content-Type"), wantBody)
		}
		if c.status == http.StatusForbidden {
			var e struct{ Error, Code string }
			if err := json.Unmarshal(gotBody, &e); err != nil || e.Code != "bad_host" ||
				!strings.Contains(e.Error, "not a loopback name") || !strings.Contains(e.Error, "--http-addr") {
				t.Errorf("%s: body %s, want a bad_host error naming --http-addr", name, gotBody)
			}
		}
	}
	if _, ok := svc.Get("n1", "rebound.example"); ok {
		t.Error("a request with a rebound Host allocated")
	}
	if _, ok := svc.Get("n1", "example.com"); !ok {
		t.Error("a request with a loopback Host did not allocate")
	}
}

// A request target in absolute form is refused whatever its host, where
// net/http would take the target's host for the Host header: only a proxy
// is sent such targets, and on the fast path the Host check and the route
// would read different parts of the line.
func TestServerRefusesAbsoluteFormTargets(t *testing.T) {
	svc := startService(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, loopbackOnly := range []bool{false, true} {
		srv := NewServer(svc, prometheus.NewRegistry(), log, Options{LoopbackHostsOnly: loopbackOnly})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		for _, target := range []string{
			"http://attacker.example/v1/clients/n1/domains/absolute.example",
			"http://127.0.0.1/v1/clients/n1/domains/absolute.example",
			"HTTP://localhost:7480/v1/clients/n1/domains/absolute.example",
		} {
			resp, body := rawRequestHost(t, ln.Addr().String(), "127.0.0.1", "POST", target, nil)
			var e struct{ Error, Code string }
			if err := json.Unmarshal(body, &e); err != nil || resp.StatusCode != http.StatusBadRequest || e.Code != "bad_request" || !strings.Contains(e.Error, "not a path") {
				t.Errorf("loopback only %v, POST %s: %d %s, want 400 bad_request saying the target is not a path", loopbackOnly, target, resp.StatusCode, body)
			}
		}
		srv.Shutdown()
	}
	if _, ok := svc.Get("n1", "absolute.example"); ok {
		t.Error("a request with an absolute-form target allocated")
	}
}

// What net/http would take but ippool refuses: a request line and headers
// over 16 KiB, and a chunked body over the limit. Each gets its JSON error,
// readable before the connection closes, over HTTPS too (where the half
// close lingerClose makes is TLS's close_notify).
func TestServerRefusesOversizedHeadersAndChunkedBodies(t *testing.T) {
	for _, https := range []bool{false, true} {
		name := "HTTP"
		if https {
			name = "HTTPS"
		}
		t.Run(name, func(t *testing.T) { testRefusesOversized(t, https) })
	}
}

func testRefusesOversized(t *testing.T, https bool) {
	svc := startService(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := NewServer(svc, prometheus.NewRegistry(), log, Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dial := func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }
	if https {
		serverTLS, clientTLS := testTLS(t)
		ln = tls.NewListener(ln, serverTLS.Config())
		dial = func() (net.Conn, error) { return tls.Dial("tcp", ln.Addr().String(), clientTLS) }
	}
	go srv.Serve(ln)
	defer srv.Shutdown()

	chunk := bytes.Repeat([]byte("x"), 4096)
	var chunked bytes.Buffer
	chunked.WriteString("POST /v1/clients/n1/domains/a.example HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
	for range 32 {
		fmt.Fprintf(&chunked, "%x\r\n%s\r\n", len(chunk), chunk)
	}
	chunked.WriteString("0\r\n\r\n")
	declared := append([]byte("POST /v1/clients/n1/domains/a.example HTTP/1.1\r\nHost: test\r\nContent-Length: 131072\r\n\r\n"), bytes.Repeat([]byte("x"), 128<<10)...)
	for _, c := range []struct {
		name   string
		req    []byte
		status int
		code   string
	}{
		{"20 KiB header", []byte("GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + strings.Repeat("a", 20<<10) + "\r\n\r\n"), http.StatusRequestHeaderFieldsTooLarge, "bad_request"},
		{"128 KiB chunked body", chunked.Bytes(), http.StatusRequestEntityTooLarge, "body_too_large"},
		{"128 KiB declared body", declared, http.StatusRequestEntityTooLarge, "body_too_large"},
	} {
		conn, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		go conn.Write(c.req)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var body map[string]string
		err = json.NewDecoder(resp.Body).Decode(&body)
		conn.Close()
		if err != nil || resp.StatusCode != c.status || body["code"] != c.code || body["error"] == "" {
			t.Errorf("%s: %d %v (%v), want %d %s", c.name, resp.StatusCode, body, err, c.status, c.code)
		}
	}
	// Nothing was allocated.
	if _, ok := svc.Get("n1", "a.example"); ok {
		t.Error("the refused chunked allocation left a mapping")
	}
}

// Whatever path fastRoute answers, net/http's mux routes to the same
// handler with the same wildcard values, and net/http takes it at all.
func FuzzFastRouteAgreesWithTheMux(f *testing.F) {
	for _, seed := range []string{
		"/v1/clients/n1/domains/example.com", "/v1/clients/n1/ips/10.0.0.1", "/v1/clients/a%2Fb/domains/x",
		"/v1/clients/n1/domains/a%zz", "/v1/clients/n1/domains/..", "/v1/clients//domains/x", "/v1/clients/n1/domains/x/",
		"/v1/clients/n1/./domains", "/v1/clients/%2e%2e/domains/x", "/v1/clients/n1/domains/%2F", "/v1/clients/a b/ips/c",
	} {
		f.Add(true, seed)
		f.Add(false, seed)
	}
	var route int
	var client, arg string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/clients/{client}/domains/{domain}", func(w http.ResponseWriter, r *http.Request) {
		route, client, arg = routeAlloc, r.PathValue("client"), r.PathValue("domain")
	})
	mux.HandleFunc("GET /v1/clients/{client}/ips/{ip}", func(w http.ResponseWriter, r *http.Request) {
		route, client, arg = routeLookup, r.PathValue("client"), r.PathValue("ip")
	})
	mux.HandleFunc("/", func(http.ResponseWriter, *http.Request) { route = routeNone })
	f.Fuzz(func(t *testing.T, post bool, rawPath string) {
		gotRoute, gotClient, gotArg := fastRoute(post, !post, []byte(rawPath))
		if gotRoute == routeNone {
			return // net/http answers it
		}
		u, err := url.ParseRequestURI(rawPath)
		if err != nil {
			t.Fatalf("fastRoute answers %q, which net/http refuses: %v", rawPath, err)
		}
		method := http.MethodGet
		if post {
			method = http.MethodPost
		}
		route, client, arg = -1, "", ""
		mux.ServeHTTP(httptest.NewRecorder(), &http.Request{Method: method, URL: u, RequestURI: rawPath, Header: http.Header{}, Host: "test"})
		if route != gotRoute || client != gotClient || arg != gotArg {
			t.Fatalf("%s %q: fastRoute %d %q %q, the mux %d %q %q", method, rawPath, gotRoute, gotClient, gotArg, route, client, arg)
		}
	})
}

// A write cut off by a restore is a 503 with Retry-After, like no_quorum, so
// clients and the CLI retry it.
func TestRestoreAbortIsRetryable503(t *testing.T) {
	a := &api{log: slog.New(slog.DiscardHandler)}
	rep := a.errorReply(pool.Errorf(pool.CodeAbortedByRestore, "cut off"))
	if rep.status != http.StatusServiceUnavailable || !rep.retryAfter {
		t.Fatalf("aborted_by_restore answered %d (Retry-After %v), want 503 with Retry-After", rep.status, rep.retryAfter)
	}
}

// TestMuxRequestsDoNotRunUnderTheRequestCtx: the mux's handlers must not get
// the fasthttp.RequestCtx as their context, since fasthttp reuses it once
// the handler returns while contexts derived from it read it later. The
// adaptor passes it; ownContext replaces it.
func TestMuxRequestsDoNotRunUnderTheRequestCtx(t *testing.T) {
	var got context.Context
	h := fasthttpadaptor.NewFastHTTPHandler(ownContext(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Context()
	})))
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/v1/pool")
	ctx.SetUserValue("probe", "the RequestCtx")
	h(&ctx)
	if got == nil {
		t.Fatal("the handler did not run")
	}
	if v := got.Value("probe"); v != nil {
		t.Fatalf("the handler's context reads the RequestCtx (%v)", v)
	}
	if got.Err() == nil {
		t.Fatal("the handler's context outlived the handler")
	}
}

package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/fakenode"
	"github.com/ippool/ippool/internal/service"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

func TestBoundsAre429(t *testing.T) {
	for _, c := range []pool.Code{pool.CodeQuotaExceeded, pool.CodeRateLimited} {
		if got := statusOf(c); got != http.StatusTooManyRequests {
			t.Errorf("%s: %d, want 429", c, got)
		}
	}
}

// startLimited serves a fresh service whose callers may write once every
// two seconds in bursts of 2, on the stack fast says.
func startLimited(t *testing.T, fast bool) (*service.Service, string) {
	t.Helper()
	svc := service.New(fakenode.New(t, "10.0.0.0/24", time.Hour), service.Options{MarkFlush: time.Hour, WriteRate: 0.5, WriteBurst: 2})
	t.Cleanup(svc.Close)
	log := slog.New(slog.DiscardHandler)
	if !fast {
		s := httptest.NewServer(Handler(svc, prometheus.NewRegistry(), log, Options{}))
		t.Cleanup(s.Close)
		return svc, s.Listener.Addr().String()
	}
	srv := NewServer(svc, prometheus.NewRegistry(), log, Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return svc, ln.Addr().String()
}

// TestWriteRateLimitOnBothStacks: past its burst a caller's writes get 429
// rate_limited with the Retry-After the limit names, on the fast path and
// the mux alike, with the same bytes; reads and answers from local state
// are not writes; each token has its own bucket once ACLs are on.
func TestWriteRateLimitOnBothStacks(t *testing.T) {
	type answer struct {
		status     int
		retryAfter string
		body       string
	}
	run := func(fast bool) []answer {
		_, addr := startLimited(t, fast)
		var out []answer
		for _, r := range []struct{ method, target string }{
			{"POST", "/v1/clients/n1/domains/a.example"},
			{"POST", "/v1/clients/n1/domains/b.example"},
			{"POST", "/v1/clients/n1/domains/a.example"}, // known: no write
			{"GET", "/v1/clients/n1/ips/10.0.0.0"},
			{"POST", "/v1/clients/n1/domains/c.example"},
			{"DELETE", "/v1/clients/n1/domains/a.example"},
			{"PUT", "/v1/pool"},
		} {
			resp, body := rawRequest(t, addr, r.method, r.target, nil)
			out = append(out, answer{resp.StatusCode, resp.Header.Get("Retry-After"), string(body)})
		}
		return out
	}
	mux, fast := run(false), run(true)
	want := []int{200, 200, 200, 200, 429, 429, 400}
	for i := range want {
		// (A lookup's last_used differs between the two runs.)
		if fast[i].status != mux[i].status || fast[i].retryAfter != mux[i].retryAfter || fast[i].status != 200 && fast[i].body != mux[i].body {
			t.Errorf("request %d: fast path %+v, net/http %+v", i, fast[i], mux[i])
		}
		if fast[i].status != want[i] {
			t.Errorf("request %d: %d %s, want %d", i, fast[i].status, fast[i].body, want[i])
		}
	}
	var e wire.Error
	if err := json.Unmarshal([]byte(fast[4].body), &e); err != nil || e.Code != "rate_limited" || fast[4].retryAfter != "2" ||
		!strings.Contains(e.Message, "source 127.0.0.1") {
		t.Errorf("refused write: %+v (%v), Retry-After %q", e, err, fast[4].retryAfter)
	}

	svc, addr := startLimited(t, true)
	ctx := context.Background()
	admin, _, err := svc.BootstrapACL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	alloc1, _, err := svc.CreateToken(ctx, acl.RoleAllocate, "1")
	if err != nil {
		t.Fatal(err)
	}
	alloc2, _, err := svc.CreateToken(ctx, acl.RoleAllocate, "2")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		token string
		n     int
		want  int
	}{{alloc1, 2, 200}, {alloc1, 1, 429}, {alloc2, 2, 200}, {alloc2, 1, 429}, {admin, 1, 200}} {
		for range tc.n {
			req, _ := http.NewRequest("POST", fmt.Sprintf("http://%s/v1/clients/n%d/domains/x.example", addr, time.Now().UnixNano()), nil)
			req.Header.Set("Authorization", "Bearer "+tc.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("token %.12s...: %d, want %d", tc.token, resp.StatusCode, tc.want)
			}
		}
	}
}

package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/fakenode"
	"github.com/ippool/ippool/internal/service"
)

// Both stacks refuse the same requests with the same status, the fast path
// included, and a restore's large body is refused to a caller who may not
// restore before fasthttp reads it.
func TestAccessControlOnBothStacks(t *testing.T) {
	svc := service.New(fakenode.New(t, "10.0.0.0/24", time.Hour), service.Options{MarkFlush: time.Hour})
	t.Cleanup(svc.Close)
	log := slog.New(slog.DiscardHandler)
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

	ctx := context.Background()
	admin, _, err := svc.BootstrapACL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	read, _, _ := svc.CreateToken(ctx, acl.RoleRead, "r")
	alloc, _, _ := svc.CreateToken(ctx, acl.RoleAllocate, "a")
	revoked, revokedTok, _ := svc.CreateToken(ctx, acl.RoleAdmin, "gone")
	if err := svc.RevokeToken(ctx, revokedTok.Accessor); err != nil {
		t.Fatal(err)
	}

	type req struct{ method, path string }
	allocReq := req{"POST", "/v1/clients/n1/domains/example.com"}
	lookupReq := req{"GET", "/v1/clients/n1/ips/10.0.0.0"}
	listReq := req{"GET", "/v1/clients/n1"}
	releaseReq := req{"DELETE", "/v1/clients/n1/domains/other.example"}
	cases := []struct {
		token string
		r     req
		want  int
	}{
		{"", allocReq, 401}, {"wrong", allocReq, 401}, {revoked, allocReq, 401}, {read, allocReq, 403}, {alloc, allocReq, 200}, {admin, allocReq, 200},
		{"", lookupReq, 401}, {read, lookupReq, 200},
		{"", listReq, 401}, {revoked, listReq, 401}, {read, listReq, 200},
		{alloc, releaseReq, 403}, {admin, releaseReq, 200},
		{"", req{"GET", "/healthz"}, 200},
		{"", req{"GET", "/v1/nothing"}, 401}, {read, req{"GET", "/v1/nothing"}, 404},
	}
	for _, addr := range []string{reference.Listener.Addr().String(), ln.Addr().String()} {
		for _, c := range cases {
			hr, _ := http.NewRequest(c.r.method, "http://"+addr+c.r.path, nil)
			if c.token != "" {
				hr.Header.Set("Authorization", "Bearer "+c.token)
			}
			resp, err := http.DefaultClient.Do(hr)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("%s: %s %s with token %.12q: %d %s, want %d", addr, c.r.method, c.r.path, c.token, resp.StatusCode, body, c.want)
			}
			if resp.StatusCode == 401 && resp.Header.Get("WWW-Authenticate") != bearerChallenge {
				t.Errorf("%s: a 401 without the bearer challenge", addr)
			}
		}
	}

	// A restore announcing 1 GiB from a read token: refused at once, its
	// body never read (fasthttp would otherwise allocate the declared size).
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "PUT /v1/snapshot HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", read, 1<<30)
	got, _ := io.ReadAll(c)
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 403")) {
		t.Fatalf("restore with a read token: %q", got)
	}
}

package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ippool/ippool/internal/fakenode"
	"github.com/ippool/ippool/internal/service"
)

// A restore streams on both stacks: a backup larger than what fasthttp
// reads ahead, sent with a length or chunked, is restored; one declared
// over MaxRestoreBytes is refused with 413 before a byte of it is sent,
// as is a chunked one once it passes the limit.
func TestRestoreStreamsOnBothStacks(t *testing.T) {
	svc := service.New(fakenode.New(t, "10.0.0.0/22", time.Hour), service.Options{MarkFlush: time.Hour})
	t.Cleanup(svc.Close)
	ctx := context.Background()
	admin, _, err := svc.BootstrapACL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if _, err := svc.IPForDomain(ctx, "c", fmt.Sprintf("d%d.example", i)); err != nil {
			t.Fatal(err)
		}
	}
	var backup bytes.Buffer
	if err := svc.Snapshot(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	if backup.Len() < 16<<10 {
		t.Fatalf("the backup takes %d bytes, too few to be streamed", backup.Len())
	}
	limit := int64(backup.Len() + 100)
	opts := Options{MaxRestoreBytes: limit}
	log := slog.New(slog.DiscardHandler)
	reference := httptest.NewServer(Handler(svc, prometheus.NewRegistry(), log, opts))
	defer reference.Close()
	fast := NewServer(svc, prometheus.NewRegistry(), log, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go fast.Serve(ln)
	defer fast.Shutdown()

	for _, addr := range []string{reference.Listener.Addr().String(), ln.Addr().String()} {
		for _, chunked := range []bool{false, true} {
			if _, err := svc.ReleaseClient(ctx, "c"); err != nil {
				t.Fatal(err)
			}
			var body io.Reader = bytes.NewReader(backup.Bytes())
			if chunked {
				body = io.MultiReader(body) // no length known: sent chunked
			}
			req, _ := http.NewRequest("PUT", "http://"+addr+"/v1/snapshot", body)
			req.Header.Set("Authorization", "Bearer "+admin)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(got), `"restored":true`) {
				t.Fatalf("%s, chunked %v: %d %s", addr, chunked, resp.StatusCode, got)
			}
			if ms, err := svc.Mappings(ctx, "c", true); err != nil || len(ms) != 1000 {
				t.Fatalf("%s, chunked %v: %d mappings after the restore (%v), want 1000", addr, chunked, len(ms), err)
			}
		}

		// Chunked past the limit.
		req, _ := http.NewRequest("PUT", "http://"+addr+"/v1/snapshot", io.MultiReader(bytes.NewReader(make([]byte, limit+1))))
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(got), "body_too_large") {
			t.Fatalf("%s: a chunked restore past the limit: %d %s", addr, resp.StatusCode, got)
		}
	}

	// Declared over the limit: refused with nothing sent (net/http, the
	// reference, waits for a body this small before it answers).
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "PUT /v1/snapshot HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", admin, limit+1)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("a restore declared over the limit: %v %v", resp, err)
	}
}
